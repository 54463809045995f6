"""Shared fixtures: the shared traces, and the real parts (Prometheus, the stand-in's guest metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.prometheus import Prometheus, free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED_TRACE = ROOT.parent / "shared" / "traces" / "bitbrains-rnd-2013-07.csv.gz"


@pytest.fixture
def shared_trace() -> Path:
    """The month of real traces beside the repository (as laid for developers and CI)."""
    if not SHARED_TRACE.is_file():
        pytest.fail(f"the shared traces are missing at {SHARED_TRACE}")
    return SHARED_TRACE


@pytest.fixture(scope="session")
def guest_metrics() -> GuestMetrics:
    """The stand-in's virt-handler metrics, served on loopback."""
    metrics = GuestMetrics()
    metrics.serve(free_port())
    return metrics


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, guest_metrics: GuestMetrics) -> Iterator[Prometheus]:
    """Debian's Prometheus, scraping the stand-in every second."""
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{guest_metrics.port}"])
    yield prom
    prom.stop()
