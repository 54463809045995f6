"""A DynamicMemoryPolicy's status: metav1.Conditions and the summary `kubectl get dmp` shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dynamic_memory.model import Decision
from dynamic_memory.quantity import format_bytes
from dynamic_memory.sources.kubevirt import format_time

READY = "Ready"
METRICS_AVAILABLE = "MetricsAvailable"
CAPACITY_LIMITED = "CapacityLimited"
BALLOON_ATTACHED = "BalloonAttached"
HOTPLUGGABLE = "Hotpluggable"
PRESSURED_LIMIT = 10


def set_condition(conditions: Sequence[Mapping[str, Any]], kind: str, status: bool | None, reason: str,
                  message: str, generation: int, now: float) -> list[dict[str, Any]]:
    """Conditions with `kind` set; lastTransitionTime moves only when the status flips."""
    value = {True: "True", False: "False", None: "Unknown"}[status]
    out, found = [], False
    for cond in conditions:
        if cond.get("type") != kind:
            out.append(dict(cond))
            continue
        found = True
        flipped = cond.get("status") != value
        out.append({"type": kind, "status": value, "reason": reason, "message": message[:32768],
                    "lastTransitionTime": format_time(now) if flipped else cond.get("lastTransitionTime",
                                                                                    format_time(now)),
                    "observedGeneration": generation})
    if not found:
        out.append({"type": kind, "status": value, "reason": reason, "message": message[:32768],
                    "lastTransitionTime": format_time(now), "observedGeneration": generation})
    return out


def summary(selected: int, decisions: Sequence[Decision], now: float) -> dict[str, Any]:
    """Counts and totals for the status, plus the VMs with the least headroom."""
    def headroom(d: Decision) -> float:
        return (d.current - (d.demand or 0)) / d.current if d.current else 0.0

    tight = sorted((d for d in decisions if d.demand is not None), key=headroom)[:PRESSURED_LIMIT]
    return {
        "vms": selected,
        "running": len(decisions),
        "assigned": format_bytes(sum(d.current for d in decisions)),
        "demand": format_bytes(sum(d.current if d.demand is None else d.demand for d in decisions)),
        "target": format_bytes(sum(d.target for d in decisions)),
        "lastDecisionTime": format_time(now),
        "pressured": [{"name": d.key.split("/", 1)[-1], "node": d.node, "assigned": format_bytes(d.current),
                       "demand": format_bytes(d.demand or 0), "target": format_bytes(d.target),
                       "reason": d.reason[:1024]} for d in tight],
    }
