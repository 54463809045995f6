"""At steady state with 200 VMs on KubeVirt's own controllers, a pass costs exactly three PromQL
queries (one policy: one query group) and no API request but its open watches, counted by the
servers themselves: Prometheus' request counter and the API server's audit log."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime

from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.kubevirt.conftest import condition, get, namespace, policy, vm_manifest, wait_for
from tests.e2e.kubevirt.handler import VirtHandler
from tests.e2e.kubevirt.rig import KubeVirtRig
from tests.e2e.prometheus import Prometheus, metric_sum
from tests.e2e.units import GIB

VMS = 200
QUERIES_PER_PASS = 3
"""The operator's documented cost: `latest`, `short` and `paging`, for each group of policies."""
OPERATOR_USER = "system:serviceaccount:kubevirt-dynamic-memory:kubevirt-dynamic-memory"


def operator_requests(cp: ControlPlane, since: float, until: float) -> list[tuple[str, str]]:
    """(verb, resource) of the operator's requests completed between `since` and `until`."""
    assert cp.audit_log is not None
    out = []
    for line in cp.audit_log.read_text().splitlines():
        event = json.loads(line)
        if event.get("stage") != "ResponseComplete" or event.get("user", {}).get("username") != OPERATOR_USER:
            continue
        at = datetime.fromisoformat(event["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        if since <= at <= until:
            out.append((event["verb"], (event.get("objectRef") or {}).get("resource", "")))
    return out


def after_a_pass(op: Operator, prometheus: Prometheus) -> tuple[float, float, float, float]:
    """(time, passes, queries the operator sent, queries Prometheus answered), sampled right after a
    pass ended, so that no pass is half counted (the next one is seconds away)."""
    before = op.metric("dynamic_memory_cycle_seconds_count")
    wait_for("a pass to end", lambda: op.metric("dynamic_memory_cycle_seconds_count") > before, 30, every_s=0.05)
    with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=5) as response:
        answered = metric_sum(response.read().decode(), "prometheus_http_requests_total", 'handler="/api/v1/query"')
    return (time.time(), op.metric("dynamic_memory_cycle_seconds_count"),
            op.metric("dynamic_memory_prometheus_queries_total"), answered)


def test_steady_state_costs_three_queries_a_pass_and_no_api_requests(
        kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler, kv_operator: Operator,
        prometheus: Prometheus) -> None:
    for i in range(8):
        kv_rig.add_node(f"big-{i}", "128Gi")
    ns = namespace(kv_cluster, "scale")
    policy(kv_cluster, ns, "scale", interval="5s")
    for i in range(VMS):
        virt_handler.set_demand(ns, f"vm-{i}", GIB // 2)  # 0.5Gi + the 1Gi buffer fits the 2Gi boot size: steady
    # 200 VMs through virt-api's webhooks: over 60 s once in CI, on a loaded 2-core machine
    kv_cluster.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        vm_manifest(f"vm-{i}", ns, labels={"app": "scale"}) for i in range(VMS)]}), timeout_s=300)
    wait_for("200 VMs decided", lambda: (get(kv_cluster, "dmp", "scale", ns).get("status") or {}).get("running")
             == VMS, 600, every_s=2)
    wait_for("200 VMs in Prometheus", lambda: prometheus.query(
        f'count(kubevirt_vmi_memory_available_bytes{{namespace="{ns}"}}) == {VMS}'), 60)
    wait_for("every VM with fresh metrics", lambda: f"{VMS} of {VMS} running VMs have fresh" in str(
        (condition(get(kv_cluster, "dmp", "scale", ns), "MetricsAvailable") or {}).get("message")), 60)
    t0, passes0, sent0, answered0 = after_a_pass(kv_operator, prometheus)
    time.sleep(21)
    t1, passes1, sent1, answered1 = after_a_pass(kv_operator, prometheus)
    passes, sent, answered = passes1 - passes0, sent1 - sent0, answered1 - answered0
    requests = operator_requests(kv_cluster, t0, t1)
    print(f"{passes:.0f} passes: {sent:.0f} PromQL queries sent, {answered:.0f} answered; "
          f"API requests {requests}")
    assert passes >= 4
    assert sent == QUERIES_PER_PASS * passes  # three for the group, not one per VM
    assert answered == sent  # Prometheus saw just what the operator counted
    assert {verb for verb, _ in requests} <= {"watch"}  # no LIST, no write: a steady fleet costs nothing
    assert passes <= 26 / (5 - 0.5) + 1  # one pass over all policies per interval
