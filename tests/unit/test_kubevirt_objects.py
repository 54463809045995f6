"""Reading KubeVirt objects into the model, and the patches that act on them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from dynamic_memory.actuators.kubevirt import (
    ORIGINAL_MEMORY,
    RECOMMENDATION,
    TARGET,
    boot_patch,
    recommend_patch,
    resize_patch,
)
from dynamic_memory.model import Action, Blocker, Decision, DemandSignal, PolicyParams, Why
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.sources.kubevirt import (
    LAST_APPLIED,
    LAST_GROW,
    RESIZES,
    VM_FIELDS,
    VMI_FIELDS,
    balloon_disabled,
    project,
    vm_state,
)

NOW = 1_800_000_000.0


def vm(guest: str = "4Gi", annotations: dict[str, str] | None = None, conditions: list[dict[str, Any]] | None = None,
       **domain: Any) -> dict[str, Any]:
    return {"metadata": {"name": "db", "namespace": "prod", "resourceVersion": "42", "annotations": annotations or {}},
            "spec": {"template": {"spec": {"domain": {"memory": {"guest": guest}, **domain}}}},
            "status": {"conditions": conditions or []}}


def vmi(current: str = "4Gi", boot: str = "2Gi", requested: str | None = None, conditions: list[dict[str, Any]] | None
        = None, phase: str = "Running", migration: dict[str, Any] | None = None) -> dict[str, Any]:
    memory = {"guestAtBoot": boot, "guestCurrent": current, "memoryOverhead": "300Mi"}
    if requested:
        memory["guestRequested"] = requested
    migratable = [{"type": "LiveMigratable", "status": "True"}]
    status: dict[str, Any] = {"phase": phase, "nodeName": "node-1", "memory": memory,
                              "conditions": migratable if conditions is None else conditions}
    if migration:
        status["migrationState"] = migration
    return {"metadata": {"name": "db", "namespace": "prod"},
            "spec": {"domain": {"memory": {"guest": current, "maxGuest": "16Gi"}}}, "status": status}


def test_running_vm_reads_kubevirt_memory_status() -> None:
    state = vm_state(vm(annotations={LAST_GROW: "2027-01-15T08:00:00Z",
                                     RESIZES: f"{int(NOW - 100)}:Grow,{int(NOW - 4000)}:Shrink,junk"}), vmi(), NOW)
    assert state is not None
    assert (state.key, state.node, state.assigned, state.guest_at_boot, state.max_guest) == \
        ("prod/db", "node-1", 4 * GIB, 2 * GIB, 16 * GIB)
    assert state.overhead == 300 * MIB  # status.memoryOverhead, when the alpha gate fills it and no pod is known
    assert (state.grows_last_hour, state.shrinks_last_hour) == (1, 0)
    assert state.last_grow == datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()
    assert state.blocked is None


MIGRATABLE = {"type": "LiveMigratable", "status": "True"}


BUSY: list[tuple[dict[str, Any], dict[str, Any], Blocker, str]] = [
    ({"conditions": [{"type": "RestartRequired", "status": "True", "message": "lower than boot"}]}, {},
     Blocker.RESTART_REQUIRED, "lower than boot"),
    ({}, {"conditions": [{"type": "LiveMigratable", "status": "False", "message": "has a local disk"}]},
     Blocker.NOT_MIGRATABLE, "has a local disk"),
    ({}, {"conditions": []}, Blocker.NOT_MIGRATABLE, "no LiveMigratable"),  # KubeVirt needs it True
    ({}, {"conditions": [MIGRATABLE, {"type": "HotMemoryChange", "status": "True"}]},
     Blocker.HOTPLUG_IN_PROGRESS, ""),
    ({}, {"migration": {"startTimestamp": "2027-01-15T08:00:00Z"}}, Blocker.MIGRATING, ""),
    ({}, {"requested": "6Gi"}, Blocker.CHANGE_PENDING, "guestRequested 6Gi"),
    ({"guest": "6Gi"}, {}, Blocker.CHANGE_PENDING, "spec guest 6Gi"),
]


@pytest.mark.parametrize(("vm_kw", "vmi_kw", "blocker", "detail"), BUSY)
def test_busy_vms_are_blocked_with_a_reason(vm_kw: dict[str, Any], vmi_kw: dict[str, Any], blocker: Blocker,
                                            detail: str) -> None:
    state = vm_state(vm(**vm_kw), vmi(**vmi_kw), NOW)
    assert state is not None and state.blocked is blocker and detail in state.blocked_detail
    assert not blocker.lasting


def test_a_pending_migration_object_blocks() -> None:
    state = vm_state(vm(), vmi(), NOW, migrating=True)
    assert state is not None and state.blocked is Blocker.MIGRATING


SHAPES: list[tuple[dict[str, Any], dict[str, Any], Blocker]] = [
    ({"resources": {"requests": {"memory": "4Gi"}}}, {}, Blocker.MEMORY_REQUESTS),
    ({"resources": {"limits": {"memory": "8Gi"}}}, {}, Blocker.MEMORY_REQUESTS),
    ({}, {"cpu": {"realtime": {}}}, Blocker.UNSUPPORTED),
    ({}, {"cpu": {"numa": {"guestMappingPassthrough": {}}}}, Blocker.UNSUPPORTED),
    ({}, {"launchSecurity": {"sev": {}}}, Blocker.UNSUPPORTED),
    ({}, {"memory": {"guest": "4Gi"}}, Blocker.NO_MAX_GUEST),
]


@pytest.mark.parametrize(("vm_kw", "vmi_domain", "blocker"), SHAPES)
def test_vms_kubevirt_cannot_hotplug_are_never_resizable(vm_kw: dict[str, Any], vmi_domain: dict[str, Any],
                                                          blocker: Blocker) -> None:
    instance = vmi()
    instance["spec"]["domain"].update(vmi_domain)
    state = vm_state(vm(**vm_kw), instance, NOW)
    assert state is not None and state.blocked is blocker and blocker.lasting


def test_instancetype_and_other_architectures_are_not_hotpluggable() -> None:
    typed = vm()
    typed["spec"]["instancetype"] = {"name": "u1.medium"}
    arm = vmi()
    arm["spec"]["architecture"] = "arm64"
    assert vm_state(typed, vmi(), NOW).blocked is Blocker.INSTANCETYPE  # type: ignore[union-attr]
    assert vm_state(vm(), arm, NOW).blocked is Blocker.UNSUPPORTED  # type: ignore[union-attr]


def test_a_partial_unplug_does_not_block_and_is_reported() -> None:
    state = vm_state(vm(guest="4Gi"), vmi(current="6Gi", requested="4Gi"), NOW)
    assert state is not None and state.blocked is None
    assert state.assigned == 4 * GIB and state.unplug_gap == 2 * GIB


def test_a_plug_that_stopped_short_is_reported_once_the_change_is_done() -> None:
    done = vm_state(vm(guest="4Gi"), vmi(current="3Gi", requested="4Gi"), NOW)
    assert done is not None and done.blocked is None
    assert done.assigned == 4 * GIB and done.plug_gap == GIB and done.unplug_gap == 0
    under_way = vmi(current="3Gi", requested="4Gi", conditions=[{"type": "LiveMigratable", "status": "True"},
                                                                 {"type": "HotMemoryChange", "status": "True"}])
    settling = vm_state(vm(guest="4Gi"), under_way, NOW)
    assert settling is not None and settling.blocked is not None and settling.plug_gap == 0


def test_overhead_is_the_launcher_pod_request_minus_the_guest() -> None:
    state = vm_state(vm(), vmi(), NOW, pod_request=4 * GIB + 268 * MIB)
    assert state is not None and state.overhead == 268 * MIB


def test_1gi_hugepages_align_to_1gi() -> None:
    instance = vmi()
    instance["spec"]["domain"]["memory"]["hugepages"] = {"pageSize": "1Gi"}
    state = vm_state(vm(), instance, NOW)
    assert state is not None and state.alignment == GIB


def test_a_settling_vm_counts_at_the_larger_size() -> None:
    hotplugging = vmi(current="4Gi", requested="6Gi",
                      conditions=[MIGRATABLE, {"type": "HotMemoryChange", "status": "True"}])
    state = vm_state(vm(guest="6Gi"), hotplugging, NOW)
    assert state is not None and state.assigned == 6 * GIB


def test_finished_migration_does_not_block() -> None:
    done = {"startTimestamp": "2027-01-15T08:00:00Z", "completed": True}
    state = vm_state(vm(), vmi(migration=done), NOW)
    assert state is not None and state.blocked is None


@pytest.mark.parametrize("phase", ["Pending", "Scheduling", "Succeeded", "Failed"])
def test_vms_not_running_are_not_decided(phase: str) -> None:
    assert vm_state(vm(), vmi(phase=phase), NOW) is None


def test_balloon_switched_off_is_seen() -> None:
    assert balloon_disabled(vm(devices={"autoattachMemBalloon": False}))
    assert not balloon_disabled(vm(devices={}))


def _with_bulk(obj: dict[str, Any], bulk: dict[str, Any]) -> dict[str, Any]:
    """`obj` with `bulk`'s fields added where it has none (nested dicts merged)."""
    out = dict(obj)
    for key, value in bulk.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _with_bulk(out[key], value)
        else:
            out.setdefault(key, value)
    return out


