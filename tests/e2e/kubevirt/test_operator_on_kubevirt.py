"""The operator's everyday work on KubeVirt's own controllers: a demand spike grows the VM and says
why (annotations, an Event, the policy's status); when two VMs want the one landing place the
pool has, the heavier policy's VM gets it and the other is held with its reason."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import ControlPlane
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
    ready = wait_for("a first pass", lambda: (c := condition(get(kv_cluster, "dmp", "spike", ns), "Ready"))
                     and c["reason"] == "Reconciled" and c, 60)
    assert "1 running of 1 selected VMs decided" in ready["message"]
    assert spec_guest(kv_cluster, "db", ns) == "2Gi"  # 1Gi demand + 1Gi buffer fits in 2Gi: no change

    virt_handler.set_demand(ns, "db", 3 * GIB)  # more than it has: the guest pages
    wait_for("the grow", lambda: spec_guest(kv_cluster, "db", ns) != "2Gi", 60,
             detail=lambda: vm_story(kv_cluster, "db", ns))
    grown = spec_guest(kv_cluster, "db", ns)
    wait_for("the migration", lambda: get(kv_cluster, "vmi", "db", ns)["status"]["memory"].get("guestCurrent")
             == grown, 90, detail=lambda: vm_story(kv_cluster, "db", ns))
    annotations = get(kv_cluster, "vm", "db", ns)["metadata"]["annotations"]
    assert "guest short of memory" in annotations["dynamicmemory.io/reason"]
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
    # the pool's second node: after the operator's 1Gi reserve, room for one grown pod (3.2Gi + overhead)
    kv_rig.add_node("pool-small", "5Gi", extra_labels=pool)
    for app in ("gold", "bronze"):  # both short of memory at once; one grow covers each (2.5 < 3.2 - buffer)
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
