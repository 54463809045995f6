"""The per-VM setting prototype: its daily choice by hand, and its replay on small made-up traces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from dynamic_memory.history import DemandHistory
from dynamic_memory.model import PolicyParams
from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.quantity import MIB
from dynamic_memory.sim.per_vm_setting import NAME, Choice, picks, replay_per_vm_setting
from dynamic_memory.sim.replay import STALE_S, _replayed_history, replay
from dynamic_memory.sim.traces import load_traces
from tests.unit.test_replay import write_trace

PARAMS = PolicyParams(0, 0, 2**62)


def test_each_day_takes_the_candidate_cheapest_over_the_days_before() -> None:
    # two candidates, one VM, five days; [GiB × samples, short samples, own resizes] per day
    costs = np.zeros((2, 1, 5, 3))
    costs[0, 0, :, 0] = [10, 10, 10, 10, 10]
    costs[1, 0, :, 0] = [4, 4, 4, 4, 4]
    costs[1, 0, 2, 1] = 1  # candidate 1 ran short once on day 2: 4 + 10 × 1 = 14 > 10
    chosen = picks(costs, -1, Choice(short_gib_samples=10, resize_gib_samples=0, days=2, warm=2))
    # day 0 and 1: fewer than two days seen; day 2: days 0-1 (1: 8 against 0: 20); day 3: days 1-2
    # (1: 18 against 0: 20); day 4: days 2-3 (1: 18 against 0: 20)
    assert chosen.tolist() == [[-1, -1, 1, 1, 1]]
    costs[1, 0, 3, 2] = 1  # and resized on day 3: at μ 5, days 2-3 cost 1: 23 against 0: 20
    chosen = picks(costs, -1, Choice(short_gib_samples=10, resize_gib_samples=5, days=2, warm=2))
    assert chosen.tolist() == [[-1, -1, 1, 1, 0]]


def test_a_vm_switched_to_a_setting_from_the_start_replays_as_that_setting(tmp_path: Path) -> None:
    """The window a VM switches to holds its past samples, as if kept from the start."""
    rows = [(1, t * 300, 16, 2 + 4 * (t % 97 < 5)) for t in range(2000)]
    traces = load_traces(write_trace(tmp_path / "t.csv", rows))
    small = replace(PARAMS, minimum_buffer=128 * MIB, scale_down=replace(PARAMS.scale_down, window_s=7200.0))
    alone = replay(traces, DynamicMemory(), small)
    switched = replay(traces, DynamicMemory(), PARAMS, setting_of=lambda j, day: small if day >= 1 else PARAMS)
    assert alone.memory_ratio != replay(traces, DynamicMemory(), PARAMS).memory_ratio
    # from day 1 on the switched VM is in the same state as one that always had the setting
    # (both shrink by then to the same level), so only day 0 may differ
    days = np.zeros((1, 7, 3)), np.zeros((1, 7, 3))
    replay(traces, DynamicMemory(), small, day_costs=days[0])
    replay(traces, DynamicMemory(), PARAMS, setting_of=lambda j, day: small if day >= 1 else PARAMS,
           day_costs=days[1])
    assert switched.memory_ratio > alone.memory_ratio
    assert np.array_equal(days[0][0, 2:], days[1][0, 2:])


def test_a_guest_with_short_spikes_gets_a_short_window(tmp_path: Path) -> None:
    """2 GiB, with an hour at 6 GiB every day: the default keeps the spike's size 8 h after it, a
    2 h window gives it back sooner; after three days the VM takes the cheaper setting."""
    day = 288
    rows = [(1, t * 300, 16, 6 if t % day in range(100, 112) else 2) for t in range(8 * day)]
    traces = load_traces(write_trace(tmp_path / "t.csv", rows))
    default = replay(traces, DynamicMemory(), PARAMS)
    learned = replay_per_vm_setting(traces, PARAMS)
    assert learned.policy == NAME
    assert learned.memory_ratio < default.memory_ratio
    assert learned.pressure_fraction <= default.pressure_fraction


def test_a_window_a_vm_switches_to_holds_its_past_samples(tmp_path: Path) -> None:
    rows = [(1, t * 300, 16, [2, 0, 5, 3][t % 4]) for t in range(40)]  # every fourth sample missing
    trace = load_traces(write_trace(tmp_path / "t.csv", rows))[0]
    engine = DynamicMemory()
    small = replace(PARAMS, scale_down=replace(PARAMS.scale_down, window_s=3600.0))
    kept = DemandHistory(engine.signal_spec(small), STALE_S)
    for t in range(30):
        if rows[t][3]:
            kept.push(rows[t][1], rows[t][3] << 30)
    now = rows[30][1]
    assert _replayed_history(engine.signal_spec(small), trace, 30).signal(now) == kept.signal(now)
    assert kept.signal(now).peak == 5 << 30