_DISK = {"name": "rootdisk", "disk": {"bus": "virtio"}}
VM_BULK = {
    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
    "metadata": {"uid": "1f6c", "generation": 3, "creationTimestamp": "2027-01-15T08:00:00Z",
                 "finalizers": ["kubevirt.io/virtualMachineControllerFinalize"],
                 "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}] * 5,
                 "annotations": {LAST_APPLIED: json.dumps({"spec": {"template": {"spec": {"volumes": []}}}})}},
    "spec": {"runStrategy": "Always", "dataVolumeTemplates": [{"metadata": {"name": "root"}, "spec": {}}],
             "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                 "volumes": [{"name": "rootdisk", "dataVolume": {"name": "root"}}],
                 "networks": [{"name": "default", "pod": {}}],
                 "domain": {"devices": {"disks": [_DISK], "interfaces": [{"name": "default", "masquerade": {}}]},
                            "firmware": {"uuid": "5d30"}, "features": {"acpi": {}}, "machine": {"type": "q35"}}}}},
    "status": {"printableStatus": "Running", "created": True, "ready": True,
               "volumeSnapshotStatuses": [{"name": "rootdisk", "enabled": True}]},
}
VMI_BULK = {
    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
    "metadata": {"uid": "77aa", "labels": {"kubevirt.io/nodeName": "node-1"},
                 "managedFields": [{"manager": "virt-handler", "fieldsV1": {"f:status": {}}}] * 5},
    "spec": {"volumes": [{"name": "rootdisk", "dataVolume": {"name": "root"}}],
             "domain": {"devices": {"disks": [_DISK]}, "firmware": {"uuid": "5d30", "serial": "e4a1"},
                        "resources": {"requests": {"memory": "2Gi"}}, "machine": {"type": "q35"}}},
    "status": {"interfaces": [{"name": "default", "ipAddress": "10.244.0.12"}], "guestOSInfo": {"id": "fedora"},
               "volumeStatus": [{"name": "rootdisk", "target": "vda"}], "activePods": {"a1": "node-1"},
               "currentCPUTopology": {"cores": 1}, "launcherContainerImageVersion": "quay.io/kubevirt/virt-launcher"},
}
"""Fields KubeVirt v1.8.0 and kubectl write that the operator never reads (a VMI's own requests included:
the launcher pod's request is the truth)."""


