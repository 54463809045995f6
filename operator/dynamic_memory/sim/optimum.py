"""The offline optimum: the least memory any policy could have assigned, knowing the future, with a
given number of resizes of its own. The reference line for the replay's memory ratio.

Per VM, the assignment is a level held between change points on the hour; at each sample KubeVirt's
bounds clamp it to [min(1 GiB, provisioned), provisioned], as in the replay, so a level never lets a
sample's usage (clamped to those bounds) exceed what is assigned. Until its first change the VM keeps
its provisioned size, as every replayed policy starts. With a margin (a policy's bufferPercent) every
level also keeps that share of each sample's usage above it, within the provisioned size: the least
memory that never lets usage into a buffer of that share (a policy's minimumBuffer, and its buffer
on a window's peak rather than on each sample, are not modelled). With at most k changes, the cheapest such
assignment is a dynamic programme over the hours that hold samples:

    D_k[j] = min(D_{k-1}[j], min_{i<j} D_{k-1}[i] + C[i, j])

where C[i, j] is the cost (Σ assigned over the samples) of one level over hours i..j-1, that level
being the highest need among them. One programme up to the largest budget answers every smaller one,
so a frontier over budgets costs one run per VM. Vectorised with numpy: an (hours × hours) step per
change, O(k · hours²) per VM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dynamic_memory.quantity import GIB
from dynamic_memory.sim.traces import VMTrace

HOUR_S = 3600

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class VMOptimum:
    """One VM's cheapest assignment for every number of own changes up to `changes_max`."""

    vm: str
    days: float
    provisioned: float
    """Σ provisioned over its samples (the ratio's denominator)."""
    cost: Floats
    """cost[k]: Σ assigned over its samples with at most k changes."""

    def best(self, budget: int) -> tuple[float, int]:
        """(cost, changes used) with at most `budget` changes: the fewest changes reaching that cost.
        A VM whose usage outgrows its starting size needs some change: then the fewest that serve it."""
        k = min(max(budget, 0), len(self.cost) - 1)
        if not math.isfinite(self.cost[k]):
            k = int(np.argmax(np.isfinite(self.cost)))  # optimum() computed on until one was feasible
        cost = float(self.cost[k])
        return cost, int(np.argmax(self.cost <= cost))


def _samples(trace: VMTrace, margin_percent: int) -> tuple[Ints, Floats, Floats, Floats]:
    """Where each hour's samples start, and per sample: lower bound, upper bound, and need (usage
    plus the margin, at most the provisioned size; 0 when any level serves it: a missing sample,
    or a need within the floor)."""
    ts = np.asarray(trace.ts, dtype=np.int64)
    prov = np.asarray(trace.provisioned, dtype=np.float64)
    usage = np.asarray(trace.usage, dtype=np.float64)
    lo = np.minimum(float(GIB), prov)
    need = np.minimum(usage * (100 + margin_percent) / 100, prov)
    need = np.where((usage > 0) & (need > lo), need, 0.0)
    hours = ts // HOUR_S
    starts = np.flatnonzero(np.concatenate([[True], hours[1:] != hours[:-1]]))  # samples are oldest first
    return starts, lo, prov, need


def optimum(trace: VMTrace, changes_max: int, margin_percent: int = 0) -> VMOptimum:
    """The VM's cheapest assignment with at most 0..changes_max changes of its own, keeping
    `margin_percent` of each sample's usage above it."""
    starts, lo, prov, need = _samples(trace, margin_percent)
    hours = len(starts)
    block_need = np.maximum.reduceat(need, starts)
    start = prov[0]
    levels = np.unique(np.concatenate([block_need, [start]]))
    # the level l as clamped at each sample, summed per hour block (rows), then prefix sums over blocks
    assigned = np.minimum(np.maximum(levels[None, :], lo[:, None]), prov[:, None])
    prefix = np.vstack([np.zeros((1, len(levels))), np.cumsum(np.add.reduceat(assigned, starts, axis=0), axis=0)])

    # C[i, j] (j = end block, exclusive, stored at column j-1): one level over blocks i..j-1
    b = np.arange(hours)
    running = np.maximum.accumulate(np.where(b[None, :] >= b[:, None], block_need[None, :], -1.0), axis=1)
    level = np.searchsorted(levels, running)  # running is one of the levels where i <= j-1
    level[running < 0] = 0
    seg = prefix[b[None, :] + 1, level] - prefix[b[:, None], level]
    seg[b[None, :] < b[:, None]] = np.inf

    # no change yet: the provisioned size, feasible while no need rises above it
    start_level = int(np.searchsorted(levels, start))
    kept = prefix[:, start_level]
    feasible = np.concatenate([[True], np.maximum.accumulate(block_need) <= start])
    best = np.where(feasible, kept, np.inf)  # best[j]: cheapest over blocks 0..j-1 so far
    costs = [best[hours]]
    # up to the budget, and on while no assignment is feasible yet (usage outgrew the starting size
    # more often than the budget allows a change: the fewest changes that serve it are its optimum)
    while len(costs) <= changes_max or not math.isfinite(costs[-1]):
        step = (best[:-1, None] + seg).min(axis=0)  # one more change, starting a level at some i
        nxt = best.copy()
        np.minimum(nxt[1:], step, out=nxt[1:])
        if np.array_equal(nxt, best):  # more changes no longer help
            break
        best = nxt
        costs.append(best[hours])
    costs += [costs[-1]] * (changes_max + 1 - len(costs))
    return VMOptimum(trace.vm, trace.days, float(prov.sum()), np.asarray(costs))


@dataclass(frozen=True, slots=True)
class FrontierPoint:
    """The fleet's optimum at one own-resize budget."""

    budget: float
    """Own changes allowed per VM-day (each VM: round(budget × its days))."""
    memory_ratio: float
    own_resizes_per_vm_day: float
    """Changes the optimum actually used (it may need fewer than allowed)."""


def allowed(budget: float, days: float) -> int:
    """A VM's own changes at a budget per VM-day."""
    return round(budget * days)


def fleet_optimum(traces: Sequence[VMTrace], budget_max: float, margin_percent: int = 0) -> list[VMOptimum]:
    """Every VM's optimum up to the changes `budget_max` allows it."""
    return [optimum(t, allowed(budget_max, t.days), margin_percent) for t in traces if len(t.ts)]


def frontier(vms: Sequence[VMOptimum], budgets: Sequence[float]) -> list[FrontierPoint]:
    """The fleet's memory ratio and used own resizes at each budget."""
    provisioned = sum(v.provisioned for v in vms) or 1.0
    days = sum(v.days for v in vms) or 1.0
    out = []
    for budget in budgets:
        chosen = [v.best(allowed(budget, v.days)) for v in vms]
        out.append(FrontierPoint(budget, sum(c for c, _ in chosen) / provisioned,
                                 sum(k for _, k in chosen) / days))
    return out


def budgets(low: float = 0.25, high: float = 4.0, count: int = 9) -> list[float]:
    """Budgets spaced evenly on a log scale (the frontier bends most at small budgets)."""
    return [round(low * math.exp(math.log(high / low) * i / (count - 1)), 3) for i in range(count)]
