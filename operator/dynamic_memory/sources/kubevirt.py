"""Read KubeVirt's objects (plain dicts, as watches deliver them) into the engine's model.

What KubeVirt reports, and where (see ../shared/reference/kubevirt-memory.md):
- VMI status.memory: guestAtBoot, guestCurrent, guestRequested, memoryOverhead;
- VMI spec.domain.memory.maxGuest (fixed while running), status.nodeName;
- VMI conditions LiveMigratable and HotMemoryChange, status.migrationState;
- VM condition RestartRequired (KubeVirt skips live updates while it is set).
Our own bookkeeping lives in annotations on the VM, so a restarted operator picks it up.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from dynamic_memory.model import VMState
from dynamic_memory.quantity import parse_quantity

ANNOTATION_PREFIX = "dynamicmemory.io/"
LAST_GROW = ANNOTATION_PREFIX + "last-grow"
RESIZES = ANNOTATION_PREFIX + "recent-resizes"
"""Comma-separated `<unix seconds>:<Grow|Shrink>` of our resizes in the last hour."""

Obj = Mapping[str, Any]


def _get(obj: Obj, *path: str) -> Any:
    node: Any = obj
    for key in path:
        if not isinstance(node, Mapping):
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


OWN_CHANGE_UNDER_WAY = ("memory hotplug in progress", "memory change under way")
"""How blocked_reason starts when KubeVirt is carrying out a memory change (ours, if the VM's
spec says what our `target` annotation says)."""


def blocked_reason(vm: Obj, vmi: Obj) -> str | None:
    """Why KubeVirt cannot take a memory change for this VM now, or None."""
    restart = _condition(vm, "RestartRequired")
    if restart and restart.get("status") == "True":
        return f"RestartRequired: {restart.get('message') or 'the VM needs a restart'}"
    migratable = _condition(vmi, "LiveMigratable")
    if migratable and migratable.get("status") == "False":
        return f"not live-migratable: {migratable.get('message') or migratable.get('reason') or 'unknown'}"
    hotplug = _condition(vmi, "HotMemoryChange")
    migration = _get(vmi, "status", "migrationState")
    if hotplug and hotplug.get("status") == "True":
        if isinstance(migration, Mapping) and migration.get("failed"):
            return "memory hotplug waiting: its live migration failed and KubeVirt retries it"
        return "memory hotplug in progress (HotMemoryChange)"
    if isinstance(migration, Mapping) and migration.get("startTimestamp") and not migration.get("completed") \
            and not migration.get("failed"):
        return "live migration in progress"
    current = _quantity(_get(vmi, "status", "memory", "guestCurrent"))
    for field, value in (("guestRequested", _quantity(_get(vmi, "status", "memory", "guestRequested"))),
                         ("the VM's spec guest", _spec_guest(vm))):
        if value is not None and current is not None and value != current:
            return f"memory change under way ({field} {value} != guestCurrent {current})"
    return None


def _spec_guest(vm: Obj) -> int | None:
    return _quantity(_get(vm, "spec", "template", "spec", "domain", "memory", "guest"))


def recent_resizes(annotations: Mapping[str, str], now: float) -> tuple[int, int]:
    """(grows, shrinks) we made in the hour before `now`, from our annotation."""
    grows = shrinks = 0
    for item in (annotations.get(RESIZES) or "").split(","):
        stamp, _, kind = item.partition(":")
        try:
            t = float(stamp)
        except ValueError:
            continue
        if now - 3600 < t <= now:
            grows += kind == "Grow"
            shrinks += kind == "Shrink"
    return grows, shrinks


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


PAGE_TABLE_DIVISOR = 512
"""KubeVirt adds guest/512 to a virt-launcher's overhead for page tables (hypervisorbackend.go)."""


def launcher_overhead_at(overhead: int, current: int, max_guest: int) -> int:
    """The launcher overhead at the largest size the VM can reach live: its pod grows with the guest,
    so node room is counted at that size and a grow never overfills the node."""
    return overhead + max(0, max_guest - current) // PAGE_TABLE_DIVISOR


def vm_state(vm: Obj, vmi: Obj, now: float) -> VMState | None:
    """The engine's view of a running VM, or None when it is not running or reports no memory yet."""
    if _get(vmi, "status", "phase") != "Running":
        return None
    memory = _get(vmi, "status", "memory") or {}
    boot = _quantity(memory.get("guestAtBoot"))
    current = _quantity(memory.get("guestCurrent"))
    requested = _quantity(memory.get("guestRequested"))
    if boot is None or current is None:
        return None
    max_guest = _quantity(_get(vmi, "spec", "domain", "memory", "maxGuest"))
    max_guest = boot if max_guest is None else max_guest
    blocked = blocked_reason(vm, vmi)
    # while a change settles the node holds the larger of both sizes until the migration ends
    assigned = max(current, requested or 0, _spec_guest(vm) or 0) if blocked else current
    annotations = _get(vm, "metadata", "annotations") or {}
    grows, shrinks = recent_resizes(annotations, now)
    return VMState(
        key=key_of(vm),
        node=_get(vmi, "status", "nodeName") or "",
        assigned=assigned,
        guest_at_boot=boot,
        max_guest=max_guest,
        overhead=launcher_overhead_at(_quantity(memory.get("memoryOverhead")) or 0, current, max_guest),
        last_grow=parse_time(annotations.get(LAST_GROW)),
        grows_last_hour=grows,
        shrinks_last_hour=shrinks,
        blocked=blocked,
    )


def balloon_disabled(vm: Obj) -> bool:
    """True when the VM switched off the balloon device that the guest statistics come from."""
    return _get(vm, "spec", "template", "spec", "domain", "devices", "autoattachMemBalloon") is False
