"""The e2e cluster for the benchmarks that need one: the tests' own harness (real kube-apiserver
and etcd, KubeVirt v1.8.0's virt-api and virt-controller, kube-scheduler, kwok's nodes, our
virt-handler, Debian's Prometheus, the operator under deploy/'s RBAC), started as plain objects
rather than pytest fixtures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config

from tests.e2e.conftest import OPERATOR_NS, ROOT, Operator, operator_identity
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.kubevirt.conftest import get, namespace, policy, vm_manifest
from tests.e2e.kubevirt.handler import VirtHandler
from tests.e2e.kubevirt.rig import KubeVirtRig
from tests.e2e.prometheus import Prometheus, free_port

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the loopback API server's self-signed cert

OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NS}:kubevirt-dynamic-memory"


@dataclass
class World:
    """Everything running; `operator()` starts an operator process (stopped on exit)."""

    workdir: Path
    cp: ControlPlane
    api: client.ApiClient
    metrics: GuestMetrics
    prometheus: Prometheus
    rig: KubeVirtRig
    handler: VirtHandler
    kubeconfig: Path
    operators: list[Operator] = field(default_factory=list)

    def operator(self, name: str) -> Operator:
        """A new operator process with its own log (stopped when the world ends)."""
        op = Operator(self.kubeconfig, self.prometheus.url, self.workdir / f"operator-{name}.log")
        self.operators.append(op)
        return op

    def add_nodes(self, prefix: str, count: int, memory: str) -> None:
        """`count` kwok nodes of `memory` allocatable."""
        for i in range(count):
            self.rig.add_node(f"{prefix}-{i}", memory)

    def policy(self, ns: str, interval: str, **spec: Any) -> None:
        """A namespace and its DynamicMemoryPolicy `db`, selecting app=db (maximum 8Gi)."""
        namespace(self.cp, ns)
        policy(self.cp, ns, "db", interval=interval, **spec)

    def vms(self, ns: str, names: list[str], demand: int) -> None:
        """VMs of app=db (2Gi, maxGuest 8Gi) whose guests want `demand`, created in one request."""
        for name in names:
            self.handler.set_demand(ns, name, demand)
        self.cp.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            vm_manifest(name, ns, labels={"app": "db"}) for name in names]}))

    def running(self) -> int:
        """VMIs that our virt-handler has reported Running."""
        items = json.loads(self.cp.kubectl("get", "vmi", "-A", "-o", "json").stdout)["items"]
        return sum(1 for vmi in items if (vmi.get("status") or {}).get("phase") == "Running")

    def status(self, ns: str) -> dict[str, Any]:
        """The policy's status."""
        return dict(get(self.cp, "dmp", "db", ns).get("status") or {})

    def audit(self, since: float, user: str = OPERATOR_USER) -> list[dict[str, Any]]:
        """The API server's audit events of `user` completed after `since` (Unix seconds)."""
        assert self.cp.audit_log is not None
        out = []
        for line in self.cp.audit_log.read_text().splitlines():
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != user:
                continue
            at = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp()
            if at >= since:
                event["at"] = at
                out.append(event)
        return out


def wait(check: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.2) -> Any:
    """The first truthy result of `check`, or TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(poll_s)
    raise TimeoutError(f"timed out waiting for {what}")


def _stop_all(operators: list[Operator]) -> None:
    for op in operators:
        op.stop()


@contextmanager
def world(workdir: Path, scrape_s: float = 1.0, handler_period_s: float = 0.3) -> Iterator[World]:
    """Start it all (about 30 s once the binaries are built), stop it all after. `handler_period_s`:
    how often our virt-handler polls (a fleet of 1,000 VMs needs it slower on a 2-core machine)."""
    (workdir / "cp").mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(workdir / "cp")
    stack: list[Callable[[], None]] = [cp.stop]
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        api = cast(client.ApiClient, config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(cp.kubeconfig)))
        rig = KubeVirtRig(cp, workdir / "kubevirt")
        stack.append(rig.stop)
        metrics = GuestMetrics()
        metrics.serve(free_port())
        prom = Prometheus(workdir, [f"127.0.0.1:{metrics.port}"], scrape_s=scrape_s)
        stack.append(prom.stop)
        handler = VirtHandler(api, rig.handler_kubeconfig, metrics, period_s=handler_period_s)
        stack.append(handler.stop)
        kubeconfig = operator_identity(cp, workdir / "operator.kubeconfig")
        w = World(workdir, cp, api, metrics, prom, rig, handler, kubeconfig)
        stack.append(lambda: _stop_all(w.operators))
        yield w
    finally:
        for stop in reversed(stack):
            stop()
