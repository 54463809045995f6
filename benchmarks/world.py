"""The e2e control plane for the benchmarks that need one: the tests' own harness (real
kube-apiserver and etcd, Debian's Prometheus, the KubeVirt stand-in, the operator under
deploy/'s RBAC), started as plain objects rather than pytest fixtures."""

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

from tests.e2e.conftest import OPERATOR_NS, ROOT, STANDIN_CRDS, Operator, operator_identity
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.kube import add_node
from tests.e2e.prometheus import Prometheus, free_port
from tests.e2e.standin.controller import KubeVirtStandIn
from tests.e2e.standin.metrics import GuestMetrics
from tests.e2e.test_operator_e2e import apply_policy

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
    kubevirt: KubeVirtStandIn
    kubeconfig: Path
    operators: list[Operator] = field(default_factory=list)

    def operator(self, name: str) -> Operator:
        """A new operator process with its own log (stopped when the world ends)."""
        op = Operator(self.kubeconfig, self.prometheus.url, self.workdir / f"operator-{name}.log")
        self.operators.append(op)
        return op

    def add_nodes(self, prefix: str, count: int, memory: str) -> None:
        """`count` nodes of `memory` allocatable, room for 500 pods each."""
        for i in range(count):
            add_node(self.api, f"{prefix}-{i}", memory, pods="500")

    def policy(self, ns: str, interval: str, **spec: Any) -> None:
        """A namespace and its DynamicMemoryPolicy selecting app=db."""
        self.cp.ensure_namespace(ns)
        apply_policy(self.cp, ns, "dmp", interval=interval, **spec)

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
def world(workdir: Path, scrape_s: float = 1.0) -> Iterator[World]:
    """Start it all (a few seconds once the control plane is built), stop it all after."""
    (workdir / "cp").mkdir(parents=True, exist_ok=True)
    cp = ControlPlane(workdir / "cp")
    stack: list[Callable[[], None]] = [cp.stop]
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"), "-f", str(STANDIN_CRDS))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
        api = cast(client.ApiClient, config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(cp.kubeconfig)))
        metrics = GuestMetrics()
        metrics.serve(free_port())
        prom = Prometheus(workdir, [f"127.0.0.1:{metrics.port}"], scrape_s=scrape_s)
        stack.append(prom.stop)
        kubevirt = KubeVirtStandIn(api, metrics)
        stack.append(kubevirt.stop)
        kubeconfig = operator_identity(cp, workdir / "operator.kubeconfig")
        w = World(workdir, cp, api, metrics, prom, kubevirt, kubeconfig)
        stack.append(lambda: _stop_all(w.operators))
        yield w
    finally:
        for stop in reversed(stack):
            stop()
