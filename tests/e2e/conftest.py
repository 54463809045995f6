"""Real parts for the end-to-end tier: a Prometheus scraping the stand-in's guest metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.prometheus import Prometheus, free_port
from tests.e2e.standin.metrics import GuestMetrics


@pytest.fixture(scope="session")
def guest_metrics() -> GuestMetrics:
    """The stand-in's virt-handler metrics, served on loopback."""
    metrics = GuestMetrics()
    metrics.port = free_port()  # type: ignore[attr-defined]
    metrics.serve(metrics.port)  # type: ignore[attr-defined]
    return metrics


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory, guest_metrics: GuestMetrics) -> Iterator[Prometheus]:
    """Debian's Prometheus, scraping the stand-in every second."""
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{guest_metrics.port}"])  # type: ignore[attr-defined]
    yield prom
    prom.stop()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch folder."""
    return tmp_path
