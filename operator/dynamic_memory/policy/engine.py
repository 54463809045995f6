"""One decision pass over many VMs: per-VM targets, then each node's budget. Pure.

`plan` is what the operator's reconcile loop and the simulator both call; baselines implement
the same `Policy` protocol so the simulator can run them side by side.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from dynamic_memory.model import Decision, DemandSignal, PolicyParams, VMState
from dynamic_memory.policy.budget import Claim, fit_to_room
from dynamic_memory.policy.target import decide, fit, live_bounds


class Entry(NamedTuple):
    """A VM, what its metrics say, and the policy that governs it."""

    vm: VMState
    signal: DemandSignal
    params: PolicyParams


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """Which demand statistics a policy reads: the sources compute exactly these (PromQL or replay)."""

    up_window_s: float = 0.0
    """`latest` is the lowest demand over this window (0: the newest sample)."""
    down_window_s: float = 0.0
    """`peak` is taken over this window."""
    down_quantile: float = 1.0
    """`peak` is this quantile of the window (1.0: the maximum)."""
    min_history_s: float = 0.0
    """`enough_history` once the samples span this long (capped at the down window)."""


class Policy(Protocol):
    """A memory policy the simulator can run: ours or a baseline."""

    name: str
    follows_demand: bool
    """False for a policy that never sizes by demand (static): its runs are not expected to resize."""

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """The statistics this policy needs from the metrics."""
        ...

    def plan(self, entries: Sequence[Entry], rooms: Mapping[str, int | None], now: float) -> list[Decision]:
        """Decisions for every entry; `rooms` maps node → guest bytes its VMs may use (None: no limit)."""
        ...


def claim_of(entry: Entry, decision: Decision) -> Claim:
    """A VM's stake in its node: floor, demand and the target it was given."""
    vm, params = entry.vm, entry.params
    if decision.limited == "blocked":
        return Claim(vm.key, vm.assigned, vm.assigned, vm.assigned, params.weight, vm.assigned, 0)
    floor, ceiling = live_bounds(vm, params)
    want = decision.target
    need = want if decision.demand is None else fit(decision.demand, floor, ceiling, params.alignment)
    return Claim(vm.key, min(floor, want), min(need, want), want, params.weight, vm.assigned,
                 params.scale_up.step(vm.assigned))


def budget(entries: Sequence[Entry], decisions: Sequence[Decision],
           rooms: Mapping[str, int | None]) -> list[Decision]:
    """Apply each node's room to the decisions of its VMs (order of `decisions` is kept).

    One sequential sum per node first: most nodes hold every VM's target, now and during the
    changes, and their VMs are never gathered (at 100,000 VMs that gathering was a third of the pass).
    """
    held: dict[str, int] = defaultdict(int)
    for d in decisions:
        held[d.node] += d.current if d.current > d.target else d.target
    short = {node for node, total in held.items() if (room := rooms.get(node)) is not None and total > room}
    out = list(decisions)
    if not short:
        return out
    by_node: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(decisions):
        if d.node in short:
            by_node[d.node].append(i)
    for node, idx in by_node.items():
        room = rooms[node]
        assert room is not None
        alignment = max(entries[i].params.alignment for i in idx)
        fitted = fit_to_room([decisions[i] for i in idx], [claim_of(entries[i], decisions[i]) for i in idx],
                             room, alignment)
        for i, d in zip(idx, fitted, strict=True):
            out[i] = d
    return out


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector off for a pass (restoring its state after).

    A pass builds a few tuples per VM and no reference cycles, yet every ~700 allocations start
    a collection, and the older generations walk the whole fleet again and again: with the
    collector on, 100,000 VMs took 2.7× as long (benchmarks/engine_scale.py). Reference counting
    still frees everything; cycles made elsewhere meanwhile are collected after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def plan(entries: Sequence[Entry], rooms: Mapping[str, int | None], now: float) -> list[Decision]:
    """Our engine: every VM's own target, then each node's budget."""
    with cyclic_gc_paused():
        decisions = [decide(e.vm, e.signal, e.params, now) for e in entries]
        return budget(entries, decisions, rooms)


class DynamicMemory:
    """The kubevirt-dynamic-memory policy (demand + buffer, KubeVirt-aware hysteresis, node budget)."""

    name = "dynamic-memory"
    follows_demand = True

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """Lowest demand of the scale-up window, highest of the scale-down window."""
        return SignalSpec(params.scale_up.window_s, params.scale_down.window_s, 1.0, params.min_history_s)

    def plan(self, entries: Sequence[Entry], rooms: Mapping[str, int | None], now: float) -> list[Decision]:
        """See `plan`."""
        return plan(entries, rooms, now)
