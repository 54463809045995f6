"""The end-to-end tier: a real control plane, and the operator as its own process with the identity
of the ServiceAccount bound to the RBAC in deploy/. KubeVirt's own controllers run in
tests/e2e/kubevirt/ (their fixtures are there)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from kubernetes import client, config

from tests.e2e.controlplane.cluster import Cluster, ControlPlane, ExistingCluster
from tests.e2e.image import check_preloaded, image_allocator
from tests.e2e.prometheus import end_process, free_port, metric_sum

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "kubevirt-dynamic-memory"


EXISTING = os.environ.get("DM_E2E_KUBECONFIG")
"""Run the e2e tier against this cluster (kind with real KubeVirt, say) instead of our own control
plane; the tests that drive guests through our virt-handler are then skipped."""


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real API server with our CRD applied by real kubectl: ours on loopback, or DM_E2E_KUBECONFIG's."""
    cp: Cluster = ExistingCluster(Path(EXISTING)) if EXISTING else ControlPlane(tmp_path_factory.mktemp("cp"))
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                   "crd/dynamicmemorypolicies.dynamicmemory.io")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def admin_api(control_plane: Cluster) -> client.ApiClient:
    """A kubernetes client with the admin token."""
    api = config.new_client_from_config(config_file=str(control_plane.kubeconfig))  # type: ignore[no-untyped-call]
    return cast(client.ApiClient, api)


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """See `operator_identity`."""
    return operator_identity(control_plane, tmp_path_factory.mktemp("operator") / "kubeconfig")


def operator_identity(cp: Cluster, kubeconfig: Path) -> Path:
    """deploy/manifests applied (the Deployment too: no kubelet runs it here); a kubeconfig with a
    token minted for the operator's ServiceAccount, so the operator runs under exactly that RBAC."""
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "deploy" / "manifests"))
    token = cp.kubectl("create", "token", "kubevirt-dynamic-memory", "-n", OPERATOR_NS, "--duration=4h").stdout.strip()
    return cp.write_kubeconfig(kubeconfig, token)


class Operator:
    """`dynamic-memory run` as its own process; its log is kept for the test's messages."""

    def __init__(self, kubeconfig: Path, prometheus_url: str, log: Path) -> None:
        self.log_path = log
        self.liveness, self.metrics_port = free_port(), free_port()
        self.allocator = image_allocator()  # as the image runs it (deploy/Dockerfile)
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1", **self.allocator}
        self.argv = [sys.executable, "-m", "dynamic_memory", "run", "--prometheus-url", prometheus_url,
                     "--metrics-port", str(self.metrics_port),
                     "--liveness", f"http://127.0.0.1:{self.liveness}/healthz", "--max-in-flight", "4"]
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=self.log_path.open("a"),
                                        stderr=subprocess.STDOUT)
        time.sleep(1)
        if self.process.poll() is None:
            try:
                check_preloaded(self.process.pid, self.allocator)
            except RuntimeError:
                self.kill()
                raise

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies under the operator."""
        self.process.kill()
        self.process.wait(timeout=10)

    def metric(self, name: str) -> float:
        """A sample of the operator's own /metrics (summed over labels)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        return metric_sum(text, name)

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        end_process(self.process, 15)
