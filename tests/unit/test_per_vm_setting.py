"""The replay of the learned per-VM setting, on small made-up traces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dynamic_memory.history import DemandHistory
from dynamic_memory.model import PolicyParams
from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.sim.per_vm_setting import replay_per_vm_setting
from dynamic_memory.sim.replay import STALE_S, _replayed_history, replay
from dynamic_memory.sim.traces import load_traces
from tests.unit.test_replay import write_trace

PARAMS = PolicyParams(0, 0, 2**62)


def test_a_guest_with_short_spikes_gets_a_short_window(tmp_path: Path) -> None:
    """2 GiB, with an hour at 6 GiB every day: the default keeps the spike's size 8 h after it, a
    2 h window gives it back sooner; after three days the VM takes the cheaper setting."""
    day = 288
    rows = [(1, t * 300, 16, 6 if t % day in range(100, 112) else 2) for t in range(8 * day)]
    traces = load_traces(write_trace(tmp_path / "t.csv", rows))
    default = replay(traces, DynamicMemory(), PARAMS)
    learned = replay_per_vm_setting(traces, PARAMS)
    assert learned.policy == "dynamic-memory"  # the engine as the operator runs it by default
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
