"""Read KubeVirt's objects (plain dicts, as watches deliver them) into the engine's model.

What KubeVirt reports, and where (see ../shared/reference/kubevirt-memory.md):
- VMI status.memory: guestAtBoot, guestCurrent, guestRequested, memoryOverhead;
- VMI spec.domain.memory.maxGuest (fixed while running), status.nodeName;
- VMI conditions LiveMigratable and HotMemoryChange, status.migrationState;
- VM condition RestartRequired (KubeVirt skips live updates while it is set).
Our own bookkeeping lives in annotations on the VM, so a restarted operator picks it up.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from dynamic_memory.model import KUBEVIRT_BLOCK, Action, Blocker, Placement, Requirement, Toleration, VMState
from dynamic_memory.quantity import format_bytes, parse_quantity

ANNOTATION_PREFIX = "dynamicmemory.io/"
LAST_GROW = ANNOTATION_PREFIX + "last-grow"
RESIZES = ANNOTATION_PREFIX + "recent-resizes"
"""Comma-separated `<unix seconds>:<Grow|Shrink>` of our resizes in the last hour."""
OUR_TARGET = ANNOTATION_PREFIX + "target"
"""The guest size we last asked for."""
LEARNED = ANNOTATION_PREFIX + "learned-costs"
"""What each candidate setting would have cost the VM on each of its past UTC days (policy/learner.py),
as JSON: {"2026-11-27": [[GiB × samples, short samples, own resizes], … one per candidate], …}."""

Obj = Mapping[str, Any]


Shape = Mapping[str, "Shape | None"]
"""The fields of an object to keep: key → its own shape, or None to keep the value whole."""

_META: Shape = {"name": None, "namespace": None, "uid": None, "resourceVersion": None, "generation": None,
                "labels": None, "annotations": None}
VM_FIELDS: Shape = {
    "apiVersion": None, "kind": None, "metadata": _META,
    "spec": {"running": None, "runStrategy": None, "instancetype": None, "template": {"spec": {"domain": {
        "memory": None, "resources": None, "devices": {"autoattachMemBalloon": None}}}}},
    "status": {"printableStatus": None, "conditions": None},
}
"""What the operator reads of a VirtualMachine (a VM's Events need apiVersion, kind and metadata)."""
VMI_FIELDS: Shape = {
    "apiVersion": None, "kind": None, "metadata": _META,
    "spec": {"architecture": None, "domain": {"memory": None, "cpu": None, "launchSecurity": None}},
    "status": {"phase": None, "nodeName": None, "memory": None, "conditions": None, "migrationState": None},
}
"""What the operator reads of a VirtualMachineInstance."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def project(obj: Obj, shape: Shape) -> dict[str, Any]:
    """Only the fields of `shape`, for the watch caches, as client-go's informers trim their
    objects (TransformFunc); `kubectl apply`'s copy of the whole object goes too. The cache grows
    with the cluster: 1,000 VMIs from KubeVirt v1.8.0 parse to 9.2 MiB whole (managedFields
    aside) and 5.6 MiB trimmed; their VMs, mostly our own annotations, 5.7 and 5.1 MiB."""
    out = _pick(obj, shape)
    annotations = out.get("metadata", {}).get("annotations")
    if annotations and LAST_APPLIED in annotations:
        out["metadata"]["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return out


def _pick(obj: Obj, shape: Shape) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in shape.items():
        value = obj.get(key)
        if value is None:
            continue
        if sub is None:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = _pick(value, sub)
    return out


def _get(obj: Obj, *path: str) -> Any:
    node: Any = obj
    for key in path:
        # objects from the watch caches are dicts: that check is C-fast, the Mapping ABC's is not
        # (it was half of a 1,000-VM pass)
        if not isinstance(node, dict) and not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _condition(obj: Obj, kind: str) -> Obj | None:
    for cond in _get(obj, "status", "conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _quantity(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_quantity(str(value))
    except ValueError:
        return None


def key_of(obj: Obj) -> str:
    """namespace/name, the key of a VM and of its VMI."""
    return f"{_get(obj, 'metadata', 'namespace')}/{_get(obj, 'metadata', 'name')}"


def _message(cond: Obj | None, fallback: str) -> str:
    if cond is None:
        return fallback
    return str(cond.get("message") or cond.get("reason") or fallback)


def shape_blocker(vm: Obj, vmi: Obj) -> tuple[Blocker, str] | None:
    """What about this VM's shape keeps KubeVirt from hotplugging its memory, for as long as it runs
    (virt-controller's `handleMemoryHotplugRequest` and `ValidateLiveUpdateMemory`, v1.8.0)."""
    template = _get(vm, "spec", "template", "spec", "domain") or {}
    if _get(vm, "spec", "instancetype"):
        return Blocker.INSTANCETYPE, f"instancetype {_get(vm, 'spec', 'instancetype', 'name')}"
    resources = template.get("resources") or {}
    for kind in ("requests", "limits"):
        if (resources.get(kind) or {}).get("memory"):
            return Blocker.MEMORY_REQUESTS, f"resources.{kind}.memory {resources[kind]['memory']}"
    domain = _get(vmi, "spec", "domain") or {}
    cpu = domain.get("cpu") or {}
    if cpu.get("realtime") is not None:
        return Blocker.UNSUPPORTED, "realtime VM"
    if (cpu.get("numa") or {}).get("guestMappingPassthrough") is not None:
        return Blocker.UNSUPPORTED, "NUMA guest mapping passthrough"
    if domain.get("launchSecurity") is not None:
        return Blocker.UNSUPPORTED, "encrypted VM (launchSecurity)"
    arch = _get(vmi, "spec", "architecture")
    if arch and arch != "amd64":
        return Blocker.UNSUPPORTED, f"architecture {arch} (hotplug is x86_64 only)"
    if _get(vmi, "spec", "domain", "memory", "maxGuest") is None:
        return Blocker.NO_MAX_GUEST, ""
    return None


def busy_blocker(vm: Obj, vmi: Obj, migrating: bool) -> tuple[Blocker, str] | None:
    """What keeps KubeVirt from taking a memory change now. A change is done when KubeVirt says
    so: HotMemoryChange gone and guestRequested equal to the VM's spec. `migrating`: a
    VirtualMachineInstanceMigration of this VMI is pending or running."""
    restart = _condition(vm, "RestartRequired")
    if restart and restart.get("status") == "True":
        return Blocker.RESTART_REQUIRED, _message(restart, "")
    migratable = _condition(vmi, "LiveMigratable")
    if not migratable or migratable.get("status") != "True":
        return Blocker.NOT_MIGRATABLE, _message(migratable, "the VMI reports no LiveMigratable condition")
    hotplug = _condition(vmi, "HotMemoryChange")
    migration = _get(vmi, "status", "migrationState")
    if hotplug and hotplug.get("status") == "True":
        if isinstance(migration, Mapping) and migration.get("failed"):
            return Blocker.HOTPLUG_RETRYING, ""
        return Blocker.HOTPLUG_IN_PROGRESS, ""
    started = isinstance(migration, Mapping) and migration.get("startTimestamp") and not migration.get("completed") \
        and not migration.get("failed")
    if migrating or started:
        return Blocker.MIGRATING, ""
    memory = _get(vmi, "status", "memory") or {}
    requested = _quantity(memory.get("guestRequested") or memory.get("guestCurrent"))
    spec_guest = _spec_guest(vm)
    if spec_guest is not None and requested is not None and spec_guest != requested:
        return Blocker.CHANGE_PENDING, (f"spec guest {format_bytes(spec_guest)}, "
                                        f"guestRequested {format_bytes(requested)}")
    return None


def _spec_guest(vm: Obj) -> int | None:
    return _quantity(_get(vm, "spec", "template", "spec", "domain", "memory", "guest"))


def resize_log(annotations: Mapping[str, str], now: float) -> list[tuple[str, Action]]:
    """Our resizes in the hour before `now`, from the `recent-resizes` annotation: (stamp, action).
    The one reader of that annotation; unreadable items are dropped."""
    out = []
    for item in (annotations.get(RESIZES) or "").split(","):
        stamp, _, kind = item.partition(":")
        try:
            t, action = float(stamp), Action(kind)
        except ValueError:
            continue
        if now - 3600 < t <= now:
            out.append((stamp, action))
    return out


def recent_resizes(annotations: Mapping[str, str], now: float) -> tuple[int, int]:
    """(grows, shrinks) we made in the hour before `now`."""
    log = resize_log(annotations, now)
    grows = sum(a is Action.GROW for _, a in log)
    return grows, len(log) - grows


_EPOCH = date(1970, 1, 1).toordinal()


def learned_costs(annotations: Mapping[str, str], candidates: int) -> dict[int, list[list[float]]]:
    """Day (days since 1970-01-01, UTC) → each candidate's costs, from the `learned-costs`
    annotation. The one reader of it: a day that does not read as `candidates` triples of numbers
    (edited, or written for another set of candidates) is left out, and learnt again."""
    try:
        raw = json.loads(annotations.get(LEARNED) or "{}")
    except ValueError:
        return {}
    out: dict[int, list[list[float]]] = {}
    for day, costs in raw.items() if isinstance(raw, dict) else ():
        try:
            number = date.fromisoformat(day).toordinal() - _EPOCH
        except (TypeError, ValueError):
            continue
        if (isinstance(costs, list) and len(costs) == candidates
                and all(isinstance(c, list) and len(c) == 3 and all(isinstance(x, int | float) and x >= 0 for x in c)
                        for c in costs)):
            out[number] = [[float(x) for x in c] for c in costs]
    return out


def day_name(day: int) -> str:
    """A day since 1970-01-01 as its ISO date (the `learned-costs` keys)."""
    return date.fromordinal(day + _EPOCH).isoformat()


def parse_time(text: str | None) -> float | None:
    """Unix seconds of an RFC 3339 timestamp, or None."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_time(t: float) -> str:
    """RFC 3339 in UTC, as Kubernetes writes times."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


OWN_BLOCKS = (Blocker.HOTPLUG_IN_PROGRESS, Blocker.HOTPLUG_RETRYING, Blocker.CHANGE_PENDING, Blocker.MIGRATING)
"""Blocks that a change we asked for causes."""

HUGEPAGES_1GI_BLOCK = 1024**3


def vm_state(vm: Obj, vmi: Obj, now: float, *, pod_request: int | None = None,
             placement: Placement | None = None, migrating: bool = False) -> VMState | None:
    """The engine's view of a running VM, or None when it is not running or reports no memory yet.

    `pod_request`: its virt-launcher pod's memory request (the overhead is that minus the guest);
    `placement`: where its pods may run; `migrating`: a migration of it is pending or running."""
    if _get(vmi, "status", "phase") != "Running":
        return None
    memory = _get(vmi, "status", "memory") or {}
    boot = _quantity(memory.get("guestAtBoot"))
    current = _quantity(memory.get("guestCurrent"))
    requested = _quantity(memory.get("guestRequested")) or current
    if boot is None or current is None or requested is None:
        return None
    max_guest = _quantity(_get(vmi, "spec", "domain", "memory", "maxGuest"))
    max_guest = boot if max_guest is None else max_guest
    found = shape_blocker(vm, vmi) or busy_blocker(vm, vmi, migrating)
    blocked, detail = found if found else (None, "")
    spec_guest = _spec_guest(vm)
    annotations = _get(vm, "metadata", "annotations") or {}
    ours = _quantity(annotations.get(OUR_TARGET))
    # while a change settles the VM may end at either size: count the larger
    assigned = max(current, requested, spec_guest or 0) if blocked in OWN_BLOCKS else requested
    if pod_request is not None:
        overhead = max(pod_request - requested, 0)
    else:
        overhead = _quantity(memory.get("memoryOverhead")) or 0
    grows, shrinks = recent_resizes(annotations, now)
    hugepages = _get(vmi, "spec", "domain", "memory", "hugepages", "pageSize")
    migration = _get(vmi, "status", "migrationState") or {}
    ended = parse_time(migration.get("endTimestamp")) if migration.get("completed") and not migration.get(
        "failed") else None
    return VMState(
        key=key_of(vm),
        node=_get(vmi, "status", "nodeName") or "",
        assigned=assigned,
        guest_at_boot=boot,
        max_guest=max_guest,
        overhead=overhead,
        last_grow=parse_time(annotations.get(LAST_GROW)),
        grows_last_hour=grows,
        shrinks_last_hour=shrinks,
        blocked=blocked,
        blocked_detail=detail,
        own_change=blocked in OWN_BLOCKS and ours is not None and ours == spec_guest,
        alignment=HUGEPAGES_1GI_BLOCK if hugepages == "1Gi" else KUBEVIRT_BLOCK,
        unplug_gap=max(current - requested, 0),
        plug_gap=max(requested - current, 0) if blocked not in OWN_BLOCKS else 0,
        placement=placement,
        changed_at=ended,
    )


def _selector_terms(affinity: Obj) -> tuple[tuple[Requirement, ...], ...]:
    required = _get(affinity, "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = []
    for term in required.get("nodeSelectorTerms") or []:
        reqs = [Requirement(str(e.get("key", "")), str(e.get("operator", "")), tuple(map(str, e.get("values") or ())))
                for e in term.get("matchExpressions") or []]
        reqs += [Requirement("metadata.name", str(f.get("operator", "")), tuple(map(str, f.get("values") or ())))
                 for f in term.get("matchFields") or [] if f.get("key") == "metadata.name"]
        terms.append(tuple(reqs))
    return tuple(terms)


def placement_of(pod: Obj) -> Placement:
    """Where a pod may be scheduled: nodeSelector, required node affinity, tolerations."""
    spec = pod.get("spec") or {}
    return Placement(
        node_selector=tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items())),
        terms=_selector_terms(spec.get("affinity") or {}),
        tolerations=tuple(Toleration(str(t.get("key") or ""), str(t.get("operator") or "Equal"),
                                     str(t.get("value") or ""), str(t.get("effect") or ""))
                          for t in spec.get("tolerations") or []),
    )


def balloon_disabled(vm: Obj) -> bool:
    """True when the VM switched off the balloon device that the guest statistics come from."""
    return _get(vm, "spec", "template", "spec", "domain", "devices", "autoattachMemBalloon") is False
