"""The learner: a candidate's day worked out by hand, and the daily choice by hand."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dynamic_memory.model import Learn, PolicyParams
from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.policy.learner import Choice, DaySamples, candidate_params, choose, costs_of_day
from dynamic_memory.sim.per_vm_setting import picks
from dynamic_memory.sim.replay import replay
from dynamic_memory.sim.traces import load_traces
from tests.unit.test_replay import write_trace

G = 1 << 30
PARAMS = PolicyParams(0, 0, 2**62)  # buffer 20 %, at least 1 GiB; scale-down window 8 h
DAY = 288  # samples a day, 5 minutes apart


def samples(before: list[float], today: list[float], ceiling: float = 16) -> DaySamples:
    """A day of usage (GiB) with the samples before it; floor 1 GiB."""
    usage = [int(u * G) for u in before + today]
    n = len(usage)
    return DaySamples([300.0 * i for i in range(n)], usage, [G] * n, [int(ceiling * G)] * n, len(before))


def day_cost(day: DaySamples, params: PolicyParams, stale_s: float) -> tuple[float, int, int]:
    """One candidate's day."""
    return costs_of_day(day, [params], stale_s)[0]


def test_a_flat_guest_holds_its_steady_size_all_day() -> None:
    # 2 GiB all along: 2 + max(20 %, 1 GiB) = 3 GiB from the day's start, no resize, never short
    assert day_cost(samples([2] * 96, [2] * DAY), PARAMS, 900) == (3 * DAY, 0, 0)