def _cases() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every VM and VMI the tests above read."""
    cases = [(vm(**vm_kw), vmi(**vmi_kw)) for vm_kw, vmi_kw, _, _ in BUSY]
    for vm_kw, vmi_domain, _ in SHAPES:
        instance = vmi()
        instance["spec"]["domain"].update(vmi_domain)
        cases.append((vm(**vm_kw), instance))
    typed, arm, huge = vm(), vmi(), vmi()
    typed["spec"]["instancetype"] = {"name": "u1.medium"}
    arm["spec"]["architecture"] = "arm64"
    huge["spec"]["domain"]["memory"]["hugepages"] = {"pageSize": "1Gi"}
    cases += [(typed, vmi()), (vm(), arm), (vm(), huge), (vm(guest="4Gi"), vmi(current="6Gi", requested="4Gi")),
              (vm(guest="4Gi"), vmi(current="3Gi", requested="4Gi")),
              (vm(devices={"autoattachMemBalloon": False}), vmi()),
              (vm(annotations={LAST_GROW: "2027-01-15T08:00:00Z", RESIZES: f"{int(NOW - 100)}:Grow"}), vmi()),
              (vm(), vmi(migration={"startTimestamp": "2027-01-15T08:00:00Z", "completed": True,
                                    "endTimestamp": "2027-01-15T08:00:09Z"})), (vm(), vmi(phase="Scheduling"))]
    return cases


@pytest.mark.parametrize(("whole_vm", "whole_vmi"), [(_with_bulk(a, VM_BULK), _with_bulk(b, VMI_BULK))
                                                      for a, b in _cases()])
def test_the_watch_caches_keep_all_the_operator_reads(whole_vm: dict[str, Any], whole_vmi: dict[str, Any]) -> None:
    vm_view, vmi_view = project(whole_vm, VM_FIELDS), project(whole_vmi, VMI_FIELDS)
    assert vm_state(vm_view, vmi_view, NOW, pod_request=5 * GIB) == vm_state(whole_vm, whole_vmi, NOW,
                                                                              pod_request=5 * GIB)
    assert vm_state(vm_view, vmi_view, NOW) == vm_state(whole_vm, whole_vmi, NOW)
    assert balloon_disabled(vm_view) == balloon_disabled(whole_vm)
    decision = _decision(Action.GROW, 6 * GIB)
    assert resize_patch(vm_view, decision, NOW) == resize_patch(whole_vm, decision, NOW)
    assert boot_patch(vm_view, PolicyParams(2 * GIB, 2 * GIB, 8 * GIB)) == \
        boot_patch(whole_vm, PolicyParams(2 * GIB, 2 * GIB, 8 * GIB))
    kept = json.dumps([vm_view, vmi_view])
    for bulky in ("managedFields", LAST_APPLIED, "volumes", "disks", "interfaces", "guestOSInfo", "firmware"):
        assert bulky not in kept
    assert (vm_view["apiVersion"], vm_view["kind"], vm_view["metadata"]["uid"]) == \
        ("kubevirt.io/v1", "VirtualMachine", "1f6c")  # a VM's Events name it by these


def _decision(action: Action, target: int) -> Decision:
    return Decision("prod/db", "node-1", 4 * GIB, target, action, *Why("DemandRose", "demand rose"), demand=5 * GIB)


def test_resize_patch_sets_guest_keeps_the_original_and_is_guarded() -> None:
    patch = resize_patch(vm(), _decision(Action.GROW, 6 * GIB), NOW)
    assert patch["spec"] == {"template": {"spec": {"domain": {"memory": {"guest": "6Gi"}}}}}
    notes = patch["metadata"]["annotations"]
    assert patch["metadata"]["resourceVersion"] == "42"
    assert notes[TARGET] == "6Gi" and notes[LAST_GROW].endswith("Z")
    assert notes[RESIZES] == f"{int(NOW)}:Grow"
    assert json.loads(notes[ORIGINAL_MEMORY]) == {"guest": "4Gi"}


def test_resize_patch_never_overwrites_the_saved_original() -> None:
    patch = resize_patch(vm(annotations={ORIGINAL_MEMORY: '{"guest":"1Gi"}'}), _decision(Action.SHRINK, 3 * GIB), NOW)
    assert ORIGINAL_MEMORY not in patch["metadata"]["annotations"]
    assert LAST_GROW not in patch["metadata"]["annotations"]


def test_recommend_patch_only_annotates_and_only_when_it_changed() -> None:
    patch = recommend_patch(vm(), _decision(Action.GROW, 6 * GIB), NOW)
    assert patch is not None and "spec" not in patch
    assert patch["metadata"]["annotations"][RECOMMENDATION] == "6Gi"
    again = vm(annotations=patch["metadata"]["annotations"])
    assert recommend_patch(again, _decision(Action.GROW, 6 * GIB), NOW + 30) is None


def test_boot_patch_sizes_a_stopped_vm_for_the_policy() -> None:
    params = PolicyParams(startup=2 * GIB, minimum=GIB, maximum=32 * GIB)
    patch = boot_patch(vm(guest="8Gi"), params)
    assert patch is not None
    assert patch["spec"]["template"]["spec"]["domain"]["memory"] == {"guest": "2Gi", "maxGuest": "32Gi"}
    assert json.loads(patch["metadata"]["annotations"][ORIGINAL_MEMORY]) == {"guest": "8Gi"}
    sized = vm(guest="2Gi")
    sized["spec"]["template"]["spec"]["domain"]["memory"]["maxGuest"] = "32Gi"
    assert boot_patch(sized, params) is None


def test_held_patch_shows_a_hold_once_and_clears_it_once() -> None:
    from dynamic_memory.actuators.kubevirt import HELD, held_patch

    patch = held_patch(vm(), "migration failed")
    assert patch == {"metadata": {"annotations": {HELD: "migration failed"}}}
    assert held_patch(vm(annotations={HELD: "migration failed"}), "migration failed") is None
    assert held_patch(vm(annotations={HELD: "migration failed"}), None) == {"metadata": {"annotations": {HELD: None}}}
    assert held_patch(vm(), None) is None


def test_mode_cap_limits_what_any_policy_does() -> None:
    import pytest

    from dynamic_memory.config import OperatorConfig

    cap = OperatorConfig.from_env({"DM_MODE_CAP": "Recommend"})
    assert [cap.effective_mode(m) for m in ("Auto", "Recommend", "Off")] == ["Recommend", "Recommend", "Off"]
    assert OperatorConfig.from_env({}).effective_mode("Auto") == "Auto"
    with pytest.raises(ValueError, match="must be Off, Recommend or Auto"):
        OperatorConfig.from_env({"DM_MODE_CAP": "Yolo"})


def test_our_own_resize_under_way_is_not_written_again_but_other_holds_are() -> None:
    from dynamic_memory.actuators.intents import held_words
    from dynamic_memory.policy.target import decide

    hotplug = [MIGRATABLE, {"type": "HotMemoryChange", "status": "True"}]
    params = PolicyParams(startup=2 * GIB, minimum=GIB, maximum=16 * GIB)
    ours = vm_state(vm(guest="6Gi", annotations={TARGET: "6Gi"}), vmi(requested="6Gi", conditions=hotplug), NOW)
    users = vm_state(vm(guest="8Gi", annotations={TARGET: "6Gi"}), vmi(requested="8Gi", conditions=hotplug), NOW)
    assert ours is not None and users is not None
    assert ours.own_change and not users.own_change  # someone else changed the spec since
    signal = DemandSignal(3 * GIB, 3 * GIB)
    assert held_words(ours, decide(ours, signal, params, NOW)) is None
    words = held_words(users, decide(users, signal, params, NOW))
    assert words is not None and "memory hotplug in progress" in words
    retrying = vm_state(vm(guest="6Gi", annotations={TARGET: "6Gi"}),
                        vmi(requested="6Gi", conditions=hotplug, migration={"completed": True, "failed": True}), NOW)
    assert retrying is not None and retrying.own_change
    words = held_words(retrying, decide(retrying, signal, params, NOW))
    assert words is not None and "its live migration failed and KubeVirt retries it" in words
