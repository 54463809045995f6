"""One decision pass over many VMs: per-VM targets, then the cluster plan. Pure.

`plan` is what the operator's reconcile loop and the simulator both call; baselines implement
the same `Policy` protocol so the simulator can run them side by side.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from dynamic_memory.model import Cluster, Decision, DemandSignal, PolicyParams, VMState
from dynamic_memory.policy.landing import land
from dynamic_memory.policy.target import decide


class Entry(NamedTuple):
    """A VM, what its metrics say, and the policy that governs it."""

    vm: VMState
    signal: DemandSignal
    params: PolicyParams


@dataclass(frozen=True, slots=True)
class DailyPattern:
    """How a time-of-day pattern is read from a guest's past days, by clock hour (UTC)."""

    days: int = 3
    """Past days looked at."""
    agree: int = 2
    """A peak counts when the guest reached it on at least this many of them (the agree-th highest
    of the days' peaks), so that one unusual day is not taken for a pattern."""
    ahead_h: int = 6
    """`recurring` covers the hour now and this many hours in all (1 to 24)."""
    lead_s: float = 900.0
    """`soon` is the clock hour holding now + lead_s: a VM grows this long before a peak's hour
    (at most an hour)."""


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
    daily: DailyPattern | None = None
    """`recurring` and `soon` are read from past days this way (None: not read). The operator reads
    them where it keeps each VM's window between passes (its way for our engine)."""


class Policy(Protocol):
    """A memory policy the simulator can run: ours or a baseline."""

    name: str
    follows_demand: bool
    """False for a policy that never sizes by demand (static): its runs are not expected to resize."""
    balances_a_host: bool
    """True for a policy whose decision for one VM depends on the others on its node (Proxmox steers
    the host's use): the replay, whose VMs share one host, cannot share them out over processes."""

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """The statistics this policy needs from the metrics."""
        ...

    def plan(self, entries: Sequence[Entry], cluster: Cluster | None, now: float) -> list[Decision]:
        """Decisions for every entry, within what the cluster can take (None: no limits)."""
        ...


GENERATIONAL = sys.version_info < (3, 14)
"""CPython's collector has three generations, counted as `cyclic_gc_paused` expects."""


@contextmanager
def cyclic_gc_paused(vms: int) -> Iterator[None]:
    """Hold Python's cyclic garbage collector off for a pass, and keep it from scanning what the pass made.

    A pass builds a few tuples per VM and no reference cycles, yet every ~700 allocations start
    a collection, and the older generations walk the whole fleet again and again: with the
    collector on, 100,000 VMs took 2.7× as long (benchmarks/engine_scale.py). Its decisions then
    live until the next pass, and the first allocation after it scanned them all as young objects:
    a sixth of a 100k pass, and 16× the time for 10× the VMs once they outgrow the caches.

    So the young generations are collected first (what other code left there gets its usual
    collection), and after the pass its objects go to the oldest generation unscanned (`gc.freeze`
    then `gc.unfreeze`, two list splices); reference counting frees them when the next pass replaces
    them. `gc.freeze` also zeroes the collector's counts, among them the young collections that lead
    to a full one: kept, or the full collections stop and cycles that grew old stay (the 1,000-VM
    operator went from 147 to 196 MiB). A process that keeps objects frozen (the replay) or has
    the collector off gets the plain pause, as does CPython 3.14 and later, whose incremental
    collector counts otherwise (measured here on 3.11, the image's). So does a pass of no more VMs
    than the young generation's threshold (700): it saves less than its extra collections cost, and
    `gc.get_freeze_count` walks every frozen object (the month's replay, 500 VMs a step in a frozen
    process, took 113 s instead of 43 with it asked every step).
    """
    was_enabled = gc.isenabled()
    promote = was_enabled and GENERATIONAL and vms > gc.get_threshold()[0] and gc.get_freeze_count() == 0
    if promote:
        gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if promote:
            towards_full = min(gc.get_count()[2], gc.get_threshold()[2] + 1)  # past its threshold: due
            gc.freeze()
            gc.unfreeze()
            for _ in range(towards_full):  # the young generations are empty: each of these is a count
                gc.collect(1)
        if was_enabled:
            gc.enable()


def plan(entries: Sequence[Entry], cluster: Cluster | None, now: float) -> list[Decision]:
    """Our engine: every VM's own target, then the cluster plan (where each change can land)."""
    with cyclic_gc_paused(len(entries)):
        decisions = [decide(e.vm, e.signal, e.params, now) for e in entries]
        return land(entries, decisions, cluster)


class DynamicMemory:
    """The kubevirt-dynamic-memory policy (demand + buffer, KubeVirt-aware hysteresis, cluster plan)."""

    name = "dynamic-memory"
    follows_demand = True
    balances_a_host = False

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """Lowest demand of the scale-up window, highest of the scale-down window (and the time of day)."""
        return SignalSpec(params.scale_up.window_s, params.scale_down.window_s, 1.0, params.min_history_s,
                          DailyPattern() if params.time_of_day else None)

    def plan(self, entries: Sequence[Entry], cluster: Cluster | None, now: float) -> list[Decision]:
        """See `plan`."""
        return plan(entries, cluster, now)
