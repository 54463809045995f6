"""Shared test helpers: where the shared traces live."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACE = ROOT.parent / "shared" / "traces" / "bitbrains-rnd-2013-07.csv.gz"


@pytest.fixture
def shared_trace() -> Path:
    """The month of real traces beside the repository (as laid for developers and CI)."""
    if not SHARED_TRACE.is_file():
        pytest.fail(f"the shared traces are missing at {SHARED_TRACE}")
    return SHARED_TRACE
