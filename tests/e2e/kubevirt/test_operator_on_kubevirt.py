"""The operator's everyday work on KubeVirt's own controllers, on one cluster: a demand spike grows
the VM and says why; when two VMs want the one landing place the pool has, the heavier policy's VM
gets it; faults lose nothing and shrink nothing wrongly (Prometheus stopped, the operator killed
after its patch, another writer racing its patches); and the operator's ClusterRole holds nothing
it does not use (every (group, resource, verb) granted appears in the audit log as its call)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.kube import custom
from tests.e2e.kubevirt.conftest import (
    apply,
    condition,
    get,
    namespace,
    operator_patches,
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
from tests.e2e.units import GIB, parse_quantity


def events(cp: ControlPlane, ns: str, name: str) -> list[dict[str, Any]]:
    out = cp.kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return list(json.loads(out.stdout)["items"])


def test_a_demand_spike_grows_the_vm_and_says_why(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                                  virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "op-spike")
    policy(kv_cluster, ns, "spike")
    virt_handler.set_demand(ns, "db", GIB)
    apply(kv_cluster, vm_manifest("db", ns, labels={"app": "spike"}))
    running_vmi(kv_cluster, "db", ns)
    # the operator's watch of VMIs may see the VM running a pass or two after it does
    wait_for("a pass that decided the running VM", lambda: (c := condition(get(kv_cluster, "dmp", "spike", ns),
             "Ready")) and c["reason"] == "Reconciled" and "1 running of 1 selected VMs decided" in c["message"], 60,
             detail=lambda: vm_story(kv_cluster, "db", ns))
    assert spec_guest(kv_cluster, "db", ns) == "2Gi"  # 1Gi demand + 1Gi buffer fits in 2Gi: no change

    # more than it has: the guest pages; one grow (to 2Gi + 10% + the 1Gi buffer doubled, as a paging guest's
    # demand above its size is unseen; 2Gi + 1Gi if a pass sees the use before the paging) covers 2.5Gi
    virt_handler.set_demand(ns, "db", 5 * GIB // 2)
    wait_for("the grow", lambda: spec_guest(kv_cluster, "db", ns) != "2Gi", 60,
             detail=lambda: vm_story(kv_cluster, "db", ns))
    grown = spec_guest(kv_cluster, "db", ns)
    wait_for("the migration", lambda: get(kv_cluster, "vmi", "db", ns)["status"]["memory"].get("guestCurrent")
             == grown, 90, detail=lambda: vm_story(kv_cluster, "db", ns))
    annotations = get(kv_cluster, "vm", "db", ns)["metadata"]["annotations"]
    assert re.search(r"\+ 20% buffer (×2 \(paging: demand above its size is unseen\) \(at least 2Gi\)|"
                     r"\(at least 1Gi\)) →", annotations["dynamicmemory.io/reason"]), annotations
    assert annotations["dynamicmemory.io/target"] == grown
    resized = [e for e in events(kv_cluster, ns, "db") if e["reason"] == "Resized"]
    assert len(resized) == 1 and resized[0]["message"].startswith("Grow 2Gi → "), resized
    assert "expected to land on kv-node-" in resized[0]["message"]
    status = wait_for("the status to list the VM", lambda: (s := get(kv_cluster, "dmp", "spike", ns).get("status"))
                      and s.get("pressured") and s, 30)
    assert (status["vms"], status["running"], status["pressured"][0]["name"]) == (1, 1, "db")


@pytest.mark.kubevirt_semantics
def test_the_heavier_policy_gets_the_one_landing_place(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                                       virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "op-weights")
    pool = {"pool": "weights"}
    kv_rig.add_node("pool-big", "12Gi", extra_labels=pool)
    policy(kv_cluster, ns, "gold", weight=9000)
    policy(kv_cluster, ns, "bronze", weight=1000)
    for app in ("gold", "bronze"):
        virt_handler.set_demand(ns, app, GIB)
        vm = vm_manifest(app, ns, labels={"app": app})
        vm["spec"]["template"]["spec"]["nodeSelector"] = pool
        apply(kv_cluster, vm)
    for app in ("gold", "bronze"):
        assert running_vmi(kv_cluster, app, ns)["status"]["nodeName"] == "pool-big"
    # the pool's second node: after the operator's 1Gi reserve, room for one grown pod (4.2Gi + overhead)
    kv_rig.add_node("pool-small", "6Gi", extra_labels=pool)
    for app in ("gold", "bronze"):  # both short of memory at once; one grow covers each (2.5 < 4.2 - buffer)
        virt_handler.set_demand(ns, app, 5 * GIB // 2)
    wait_for("gold grown on the small node", lambda: (v := get(kv_cluster, "vmi", "gold", ns))["status"][
        "nodeName"] == "pool-small" and parse_quantity(v["status"]["memory"]["guestCurrent"]) > 2 * GIB, 90,
        detail=lambda: vm_story(kv_cluster, "gold", ns) + "\n" + vm_story(kv_cluster, "bronze", ns))
    limited = wait_for("CapacityLimited on bronze's policy", lambda: (c := condition(get(
        kv_cluster, "dmp", "bronze", ns), "CapacityLimited")) and c["status"] == "True" and c, 30)
    assert limited["reason"] == "NoRoom" and f"{ns}/bronze: no other node has room" in limited["message"], limited
    time.sleep(6)  # three more intervals of a bronze guest short of memory
    assert operator_patches(kv_cluster, ns, "bronze", resizes=True) == []
    assert spec_guest(kv_cluster, "bronze", ns) == "2Gi"
    assert "no other node has room" in get(kv_cluster, "vm", "bronze", ns)["metadata"]["annotations"][
        "dynamicmemory.io/held"]
    gold = condition(get(kv_cluster, "dmp", "gold", ns), "CapacityLimited")
    assert gold is not None and gold["status"] == "False"


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
    # a guest's demand shows only up to its size, so the first grow may see part of it and a second
    # follow (seen: 2Gi → 3056Mi on 1.98Gi, then → 5088Mi on 2.97Gi): wait for a size that holds
    # the whole 3Gi plus the 1Gi minimum buffer
    wait_for("a grow to 4Gi or more, carried out", lambda: parse_quantity(spec_guest(kv_cluster, "blind", ns))
             >= 4 * GIB and carried_out(kv_cluster, "blind", ns), 120, detail=lambda: vm_story(kv_cluster, "blind", ns))
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
    # pages at 2Gi; one grow (2Gi + 10% + the 1Gi buffer doubled = 4.2Gi) covers 2.5Gi and its buffer
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


ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "system:serviceaccount:kubevirt-dynamic-memory:kubevirt-dynamic-memory"


def granted() -> set[tuple[str, str, str]]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "manifests" / "operator.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def used(audit_log: Path) -> set[tuple[str, str, str]]:
    out = set()
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event["user"]["username"] != ACCOUNT or not ref.get("resource") or event["responseStatus"]["code"] >= 400:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return out


def test_every_granted_permission_is_used(kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler,
                                          kv_operator: Operator) -> None:
    assert kv_cluster.audit_log is not None
    ns = namespace(kv_cluster, "rbac")
    policy(kv_cluster, ns, "rbac")
    virt_handler.set_demand(ns, "db", 3 * GIB)
    apply(kv_cluster, vm_manifest("db", ns, labels={"app": "rbac"}))
    wait_for("a resize by the operator", lambda: spec_guest(kv_cluster, "db", ns) != "2Gi", 120,
             detail=lambda: vm_story(kv_cluster, "db", ns))
    time.sleep(2)  # the audit backend writes in batches
    unused = granted() - used(kv_cluster.audit_log)
    assert not unused, f"granted but never used by the operator: {sorted(unused)}"
