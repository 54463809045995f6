"""At steady state with 200 VMs, a pass costs a constant number of Prometheus queries and no LIST
calls, counted from the servers' own metrics (the stand-in paused, so only the operator talks)."""

from __future__ import annotations

import time
import urllib.request

from kubernetes import client

from dynamic_memory.quantity import GIB
from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import Cluster
from tests.e2e.kube import add_node
from tests.e2e.prometheus import Prometheus, metric_sum
from tests.e2e.standin.controller import KubeVirtStandIn
from tests.e2e.test_operator_e2e import create_vm, policy_status, setup_namespace, wait

VMS = 200


def test_steady_state_costs_constant_queries_and_no_lists(control_plane: Cluster, admin_api: client.ApiClient,
                                                          kubevirt: KubeVirtStandIn, operator: Operator,
                                                          prometheus: Prometheus) -> None:
    ns = "scale"
    for i in range(8):
        add_node(admin_api, f"big-{i}", "128Gi")
    setup_namespace(control_plane, ns)
    for i in range(VMS):
        kubevirt.set_demand(f"{ns}/vm-{i}", GIB // 2)  # 0.5Gi + 1Gi buffer fits the 2Gi boot size: no change
        create_vm(admin_api, ns, f"vm-{i}")
    wait(lambda: policy_status(admin_api, ns).get("running") == VMS, timeout_s=300, what="200 VMs running")
    wait(lambda: prometheus.query(f'count(kubevirt_vmi_memory_available_bytes{{namespace="{ns}"}}) == {VMS}'),
         what="200 VMs in Prometheus")
    time.sleep(6)  # one more pass with every VM known
    kubevirt.paused.set()
    try:
        def servers() -> tuple[str, str, float, float]:
            api = control_plane.get("/metrics", raw=True).decode()
            with urllib.request.urlopen(f"{prometheus.url}/metrics", timeout=5) as response:
                prom = response.read().decode()
            return (api, prom, operator.metric("dynamic_memory_cycle_seconds_count"),
                    operator.metric("dynamic_memory_prometheus_queries_total"))

        api0, prom0, passes0, sent0 = servers()
        time.sleep(21)
        api1, prom1, passes1, sent1 = servers()
    finally:
        kubevirt.paused.clear()
    passes = passes1 - passes0
    assert passes >= 3, f"only {passes} passes in 21 s"
    lists = metric_sum(api1, "apiserver_request_total", 'verb="LIST"') - metric_sum(api0, "apiserver_request_total",
                                                                            'verb="LIST"')
    vm_patches = (metric_sum(api1, "apiserver_request_total", 'verb="PATCH"', 'resource="virtualmachines"')
                  - metric_sum(api0, "apiserver_request_total", 'verb="PATCH"', 'resource="virtualmachines"'))
    queries = (metric_sum(prom1, "prometheus_http_requests_total", 'handler="/api/v1/query"')
               - metric_sum(prom0, "prometheus_http_requests_total", 'handler="/api/v1/query"'))
    per_pass = queries / passes
    print(f"{passes:.0f} passes: {lists:.0f} LIST, {vm_patches:.0f} VM PATCH, {queries:.0f} PromQL queries "
          f"({per_pass:.1f} a pass; the operator counted {(sent1 - sent0) / passes:.1f})")
    assert lists == 0
    assert vm_patches == 0  # no target changed, so nothing is written to any VM
    # Prometheus saw what the operator sent (a pass in flight at a sample may be counted on one side only)
    assert abs(queries - (sent1 - sent0)) <= per_pass
    assert per_pass <= 3 * 8 < VMS  # three per group of policies sharing settings, not one per VM
    interval_s = 5
    assert passes <= 21 / (interval_s - 0.5) + 1  # one pass over all policies per interval, not one per policy
