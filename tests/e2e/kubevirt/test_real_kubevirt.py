"""What only KubeVirt's own controllers can show: virt-api's refusals, virt-controller's
RestartRequired, and a grow carried out the way KubeVirt carries it out (the VMI's new guest,
HotMemoryChange, a VirtualMachineInstanceMigration, a target pod placed by the real scheduler on
another node, the VMI reporting its new size there)."""

from __future__ import annotations

import json
import time

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


def test_virt_api_refuses_a_guest_that_is_not_2mi_aligned(kv_cluster: ControlPlane, kv_rig: KubeVirtRig) -> None:
    ns = namespace(kv_cluster, "kv-refuse")
    apply(kv_cluster, vm_manifest("aligned", ns))
    out = kv_cluster.kubectl("patch", "vm", "aligned", "-n", ns, "--type=merge", "-p",
                             json.dumps({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "2047Mi"}}}}}}),
                             check=False)
    assert out.returncode != 0
    # virt-api's validating webhook (KubeVirt's own words; a 422 "The request is invalid")
    assert "The request is invalid: spec.template.spec.domain.memory.guest: Guest memory must be 2Mi aligned" \
        in out.stderr, out.stderr


def test_a_hand_made_patch_below_the_boot_size_gets_restart_required(
        kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler) -> None:
    ns = namespace(kv_cluster, "kv-floor")
    apply(kv_cluster, vm_manifest("floor", ns, guest="4Gi"))
    vmi = running_vmi(kv_cluster, "floor", ns)
    assert vmi["status"]["memory"]["guestAtBoot"] == "4Gi"
    kv_cluster.kubectl("patch", "vm", "floor", "-n", ns, "--type=merge", "-p",
                       json.dumps({"spec": {"template": {"spec": {"domain": {"memory": {"guest": "2Gi"}}}}}}))
    restart = wait_for("RestartRequired on the VM", lambda: condition(get(kv_cluster, "vm", "floor", ns),
                                                                      "RestartRequired"))
    assert restart["status"] == "True"


