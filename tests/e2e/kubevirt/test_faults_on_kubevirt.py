"""Faults on KubeVirt's own controllers, with nothing lost and no wrong shrink: Prometheus stopped,
the operator killed right after its patch, another writer racing its patches."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from kubernetes import client

from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.kube import custom
from tests.e2e.kubevirt.conftest import (
    apply,
    condition,
    get,
    namespace,
    policy,
    running_vmi,
    spec_guest,
    vm_manifest,
    vm_story,
    wait_for,
)
from tests.e2e.kubevirt.handler import VirtHandler
from tests.e2e.kubevirt.rig import KubeVirtRig
from tests.e2e.prometheus import Prometheus
from tests.e2e.units import GIB


def started_vm(cp: ControlPlane, handler: VirtHandler, ns: str, app: str, **spec: object) -> None:
    """A policy and its VM, running, with 1Gi of demand (no change wanted)."""
    policy(cp, ns, app, **spec)
    handler.set_demand(ns, app, GIB)
    apply(cp, vm_manifest(app, ns, labels={"app": app}))
    running_vmi(cp, app, ns)


def carried_out(cp: ControlPlane, name: str, ns: str) -> bool:
    return bool(get(cp, "vmi", name, ns)["status"]["memory"].get("guestCurrent") == spec_guest(cp, name, ns))


def grows(cp: ControlPlane, name: str, ns: str) -> int:
    text = get(cp, "vm", name, ns)["metadata"].get("annotations", {}).get("dynamicmemory.io/recent-resizes", "")
    return sum(1 for item in text.split(",") if item.endswith(":Grow"))


def metrics_condition(cp: ControlPlane, name: str, ns: str) -> dict[str, Any] | None:
    return condition(get(cp, "dmp", name, ns), "MetricsAvailable")


def test_prometheus_stopped_shrinks_nothing_and_says_so(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                                        virt_handler: VirtHandler, kv_operator: Operator,
                                                        prometheus: Prometheus) -> None:
    ns = namespace(kv_cluster, "fault-blind")
    started_vm(kv_cluster, virt_handler, ns, "blind", scaleDown={"stabilizationWindow": "15s", "minHistory": "5s"})
    virt_handler.set_demand(ns, "blind", 3 * GIB)
    wait_for("a grow, carried out", lambda: spec_guest(kv_cluster, "blind", ns) != "2Gi"
             and carried_out(kv_cluster, "blind", ns), 120, detail=lambda: vm_story(kv_cluster, "blind", ns))
    grown = spec_guest(kv_cluster, "blind", ns)
    virt_handler.set_demand(ns, "blind", GIB // 2)  # demand falls, but nobody can see it
    prometheus.stop()
    try:
        cond = wait_for("MetricsAvailable=False", lambda: (c := metrics_condition(kv_cluster, "blind", ns))
                        and c["status"] == "False" and c, 60)
        assert cond["reason"] == "PrometheusUnreachable", cond
        assert "unknown demand never shrinks" in str(cond["message"])
        time.sleep(20)  # past the 15 s scale-down window
        assert spec_guest(kv_cluster, "blind", ns) == grown
    finally:
        prometheus.start()
    wait_for("recovery", lambda: (c := metrics_condition(kv_cluster, "blind", ns)) and c["status"] == "True", 90)


def test_the_operator_killed_after_its_patch_loses_and_repeats_nothing(
        kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "fault-crash")
    started_vm(kv_cluster, virt_handler, ns, "crash")
    # pages at 2Gi; one grow (2Gi + 10% + 1Gi = 3.2Gi) covers 2.5Gi and its buffer within a step
    virt_handler.set_demand(ns, "crash", 5 * GIB // 2)
    wait_for("the patch", lambda: spec_guest(kv_cluster, "crash", ns) != "2Gi", 60)
    kv_operator.kill()  # right after its patch, before the rest of its pass
    patched = spec_guest(kv_cluster, "crash", ns)
    kv_operator.start()
    wait_for("the migration", lambda: carried_out(kv_cluster, "crash", ns), 90,
             detail=lambda: vm_story(kv_cluster, "crash", ns))

    def passes() -> float:
        try:
            return kv_operator.metric("dynamic_memory_cycle_seconds_count")
        except OSError:  # still starting
            return 0.0
    wait_for("three passes of the new operator", lambda: passes() >= 3, 60)
    assert spec_guest(kv_cluster, "crash", ns) == patched
    assert grows(kv_cluster, "crash", ns) == 1


def test_conflicting_writes_are_retried_and_nothing_is_lost(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                                            kv_admin: client.ApiClient, virt_handler: VirtHandler,
                                                            kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "fault-race")
    started_vm(kv_cluster, virt_handler, ns, "race")
    mark = len(kv_operator.output())
    stop = threading.Event()
    touched = [0]

    def touch() -> None:  # somebody else keeps writing the VM: each write changes its resourceVersion
        api = custom(kv_admin)
        while not stop.is_set():
            touched[0] += 1
            api.patch_namespaced_custom_object("kubevirt.io", "v1", ns, "virtualmachines", "race",
                                               {"metadata": {"labels": {"touched": str(touched[0])}}})
            time.sleep(0.01)

    toucher = threading.Thread(target=touch, daemon=True)
    toucher.start()
    try:
        virt_handler.set_demand(ns, "race", 3 * GIB)
        wait_for("a conflict", lambda: "409 Conflict" in kv_operator.output()[mark:], 90)
    finally:
        stop.set()
        toucher.join(timeout=10)
    wait_for("the retried patch", lambda: spec_guest(kv_cluster, "race", ns) != "2Gi", 60,
             detail=lambda: vm_story(kv_cluster, "race", ns))
    final = get(kv_cluster, "vm", "race", ns)
    assert final["metadata"]["labels"]["touched"] == str(touched[0])  # the other writer's last word stands
    assert "dynamicmemory.io/reason" in final["metadata"]["annotations"]
    assert json.loads(final["metadata"]["annotations"]["dynamicmemory.io/original-memory"]) == {
        "guest": "2Gi", "maxGuest": "8Gi"}