def test_the_day_starts_at_what_the_candidate_sizes_the_window_before_at() -> None:
    # the window before the day peaked at 5 GiB: 5 + 1 = 6 GiB held until the window passes it
    # 8 h (96 samples) after the peak, then one shrink to 3 GiB
    before = [5.0] + [2.0] * 95
    held, short, own = day_cost(samples(before, [2] * DAY), PARAMS, 900)
    assert (short, own) == (0, 1)
    # the peak leaves the 8 h window at the day's first sample: 6 GiB at it, 3 GiB after
    assert held == 6 + 3 * (DAY - 1)
    small = replace(PARAMS, minimum_buffer=G // 8)  # 2 + 20 % = 2.4 GiB, aligned up to 2 MiB
    held, short, own = day_cost(samples([2] * 96, [2] * DAY), small, 900)
    assert (short, own) == (0, 0)
    assert held == DAY * (2 * G + 2 * G // 5 + (2 << 20) - (2 * G // 5) % (2 << 20)) / G


def test_a_spike_is_one_short_sample_a_grow_and_a_shrink_a_window_later() -> None:
    # 2 GiB, one sample at 4 GiB at noon (sample 144): short at it, 3 GiB held (a decision sees
    # earlier samples only); grown at the next to 4 GiB + 10 % (it ran short) + 1 GiB = 5530 MiB
    # (2 MiB blocks); shrunk back to 3 GiB when the spike leaves the 8 h window, 96 samples on
    today = [2.0] * DAY
    today[144] = 4.0
    held, short, own = day_cost(samples([2] * 96, today), PARAMS, 900)
    assert (short, own) == (1, 2)
    assert held == 3 * 145 + 5530 / 1024 * 96 + 3 * (DAY - 145 - 96)


def test_candidates_that_read_the_same_statistics_cost_what_each_costs_alone() -> None:
    # the 8 h window twice (1 GiB and 128 MiB buffers) and a 2 h window: the spike leaves them at
    # different times, so a window shared wrongly changes the held GiB
    today = [2.0] * DAY
    today[144] = 4.0
    day = samples([5.0] + [2.0] * 95, today)
    short_window = replace(PARAMS, scale_down=replace(PARAMS.scale_down, window_s=7200.0))
    candidates = [PARAMS, replace(PARAMS, minimum_buffer=G // 8), short_window]
    together = costs_of_day(day, candidates, 900)
    assert together == [day_cost(day, c, 900) for c in candidates]
    assert len(set(together)) == 3


def test_no_sample_before_the_day_starts_it_at_the_ceiling() -> None:
    held, _, own = day_cost(samples([], [2] * 12, ceiling=8), PARAMS, 900)
    # no window yet: 8 GiB held, and no shrink while the metrics span less than minHistory (2 h)
    assert (held, own) == (8 * 12, 0)


def test_a_change_forced_by_the_bounds_is_not_its_own() -> None:
    day = samples([2] * 96, [2] * DAY)
    lower = [int(2.5 * G)] * (96 + 100) + [2 * G] * (DAY - 100)  # the ceiling falls below 3 GiB, then to 2
    held, short, own = day_cost(replace(day, ceiling=lower), PARAMS, 900)
    assert (short, own) == (0, 0)
    assert held == 2.5 * 100 + 2 * (DAY - 100)


def test_a_day_whose_bounds_set_the_size_costs_every_candidate_its_sizes() -> None:
    # a VM of 1 GiB or less follows its provisioned size (floor = ceiling): 1 GiB for 100 samples,
    # then 512 MiB; usage above it at times is short of no size the bounds allow, and the move to
    # 512 MiB is the bounds', not a candidate's
    day = samples([0.5] * 96, [2.0 if t % 50 == 0 else 0.25 for t in range(DAY)])
    sizes = [G] * (96 + 100) + [G // 2] * (DAY - 100)
    candidates = [PARAMS, replace(PARAMS, minimum_buffer=G // 8),
                  replace(PARAMS, scale_down=replace(PARAMS.scale_down, window_s=7200.0))]
    fixed = replace(day, floor=sizes, ceiling=sizes)
    assert costs_of_day(fixed, candidates, 900) == [(100 + 0.5 * (DAY - 100), 0, 0)] * 3


def test_with_no_window_before_it_a_day_costs_what_the_replay_scores(tmp_path: Path) -> None:
    """Started at its provisioned size with no past, a day is the replay of that day: the same
    GiB × samples, short samples and own resizes, by the replay's own tallies."""
    usage = [0 if t % 97 == 0 else 2 + t // 25 if t % 40 == 20 else 2 for t in range(DAY)]  # spikes rising
    rows = [(1, t * 300, 16, u) for t, u in enumerate(usage)]
    result = replay(load_traces(write_trace(tmp_path / "t.csv", rows)), DynamicMemory(), PARAMS)
    ts = [300.0 * t for t in range(DAY)]
    held, short, own = day_cost(DaySamples(ts, [u * G for u in usage], [G] * DAY, [16 * G] * DAY, 0), PARAMS, 900)
    assert held == pytest.approx(result.memory_ratio * 16 * DAY, rel=1e-12)
    assert short == round(result.pressure_fraction * (DAY - sum(u == 0 for u in usage)))
    assert own == round(result.own_resizes_per_vm_day * result.vm_days)
    assert own > 0 and short > 0


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


def test_days_without_samples_do_not_count_towards_warm() -> None:
    costs = [[[g, 0.0, 0.0] for g in (10, 0, 0, 10)], [[g, 0.0, 0.0] for g in (4, 0, 0, 4)]]
    assert choose(costs, 0, Choice(days=4, warm=3)) == 0  # two days with samples of three needed
    assert choose(costs, 0, Choice(days=4, warm=2)) == 1
    assert choose(costs, -1, Choice(days=1, warm=1)) == 1  # only the last day counts


def test_a_knob_the_policy_sets_is_the_same_in_every_candidate() -> None:
    """Six candidates whatever the policy sets (the costs kept on a VM line up), differing only in
    what the VM learns; equal ones cost the same."""
    half = 512 << 20
    pinned = replace(PARAMS, minimum_buffer=half, learn=Learn.DOWN_WINDOW)
    candidates = candidate_params(pinned)
    assert [c.minimum_buffer for c in candidates] == [half] * 6
    assert [c.scale_down.window_s / 3600 for c in candidates] == [2, 24, 2, 8, 4, 4]
    assert {c.learn for c in candidates} == {Learn.DOWN_WINDOW}
    windows_pinned = candidate_params(replace(PARAMS, learn=Learn.MINIMUM_BUFFER))
    assert [c.scale_down.window_s for c in windows_pinned] == [8 * 3600] * 6
    assert [c.minimum_buffer >> 20 for c in windows_pinned] == [128, 128, 1024, 1024, 2048, 4096]
    day = samples([2.0] * 100, [2.0] * 50 + [5.0] * 3 + [2.0] * 100)
    costs = costs_of_day(day, candidates, 900.0)
    assert costs[0] == costs[2] and costs[4] == costs[5]
    assert costs[0] == day_cost(day, candidates[0], 900.0)
