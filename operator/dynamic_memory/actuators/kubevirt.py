"""Turn decisions into patches of KubeVirt VirtualMachines. Pure: building, not sending.

A live resize patches the VirtualMachine's spec.template.spec.domain.memory.guest (KubeVirt
owns the VMI spec); KubeVirt then hot-plugs by live migration. Every patch carries the VM's
resourceVersion, so a VM changed meanwhile answers 409 and is decided again, never overwritten.
The decision, its reason and time go into annotations on the VM, next to what they explain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from dynamic_memory.model import Action, Decision, PolicyParams
from dynamic_memory.quantity import format_bytes, to_quantity
from dynamic_memory.sources.kubevirt import (
    ANNOTATION_PREFIX,
    LAST_GROW,
    LEARNED,
    OUR_TARGET,
    RESIZES,
    _get,
    day_name,
    format_time,
    resize_log,
)

TARGET = OUR_TARGET
REASON = ANNOTATION_PREFIX + "reason"
DECIDED_AT = ANNOTATION_PREFIX + "decided-at"
DEMAND = ANNOTATION_PREFIX + "demand"
RECOMMENDATION = ANNOTATION_PREFIX + "recommendation"
HELD = ANNOTATION_PREFIX + "held"
"""Why a VM KubeVirt is busy with is held now; removed when the hold ends (`reason` keeps the
last change's explanation)."""
ORIGINAL_MEMORY = ANNOTATION_PREFIX + "original-memory"
"""The VM's memory block as the user wrote it, saved before we first change it (nothing is lost)."""

LEARNED_SETTING = ANNOTATION_PREFIX + "learned-setting"
"""The setting the VM is sized with today, learnt from its past days, in words."""

REASON_LIMIT = 1024


def _history(annotations: Mapping[str, str], now: float, action: Action) -> str:
    kept = [f"{stamp}:{kind.value}" for stamp, kind in resize_log(annotations, now)]
    kept.append(f"{int(now)}:{action.value}")
    return ",".join(kept)


def _decision_annotations(decision: Decision, now: float) -> dict[str, str]:
    out = {REASON: decision.reason[:REASON_LIMIT], DECIDED_AT: format_time(now)}
    if decision.demand is not None:
        out[DEMAND] = format_bytes(decision.demand)
    return out


def _original(vm: Mapping[str, Any]) -> dict[str, str]:
    annotations = _get(vm, "metadata", "annotations") or {}
    if ORIGINAL_MEMORY in annotations:
        return {}
    memory = _get(vm, "spec", "template", "spec", "domain", "memory") or {}
    return {ORIGINAL_MEMORY: json.dumps(memory, sort_keys=True, separators=(",", ":"))}


def resize_patch(vm: Mapping[str, Any], decision: Decision, now: float) -> dict[str, Any]:
    """Merge patch that sets the running VM's guest memory to the decision's target."""
    annotations = _get(vm, "metadata", "annotations") or {}
    notes = {**_original(vm), **_decision_annotations(decision, now), TARGET: to_quantity(decision.target),
             RESIZES: _history(annotations, now, decision.action)}
    if decision.action is Action.GROW:
        notes[LAST_GROW] = format_time(now)
    return {
        "metadata": {"resourceVersion": _get(vm, "metadata", "resourceVersion"), "annotations": notes},
        "spec": {"template": {"spec": {"domain": {"memory": {"guest": to_quantity(decision.target)}}}}},
    }


def recommend_patch(vm: Mapping[str, Any], decision: Decision, now: float) -> dict[str, Any] | None:
    """Merge patch that only records what Auto mode would do; None when nothing changed."""
    annotations = _get(vm, "metadata", "annotations") or {}
    recommendation = to_quantity(decision.target)
    notes = {**_decision_annotations(decision, now), RECOMMENDATION: recommendation}
    if annotations.get(RECOMMENDATION) == recommendation and annotations.get(REASON) == notes[REASON]:
        return None
    return {"metadata": {"annotations": notes}}


def held_patch(vm: Mapping[str, Any], held: str | None) -> dict[str, Any] | None:
    """Merge patch that shows why a VM is held (words given), or clears that once it is not (None);
    None when the VM already says so. Writes only on change: no churn."""
    annotations = _get(vm, "metadata", "annotations") or {}
    held = None if held is None else held[:REASON_LIMIT]
    if annotations.get(HELD) == held:
        return None
    return {"metadata": {"annotations": {HELD: held}}}


def boot_patch(vm: Mapping[str, Any], params: PolicyParams) -> dict[str, Any] | None:
    """For a stopped VM: boot at the policy's startup size with maxGuest at its maximum, so the
    VM can move live over the policy's whole range after its next start. None when it already does."""
    memory = _get(vm, "spec", "template", "spec", "domain", "memory") or {}
    want = {"guest": to_quantity(params.startup), "maxGuest": to_quantity(params.maximum)}
    if all(memory.get(k) == v for k, v in want.items()):
        return None
    return {
        "metadata": {"resourceVersion": _get(vm, "metadata", "resourceVersion"), "annotations": _original(vm)},
        "spec": {"template": {"spec": {"domain": {"memory": want}}}},
    }


def learned_patch(kept: Mapping[int, Sequence[Sequence[float]]], setting: str) -> dict[str, Any]:
    """Merge patch that keeps the VM's learnt costs (day → each candidate's) and, in words, the
    setting they choose for today. Our annotations only: no resourceVersion, nothing of the user's."""
    costs = {day_name(day): [[round(c[0], 1), int(c[1]), int(c[2])] for c in kept[day]] for day in sorted(kept)}
    return {"metadata": {"annotations": {LEARNED: json.dumps(costs, separators=(",", ":")),
                                         LEARNED_SETTING: setting}}}
