"""From a pass's decisions to typed patch intents: what to write to which VM, and why. Pure.

The handlers only send them, in order; a refused patch is decided again next pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dynamic_memory.actuators.kubevirt import boot_patch, held_patch, recommend_patch, resize_patch
from dynamic_memory.model import Action, Blocker, Decision, Limit, Mode, VMState
from dynamic_memory.reconcile import Plan, Snapshot

HELD_LIMITS = (Limit.BLOCKED, Limit.LANDING, Limit.ROOM)
"""Holds worth showing on the VM: lasting or waiting on the cluster. A wait for a free migration
slot passes within a pass or two and is not written (no churn)."""


class Kind(StrEnum):
    """What an intent does to a VM."""

    RESIZE = "Resized"
    RECOMMEND = "Recommended"
    HOLD = "Held"
    BOOT_SIZE = "BootSized"
    LEARNED = "Learned"


@dataclass(frozen=True, slots=True)
class Intent:
    """One patch of one VirtualMachine."""

    kind: Kind
    vm: Mapping[str, Any]
    """The VirtualMachine as the watch cache holds it (its Events name it)."""
    body: dict[str, Any]
    decision: Decision | None = None

    @property
    def key(self) -> str:
        """namespace/name of the VM."""
        meta = self.vm.get("metadata") or {}
        return f"{meta.get('namespace')}/{meta.get('name')}"


def held_words(vm: VMState, decision: Decision) -> str | None:
    """Why the VM is held, for its `held` annotation; None when it is not held (or is busy with our
    own change, which its `target` and `reason` annotations already explain)."""
    if decision.limited not in HELD_LIMITS or decision.changes:
        return None
    if vm.own_change and vm.blocked is not Blocker.HOTPLUG_RETRYING:  # a failing migration is news
        return None
    # what holds it, without the sizing words: those move with every demand sample, and a hold is
    # written only when it changes
    return decision.notes[-1].text() if decision.notes else decision.why.text()


def intents(plan: Plan, snapshot: Snapshot, now: float) -> list[Intent]:
    """Every patch the pass wants sent: resizes first (they are what matters), then the rest."""
    by_key: Mapping[str, Mapping[str, Any]] = {f"{ns}/{n}": vm for ns, named in snapshot.vms.items()
                                               for n, vm in named.items()}
    resizes: list[Intent] = []
    others: list[Intent] = []
    for key, result in plan.passes.items():
        mode = Mode(snapshot.policies[key].mode)
        for entry, decision in zip(result.entries, result.decisions, strict=True):
            vm = by_key[decision.key]
            if mode is Mode.RECOMMEND:
                body = recommend_patch(vm, decision, now)
                if body is not None:
                    others.append(Intent(Kind.RECOMMEND, vm, body, decision))
                continue
            held = held_patch(vm, held_words(entry.vm, decision))
            if held is not None:
                others.append(Intent(Kind.HOLD, vm, held))
            if decision.changes and decision.action is not Action.HOLD:
                resizes.append(Intent(Kind.RESIZE, vm, resize_patch(vm, decision, now), decision))
        if mode is Mode.AUTO:
            params = snapshot.policies[key].params()
            for vm_key in result.stopped:
                body = boot_patch(by_key[vm_key], params)
                if body is not None:
                    others.append(Intent(Kind.BOOT_SIZE, by_key[vm_key], body))
    return resizes + others
