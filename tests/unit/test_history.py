"""The simulator's demand history answers exactly what Prometheus' *_over_time would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dynamic_memory.history import DemandHistory
from dynamic_memory.policy.engine import DailyPattern, SignalSpec

samples = st.lists(st.tuples(st.integers(1, 50), st.integers(0, 10**6)), min_size=1, max_size=80)


def _replay(steps: list[tuple[int, int]]) -> list[tuple[float, int]]:
    t, out = 0.0, []
    for gap, value in steps:
        t += gap
        out.append((t, value))
    return out


@given(samples, st.integers(0, 200), st.integers(1, 300))
def test_window_min_and_max_match_brute_force(steps: list[tuple[int, int]], up: int, down: int) -> None:
    history = DemandHistory(SignalSpec(up, down, 1.0), stale_s=10**9)
    seen: list[tuple[float, int]] = []
    for t, value in _replay(steps):
        sig = history.signal(t)  # asked before the sample at t is known
        if seen:
            low = [v for s, v in seen if s >= t - up] if up else [seen[-1][1]]
            high = [v for s, v in seen if s >= t - down]
            assert sig.latest == (min(low) if low else None)
            assert sig.peak == (max(high) if high else None)
        history.push(t, value)
        seen.append((t, value))


@given(samples, st.sampled_from([0.5, 0.9, 0.99]))
def test_window_quantile_matches_brute_force(steps: list[tuple[int, int]], q: float) -> None:
    history = DemandHistory(SignalSpec(0, 100, q), stale_s=10**9)
    seen: list[tuple[float, int]] = []
    for t, value in _replay(steps):
        history.push(t, value)
        seen.append((t, value))
        window = sorted(v for s, v in seen if s >= t - 100)
        assert history.signal(t).peak == window[min(len(window) - 1, int(q * (len(window) - 1) + 0.5))]


def test_stale_samples_make_demand_unknown() -> None:
    history = DemandHistory(SignalSpec(0, 3600, 1.0), stale_s=120)
    history.push(0, 5)
    assert history.signal(60).latest == 5
    assert history.signal(121).latest is None
    assert history.signal(121).peak is None


@pytest.mark.parametrize(("min_history", "needed"), [(300, 300), (600, 600), (10**6, 600)])
def test_enough_history_after_min_history_or_the_window(min_history: float, needed: float) -> None:
    history = DemandHistory(SignalSpec(0, 600, 1.0, min_history), stale_s=10**9)
    history.push(0, 5)
    assert not history.signal(needed - 1).enough_history
    assert history.signal(needed).enough_history


def test_a_coarse_window_stays_small_and_errs_by_at_most_one_granule() -> None:
    from dynamic_memory.history import WindowExtreme

    span, granule = 3600.0, 3600.0 / 64
    exact, longer = WindowExtreme(span, largest=True), WindowExtreme(span + granule, largest=True)
    coarse = WindowExtreme(span, largest=True, granularity=granule)
    for t in range(0, 4 * 3600, 30):  # demand falling for hours, then a step back up, then noise
        value = max(0, 10_000 - t) if t < 3 * 3600 else 5_000 + (t * 7919) % 1_000
        for window in (exact, longer, coarse):
            window.push(t, value)
        assert len(coarse.dq) <= 65
        got, low, high = coarse.get(t + 1), exact.get(t + 1), longer.get(t + 1)
        assert got is not None and low is not None and high is not None
        assert low <= got <= high  # never below the exact peak; never older than one granule past the window


H = 3600.0
DAY = 24 * H


def test_time_of_day_hand_example() -> None:
    """A guest at 1Gi that reached 6Gi between 02:00 and 03:00 on two of its last three days."""
    history = DemandHistory(SignalSpec(0, 600, daily=DailyPattern(days=3, agree=2, ahead_h=8, lead_s=900)), 10**9)
    for day in range(3):
        for minute in range(0, 24 * 60, 5):
            t = day * DAY + minute * 60
            history.push(t, 6 * 2**30 if day != 1 and 2 * H <= minute * 60 < 3 * H else 2**30)
    assert history.signal(3 * DAY + 1 * H).recurring == 6 * 2**30       # 01:00: 02:00 is within 8 h
    assert history.signal(3 * DAY + 1.5 * H).soon == 2**30              # 01:30: 01:45 is in the 01:00 hour
    assert history.signal(3 * DAY + 1.8 * H).soon == 6 * 2**30          # 01:48: 02:03 is in the 02:00 hour
    assert history.signal(3 * DAY + 3 * H).recurring == 2**30           # 03:00: the peak's hour is past
    one_day = DemandHistory(SignalSpec(0, 600, daily=DailyPattern(days=3, agree=2)), 10**9)
    for minute in range(0, 24 * 60, 5):
        one_day.push(minute * 60, 6 * 2**30)
    assert one_day.signal(DAY + 1 * H).recurring is None                 # one day is not a pattern


@given(st.lists(st.tuples(st.integers(60, 4 * 3600), st.integers(1, 10**6)), min_size=1, max_size=120),
       st.integers(1, 4), st.integers(1, 10), st.integers(0, 3600))
def test_time_of_day_matches_its_definition(steps: list[tuple[int, int]], days: int, ahead: int, lead: int) -> None:
    """recurring and soon, against their definition worked out from every sample kept."""
    agree = min(2, days)
    history = DemandHistory(SignalSpec(0, 600, daily=DailyPattern(days, agree, ahead, lead)), stale_s=10**9)
    seen: list[tuple[float, int]] = []

    def expect(first_hour: int, count: int) -> int | None:
        per_day = sorted((max([v for s, v in seen if first_hour - 24 * d <= s // H < first_hour - 24 * d + count],
                              default=0) for d in range(1, days + 1)), reverse=True)
        return per_day[agree - 1] or None

    for t, value in _replay(steps):
        if seen:
            sig = history.signal(t)
            assert sig.recurring == expect(int(t // H), ahead)
            assert sig.soon == expect(int((t + lead) // H), 1)
        history.push(t, value)
        seen.append((t, value))
