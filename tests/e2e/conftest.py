"""The end-to-end tier's control plane: etcd and kube-apiserver built from their Go modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.controlplane.cluster import ControlPlane

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real API server with our CRD applied by real kubectl."""
    cp = ControlPlane(tmp_path_factory.mktemp("controlplane"))
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   "crd/dynamicmemorypolicies.dynamicmemory.io")
        yield cp
    finally:
        cp.stop()
