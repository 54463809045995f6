"""The replay of each VM's setting learned from its own past days (policy/learner.py): the engine
as the operator runs it by default (learnPerVM), under its own name, dynamic-memory.

Every candidate's cost on every VM-day comes first, by the learner's own `costs_of_day` (the days are
independent: they are shared out over the machine's cores); then the engine is replayed with each
VM's setting switched daily to the one `choose` takes from the days before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from dynamic_memory.model import PolicyParams
from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.policy.learner import (
    DAY_S,
    Choice,
    DaySamples,
    candidate_params,
    choose,
    costs_of_day,
    day_of,
    own_index,
)
from dynamic_memory.quantity import GIB
from dynamic_memory.sim.replay import STALE_S, ReplayResult, _first_sample, replay, replay_days, replay_params
from dynamic_memory.sim.traces import VMTrace


def vm_days(trace: VMTrace, t0: int, days: int) -> list[DaySamples | None]:
    """The trace's days (from `t0`) as the learner reads them, with the replay's bounds at each
    sample, [min(1 GiB, provisioned), provisioned]."""
    floor = [GIB if p > GIB else p for p in trace.provisioned]
    return [day_of(trace.ts, trace.usage, floor, trace.provisioned, t0 + k * DAY_S) for k in range(days)]


def _costs_of(traces: Sequence[VMTrace], t0: int, days: int,
              settings: Sequence[PolicyParams]) -> npt.NDArray[np.float64]:
    """Candidates × VMs × days × 3: `costs_of_day` of each."""
    costs = np.zeros((len(settings), len(traces), days, 3))
    for j, trace in enumerate(traces):
        for k, day in enumerate(vm_days(trace, t0, days)):
            if day is not None:
                costs[:, j, k] = costs_of_day(day, settings, STALE_S)
    return costs


def day_costs(traces: Sequence[VMTrace], settings: Sequence[PolicyParams]) -> npt.NDArray[np.float64]:
    """Every candidate's cost on every VM-day of the traces, over the machine's cores."""
    t0, days = _first_sample(traces), replay_days(traces)
    workers = max(1, min(os.cpu_count() or 1, len(traces)))
    if workers == 1:
        return _costs_of(traces, t0, days, settings)
    parts = [list(traces[w::workers]) for w in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        done = list(pool.map(_costs_of, parts, [t0] * workers, [days] * workers, [settings] * workers))
    costs = np.zeros((len(settings), len(traces), days, 3))
    for w, part in enumerate(done):
        costs[:, w::workers] = part
    return costs


def picks(costs: npt.NDArray[np.float64], own: int, choice: Choice) -> npt.NDArray[np.int64]:
    """Each VM's candidate for each day (VMs × days) from the costs of every day (candidates × VMs
    × days × 3): day k's by `choose` over the days before it."""
    out = np.empty(costs.shape[1:3], dtype=np.int64)
    for vm in range(costs.shape[1]):
        days = costs[:, vm].tolist()
        for k in range(costs.shape[2]):
            out[vm, k] = choose([candidate[:k] for candidate in days], own, choice)
    return out


def replay_per_vm_setting(traces: Sequence[VMTrace], params: PolicyParams, choice: Choice | None = None, *,
                          progress: bool = False) -> ReplayResult:
    """The candidates' days, then the replay with each VM's setting switched daily by their costs
    (its seconds are all of it)."""
    started = time.perf_counter()
    settings = candidate_params(replay_params(params))
    chosen = picks(day_costs(traces, settings), own_index(replay_params(params), settings), choice or Choice())
    result = replay(traces, DynamicMemory(), params, progress=progress, workers=os.cpu_count() or 1,
                    setting_of=lambda j, day: params if chosen[j, day] < 0 else settings[chosen[j, day]])
    return replace(result, seconds=round(time.perf_counter() - started, 2))
