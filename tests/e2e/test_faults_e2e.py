"""Faults, with nothing lost and no wrong shrink: Prometheus stopped, the operator killed mid-cycle,
conflicting writes, failing migrations, a VM deleted while selected."""

from __future__ import annotations

import threading
import time

from kubernetes import client

from dynamic_memory.quantity import GIB, parse_quantity
from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import Cluster
from tests.e2e.kube import custom
from tests.e2e.prometheus import Prometheus
from tests.e2e.standin.controller import KubeVirtStandIn
from tests.e2e.test_operator_e2e import (
    KV,
    condition,
    create_vm,
    guest,
    policy_status,
    resizes,
    setup_namespace,
    vm,
    vmi,
    wait,
)


def settled(admin_api: client.ApiClient, ns: str, name: str = "db") -> bool:
    current = vmi(admin_api, ns, name)
    return current is not None and parse_quantity(current["status"]["memory"]["guestCurrent"]) == \
        guest(vm(admin_api, ns, name))


def reconciled(admin_api: client.ApiClient, ns: str) -> bool:
    return (condition(policy_status(admin_api, ns), "Ready") or {}).get("reason") == "Reconciled"


def decided_vm(control_plane: Cluster, admin_api: client.ApiClient, kubevirt: KubeVirtStandIn,
               ns: str) -> None:
    """A namespace with the default policy and one VM (demand 1Gi) the operator has decided on."""
    setup_namespace(control_plane, ns)
    kubevirt.set_demand(f"{ns}/db", GIB)
    create_vm(admin_api, ns, "db")
    wait(lambda: reconciled(admin_api, ns), what="a first pass")


def grows(admin_api: client.ApiClient, ns: str) -> int:
    return sum(1 for r in resizes(vm(admin_api, ns, "db")) if r.endswith("Grow"))