@pytest.mark.kubevirt_semantics
def test_a_grow_is_a_migration_to_another_node(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                               virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "kv-grow")
    policy(kv_cluster, ns, "grow")
    virt_handler.set_demand(ns, "grower", GIB)
    apply(kv_cluster, vm_manifest("grower", ns, labels={"app": "grow"}))
    before = running_vmi(kv_cluster, "grower", ns)
    source_node = before["status"]["nodeName"]
    virt_handler.settings.migration_s = 8.0  # long enough to see HotMemoryChange on a loaded machine
    # the guest runs short (it pages); one grow (2Gi + 10% + the 1Gi buffer doubled = 4.2Gi) covers 2.5Gi
    virt_handler.set_demand(ns, "grower", 5 * GIB // 2)

    def grown() -> str | None:
        guest = get(kv_cluster, "vm", "grower", ns)["spec"]["template"]["spec"]["domain"]["memory"]["guest"]
        return guest if parse_quantity(guest) > 2 * GIB else None
    wanted = wait_for("the operator's patch of the VM", grown, 60)
    # virt-controller hands the change to the VMI and marks it for a live migration
    wait_for("HotMemoryChange on the VMI", lambda: condition(get(kv_cluster, "vmi", "grower", ns), "HotMemoryChange"),
             30, 0.2, detail=lambda: vm_story(kv_cluster, "grower", ns))
    migrations = wait_for("the workload updater's migration", lambda: json.loads(kv_cluster.kubectl(
        "get", "vmim", "-n", ns, "-o", "json").stdout)["items"], 60)
    assert migrations[0]["spec"]["vmiName"] == "grower"

    def landed() -> dict[str, object] | None:
        vmi = get(kv_cluster, "vmi", "grower", ns)
        memory = vmi.get("status", {}).get("memory", {})
        return vmi if memory.get("guestCurrent") == wanted and not condition(vmi, "HotMemoryChange") else None
    after = wait_for("the VMI at its new size", landed, 90, detail=lambda: vm_story(kv_cluster, "grower", ns))
    status = after["status"]
    assert isinstance(status, dict)
    assert status["nodeName"] != source_node  # the target pod's anti-affinity: always another node
    assert status["memory"]["guestRequested"] == wanted == spec_guest(kv_cluster, "grower", ns)
    done = json.loads(kv_cluster.kubectl("get", "vmim", "-n", ns, "-o", "json").stdout)["items"]
    assert [m["status"]["phase"] for m in done] == ["Succeeded"]


@pytest.mark.kubevirt_semantics
def test_a_vm_pinned_to_its_node_is_held_with_its_reason_and_never_patched(
        kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "kv-pinned")
    policy(kv_cluster, ns, "pinned")
    virt_handler.set_demand(ns, "pinned", GIB)
    # pinned to one host: KubeVirt's migration target must go to another one, so it can go nowhere
    pinned = vm_manifest("pinned", ns, labels={"app": "pinned"})
    pinned["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "kv-node-1"}
    apply(kv_cluster, pinned)
    running_vmi(kv_cluster, "pinned", ns)
    virt_handler.set_demand(ns, "pinned", 3 * GIB)
    held = wait_for("the operator's word on the VM", lambda: get(kv_cluster, "vm", "pinned", ns)["metadata"].get(
        "annotations", {}).get("dynamicmemory.io/held"), 60, detail=lambda: vm_story(kv_cluster, "pinned", ns))
    assert "no other node it may run on" in held, held
    capacity = wait_for("CapacityLimited on the policy", lambda: (c := condition(get(
        kv_cluster, "dmp", "pinned", ns), "CapacityLimited")) and c["status"] == "True" and c, 30)
    assert capacity["reason"] == "NoLanding" and f"{ns}/pinned" in capacity["message"]
    time.sleep(10)  # five of the policy's intervals, with the guest still short of memory
    assert operator_patches(kv_cluster, ns, "pinned", resizes=True) == []
    assert len(operator_patches(kv_cluster, ns, "pinned")) == 1  # the hold, written once
    assert spec_guest(kv_cluster, "pinned", ns) == "2Gi"
    assert json.loads(kv_cluster.kubectl("get", "vmim", "-n", ns, "-o", "json").stdout)["items"] == []


def test_recommend_mode_on_real_kubevirt_changes_nothing(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                                         virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "kv-recommend")
    policy(kv_cluster, ns, "advice", mode="Recommend")
    virt_handler.set_demand(ns, "advice", 3 * GIB)
    apply(kv_cluster, vm_manifest("advice", ns, labels={"app": "advice"}))
    running_vmi(kv_cluster, "advice", ns)
    def advised() -> str | None:
        value = get(kv_cluster, "vm", "advice", ns)["metadata"].get("annotations", {}).get(
            "dynamicmemory.io/recommendation")
        return value if value and parse_quantity(value) > 3 * GIB else None
    wait_for("a recommendation above the demand", advised, 60)
    reason = get(kv_cluster, "vm", "advice", ns)["metadata"]["annotations"]["dynamicmemory.io/reason"]
    assert "buffer" in reason and "→" in reason, reason
    time.sleep(4)  # two more intervals
    assert spec_guest(kv_cluster, "advice", ns) == "2Gi"
    assert operator_patches(kv_cluster, ns, "advice", resizes=True) == []
    assert json.loads(kv_cluster.kubectl("get", "vmim", "-n", ns, "-o", "json").stdout)["items"] == []
    reasons = [e["reason"] for e in json.loads(kv_cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=advice", "-o", "json").stdout)["items"]]
    assert "Recommended" in reasons and "Resized" not in reasons, reasons


def test_falling_demand_shrinks_after_the_window_by_a_migration_and_never_below_boot(
        kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "kv-shrink")
    # two shrinks an hour: the first may keep the peak the guest showed while it paged during its
    # grow's migration (still in the 30 s window: 4.2Gi → 1.98Gi + 1Gi); the second reaches the floor,
    # with steps from 512Mi (that one is 1008Mi, under the default 1Gi)
    policy(kv_cluster, ns, "shrink", scaleDown={"stabilizationWindow": "30s", "minHistory": "10s", "maxPerHour": 2,
                                                "minStep": "512Mi"})
    virt_handler.set_demand(ns, "shrinker", GIB)
    apply(kv_cluster, vm_manifest("shrinker", ns, labels={"app": "shrink"}))
    running_vmi(kv_cluster, "shrinker", ns)
    virt_handler.set_demand(ns, "shrinker", 3 * GIB)

    def grown() -> str | None:
        guest = spec_guest(kv_cluster, "shrinker", ns)
        done = get(kv_cluster, "vmi", "shrinker", ns)["status"]["memory"].get("guestCurrent") == guest
        return guest if parse_quantity(guest) > 3 * GIB and done else None
    wait_for("a grow past the demand, carried out", grown, 120, detail=lambda: vm_story(kv_cluster, "shrinker", ns))
    virt_handler.set_demand(ns, "shrinker", GIB // 2)

    def resizes() -> list[tuple[float, str]]:
        text = get(kv_cluster, "vm", "shrinker", ns)["metadata"]["annotations"]["dynamicmemory.io/recent-resizes"]
        return [(float(t), kind) for t, _, kind in (i.partition(":") for i in text.split(",") if i)]
    wait_for("the shrinks down to the boot size", lambda: spec_guest(kv_cluster, "shrinker", ns) == "2Gi", 180,
             detail=lambda: vm_story(kv_cluster, "shrinker", ns))
    grows = [t for t, kind in resizes() if kind == "Grow"]
    shrinks = [t for t, kind in resizes() if kind == "Shrink"]
    assert 1 <= len(shrinks) <= 2 and min(shrinks) - max(grows) >= 30, (grows, shrinks)
    vmi = wait_for("the last shrink carried out", lambda: (v := get(kv_cluster, "vmi", "shrinker", ns))["status"][
        "memory"].get("guestCurrent") == "2Gi" and v, 90, detail=lambda: vm_story(kv_cluster, "shrinker", ns))
    assert vmi["status"]["memory"]["guestAtBoot"] == "2Gi"  # KubeVirt cannot unplug below it; we never asked
    assert condition(get(kv_cluster, "vm", "shrinker", ns), "RestartRequired") is None


def test_a_deleted_vm_leaves_the_operator_working(kv_cluster: ControlPlane, kv_rig: KubeVirtRig,
                                                  virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "kv-delete")
    policy(kv_cluster, ns, "gone")
    virt_handler.set_demand(ns, "gone", GIB)
    apply(kv_cluster, vm_manifest("gone", ns, labels={"app": "gone"}))
    running_vmi(kv_cluster, "gone", ns)
    wait_for("the VM decided", lambda: (get(kv_cluster, "dmp", "gone", ns).get("status") or {}).get("running") == 1,
             30)
    mark = len(kv_operator.output())
    kv_cluster.kubectl("delete", "vm", "gone", "-n", ns, "--wait=true", "--timeout=60s")
    wait_for("the VMI gone", lambda: not get(kv_cluster, "vmi", "gone", ns), 60)
    wait_for("the status to forget it", lambda: get(kv_cluster, "dmp", "gone", ns)["status"].get("vms") == 0, 30)
    passes = kv_operator.metric("dynamic_memory_cycle_seconds_count")
    wait_for("three more passes", lambda: kv_operator.metric("dynamic_memory_cycle_seconds_count") >= passes + 3, 30)
    later = kv_operator.output()[mark:]
    assert "Traceback" not in later and f"{ns}/gone" not in later, later[-2000:]
    assert (condition(get(kv_cluster, "dmp", "gone", ns), "Ready") or {}).get("status") == "True"


def test_a_failing_migration_is_retried_by_kubevirt_and_the_operator_waits(
        kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler, kv_operator: Operator) -> None:
    ns = namespace(kv_cluster, "kv-fail")
    policy(kv_cluster, ns, "fail")
    virt_handler.set_demand(ns, "flaky", GIB)
    apply(kv_cluster, vm_manifest("flaky", ns, labels={"app": "fail"}))
    running_vmi(kv_cluster, "flaky", ns)
    virt_handler.settings.fail_migrations.add(f"{ns}/flaky")
    virt_handler.set_demand(ns, "flaky", 5 * GIB // 2)  # short at 2Gi, not once grown

    def failed() -> list[str | None] | None:
        phases = [(m.get("status") or {}).get("phase") for m in json.loads(kv_cluster.kubectl(
            "get", "vmim", "-n", ns, "-o", "json").stdout)["items"]]
        return phases if "Failed" in phases else None
    wait_for("a failed migration", failed, 90, detail=lambda: vm_story(kv_cluster, "flaky", ns))
    held = wait_for("the operator's word on the VM", lambda: get(kv_cluster, "vm", "flaky", ns)["metadata"].get(
        "annotations", {}).get("dynamicmemory.io/held"), 60, detail=lambda: vm_story(kv_cluster, "flaky", ns))
    assert "live migration failed and KubeVirt retries it" in held, held
    assert condition(get(kv_cluster, "vmi", "flaky", ns), "HotMemoryChange") is not None  # KubeVirt still wants it
    wanted = spec_guest(kv_cluster, "flaky", ns)
    time.sleep(10)  # five intervals of a guest still short of memory, its resize failing
    # one resize, not re-sent while KubeVirt retries it (the operator's other writes set and clear the hold)
    annotations = get(kv_cluster, "vm", "flaky", ns)["metadata"]["annotations"]
    assert annotations["dynamicmemory.io/recent-resizes"].count("Grow") == 1, annotations
    assert spec_guest(kv_cluster, "flaky", ns) == wanted
    virt_handler.settings.fail_migrations.discard(f"{ns}/flaky")
    wait_for("KubeVirt's retry to succeed", lambda: get(kv_cluster, "vmi", "flaky", ns)["status"]["memory"].get(
        "guestCurrent") == wanted, 180, detail=lambda: vm_story(kv_cluster, "flaky", ns))
    wait_for("the hold cleared", lambda: "dynamicmemory.io/held" not in get(kv_cluster, "vm", "flaky", ns)[
        "metadata"].get("annotations", {}), 60)


def test_zz_the_operator_never_got_a_422_from_virt_api(kv_cluster: ControlPlane, kv_operator: Operator) -> None:
    """Run last in this file: every PATCH the operator sent during the tier, refused by none."""
    assert kv_cluster.audit_log is not None
    codes = []
    for line in kv_cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        if (event.get("stage") == "ResponseComplete" and event.get("verb") == "patch"
                and "kubevirt-dynamic-memory" in event.get("user", {}).get("username", "")
                and (event.get("objectRef") or {}).get("resource") == "virtualmachines"):
            codes.append(event.get("responseStatus", {}).get("code"))
    assert codes, "the operator patched no VM during the tier"
    assert 422 not in codes, codes