def test_prometheus_stopped_shrinks_nothing_and_says_so(control_plane: Cluster, admin_api: client.ApiClient,
                                                        kubevirt: KubeVirtStandIn, operator: Operator,
                                                        prometheus: Prometheus) -> None:
    ns = "blind"
    setup_namespace(control_plane, ns, scaleDown={"stabilizationWindow": "15s", "minHistory": "5s"})
    kubevirt.set_demand(f"{ns}/db", 3 * GIB)
    create_vm(admin_api, ns, "db")
    wait(lambda: guest(vm(admin_api, ns, "db")) > 2 * GIB and settled(admin_api, ns), what="a grow")
    grown = guest(vm(admin_api, ns, "db"))
    kubevirt.set_demand(f"{ns}/db", GIB // 2)  # demand falls, but nobody can see it
    prometheus.stop()
    try:
        wait(lambda: (condition(policy_status(admin_api, ns), "MetricsAvailable") or {}).get("status") == "False",
             what="MetricsAvailable=False")
        cond = condition(policy_status(admin_api, ns), "MetricsAvailable")
        assert cond is not None and cond["reason"] == "PrometheusUnreachable"
        assert "unknown demand never shrinks" in cond["message"]
        time.sleep(20)  # past the 15 s scale-down window
        assert guest(vm(admin_api, ns, "db")) == grown
    finally:
        prometheus.start()
    wait(lambda: (condition(policy_status(admin_api, ns), "MetricsAvailable") or {}).get("status") == "True",
         what="recovery")


def test_operator_killed_mid_cycle_loses_and_repeats_nothing(control_plane: Cluster,
                                                             admin_api: client.ApiClient,
                                                             kubevirt: KubeVirtStandIn, operator: Operator) -> None:
    ns = "crash"
    decided_vm(control_plane, admin_api, kubevirt, ns)
    # pages at 2Gi; one grow (2Gi + 10% + 1Gi = 3.2Gi) covers 2.5Gi + its buffer within a step
    kubevirt.set_demand(f"{ns}/db", 5 * GIB // 2)
    wait(lambda: guest(vm(admin_api, ns, "db")) > 2 * GIB, timeout_s=30, what="the patch")
    operator.kill()  # right after its patch, before the rest of its pass
    patched = guest(vm(admin_api, ns, "db"))
    operator.start()
    wait(lambda: settled(admin_api, ns), what="the migration")
    wait(lambda: passes(operator) >= 1, what="a pass of the new operator")
    time.sleep(6)
    assert guest(vm(admin_api, ns, "db")) == patched
    assert grows(admin_api, ns) == 1


def passes(operator: Operator) -> float:
    """Passes the running operator process made (its status writes only what changes)."""
    try:
        return operator.metric("dynamic_memory_cycle_seconds_count")
    except OSError:  # still starting
        return 0.0


def test_conflicting_writes_are_retried_and_nothing_is_lost(control_plane: Cluster,
                                                            admin_api: client.ApiClient,
                                                            kubevirt: KubeVirtStandIn, operator: Operator) -> None:
    ns = "race"
    decided_vm(control_plane, admin_api, kubevirt, ns)
    mark = len(operator.output())
    stop = threading.Event()
    touched = [0]

    def touch() -> None:  # somebody else keeps writing the VM: each write changes its resourceVersion
        api = custom(admin_api)
        while not stop.is_set():
            touched[0] += 1
            api.patch_namespaced_custom_object(*KV, ns, "virtualmachines", "db",
                                               {"metadata": {"labels": {"touched": str(touched[0])}}})
            time.sleep(0.01)

    toucher = threading.Thread(target=touch, daemon=True)
    toucher.start()
    try:
        kubevirt.set_demand(f"{ns}/db", 3 * GIB)
        wait(lambda: "409 Conflict" in operator.output()[mark:], timeout_s=60, what="a conflict")
    finally:
        stop.set()
        toucher.join(timeout=5)
    wait(lambda: guest(vm(admin_api, ns, "db")) > 2 * GIB, what="the retried patch")
    final = vm(admin_api, ns, "db")
    assert final["metadata"]["labels"]["touched"] == str(touched[0])  # the other writer's last word stands
    assert "dynamicmemory.io/reason" in final["metadata"]["annotations"]


def test_failing_migrations_are_shown_and_not_repatched(control_plane: Cluster, admin_api: client.ApiClient,
                                                        kubevirt: KubeVirtStandIn, operator: Operator) -> None:
    ns = "flaky"
    setup_namespace(control_plane, ns)
    kubevirt.failures[f"{ns}/db"] = 2
    kubevirt.set_demand(f"{ns}/db", 5 * GIB // 2)  # one grow covers it (see the test above)
    create_vm(admin_api, ns, "db")
    wait(lambda: guest(vm(admin_api, ns, "db")) > 2 * GIB, what="the patch")
    wait(lambda: "live migration failed" in (vm(admin_api, ns, "db")["metadata"].get("annotations") or {})
         .get("dynamicmemory.io/held", ""), what="the reason on the VM")
    wait(lambda: settled(admin_api, ns), timeout_s=60, what="KubeVirt's retries to succeed")
    wait(lambda: "dynamicmemory.io/held" not in vm(admin_api, ns, "db")["metadata"]["annotations"],
         what="the hold to be cleared")
    assert grows(admin_api, ns) == 1
    # the last change's explanation is kept (short of memory, or buffer shortfall if the fault rate was not in yet)
    assert "buffer (at least 1Gi)" in vm(admin_api, ns, "db")["metadata"]["annotations"]["dynamicmemory.io/reason"]
    assert any("migration failed" in line for line in kubevirt.log)


def test_a_vm_deleted_while_selected_causes_no_error_loop(control_plane: Cluster, admin_api: client.ApiClient,
                                                          kubevirt: KubeVirtStandIn, operator: Operator) -> None:
    ns = "gone"
    setup_namespace(control_plane, ns)
    kubevirt.set_demand(f"{ns}/db", GIB)
    create_vm(admin_api, ns, "db")
    wait(lambda: policy_status(admin_api, ns).get("running") == 1, what="the VM decided")
    mark = len(operator.output())
    custom(admin_api).delete_namespaced_custom_object(*KV, ns, "virtualmachines", "db")
    wait(lambda: policy_status(admin_api, ns).get("vms") == 0, what="the status to forget it")
    time.sleep(11)
    later = operator.output()[mark:]
    assert "Traceback" not in later and f"{ns}/db" not in later, later[-2000:]
    assert (condition(policy_status(admin_api, ns), "Ready") or {}).get("status") == "True"
