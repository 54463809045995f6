"""PromQL the source builds: namespace matchers must survive the PromQL string and RE2 alike."""

from __future__ import annotations

import re

from dynamic_memory.policy.engine import DailyPattern, SignalSpec
from dynamic_memory.sources.prometheus import (
    Group,
    MetricsView,
    WindowCache,
    hourly_query,
    hourly_range,
    queries,
    regex_literal,
    seed_pieces,
    seed_queries,
)


def promql_string_value(literal: str) -> str:
    """What PromQL makes of a double-quoted string's body: backslash escapes resolved."""
    return re.sub(r"\\(.)", r"\1", literal)


def test_hyphenated_namespaces_make_valid_string_escapes() -> None:
    literal = regex_literal({"team-a", "b.c"})
    assert re.search(r"\\[^\\]", literal.replace("\\\\", "")) is None  # only doubled backslashes in the string
    pattern = promql_string_value(literal)
    assert re.fullmatch(pattern, "team-a") and re.fullmatch(pattern, "b.c")
    assert not re.fullmatch(pattern, "bXc") and not re.fullmatch(pattern, "team-ab")


def test_every_query_names_the_namespaces_once_escaped() -> None:
    group = Group(SignalSpec(down_window_s=3600, min_history_s=600), MetricsView(), frozenset({"prod-eu"}))
    for promql in queries(group).values():
        assert 'namespace=~"prod\\\\-eu"' in promql


WINDOW = Group(SignalSpec(down_window_s=8 * 3600, min_history_s=2 * 3600), MetricsView(), frozenset({"ns"}))


def test_the_window_is_read_in_pieces_that_cover_it() -> None:
    offsets = seed_pieces(8 * 3600, 60)
    assert offsets == [k * 3600 for k in range(8)]
    seeds = seed_queries(WINDOW, {"a"}, 60)
    assert seeds[0].startswith("max_over_time(") and "offset" not in seeds[0]
    assert seeds[7 * 3600].endswith("[3600s:60s] offset 25200s)")
    assert all('name=~"a"' in q for q in seeds.values())
    assert all("name=~" not in q for q in seed_queries(WINDOW, {f"vm-{i}" for i in range(500)}, 60).values())


def test_seeded_peaks_expire_when_their_piece_leaves_the_window() -> None:
    cache, now = WindowCache(), 100_000.0
    assert cache.missing(WINDOW, ["ns/a", "ns/b"]) == ["ns/a", "ns/b"]
    # a's peak of 6 was 7-8 h ago, 3 an hour ago; b had no samples in the window at all
    cache.seed(WINDOW, ["ns/a", "ns/b"], {7 * 3600: {"ns/a": 6.0}, 3600: {"ns/a": 3.0}, 0: {}}, now)
    assert cache.missing(WINDOW, ["ns/a", "ns/b"]) == []
    first = cache.update(WINDOW, ["ns/a", "ns/b"], {"ns/a": 2.0}, now)
    assert first["peak"] == {"ns/a": 6.0} and first["since"] == {"ns/a": now - 7 * 3600}
    later = now + 1.5 * 3600  # the 7 h-ago piece ended 8.5 h ago: gone; the 1 h-ago one stays
    second = cache.update(WINDOW, ["ns/a", "ns/b"], {"ns/a": 1.0, "ns/b": 4.0}, later)
    assert second["peak"] == {"ns/a": 3.0, "ns/b": 4.0}
    assert second["since"]["ns/b"] == later  # b's history starts with its first sample


def test_vms_no_longer_asked_are_forgotten_and_quantiles_are_not_cached() -> None:
    cache = WindowCache()
    cache.seed(WINDOW, ["ns/a"], {0: {"ns/a": 1.0}}, 10.0)
    cache.update(WINDOW, [], {}, 20.0)
    assert cache.missing(WINDOW, ["ns/a"]) == ["ns/a"]
    assert not WindowCache.cacheable(SignalSpec(down_window_s=3600, down_quantile=0.9))
    assert not WindowCache.cacheable(SignalSpec(down_window_s=0))


DAILY = Group(SignalSpec(down_window_s=8 * 3600, daily=DailyPattern(days=3, agree=2, ahead_h=8, lead_s=900)),
              MetricsView(), frozenset({"ns"}))


def test_the_hourly_peaks_of_the_past_days_are_one_range_query() -> None:
    assert hourly_query(DAILY, {"a"}, 60).startswith("max_over_time(max by (namespace, name) (")
    assert hourly_query(DAILY, {"a"}, 60).endswith("[3599s:60s])")
    # at 10:20 on day 3: the points are the ends of the 72 whole hours before 10:00
    now = 3 * 86400 + 10 * 3600 + 1200
    start, end = hourly_range(now, 3)
    assert (end, (end - start) / 3600 + 1) == (3 * 86400 + 10 * 3600, 72)


def test_the_time_of_day_is_seeded_from_the_hourly_peaks_and_kept_up() -> None:
    cache, gib = WindowCache(), 2.0**30
    # ns/a reached 6Gi between 02:00 and 03:00 on days 0 and 2, 1Gi in every other hour
    hourly = {"ns/a": [(h * 3600.0 + 3600, 6 * gib if h % 24 == 2 and h // 24 != 1 else gib) for h in range(72)]}
    now = 3 * 86400 + 3600.0  # 01:00 on day 3
    cache.seed(DAILY, ["ns/a", "ns/b"], {0: {"ns/a": gib}}, now, hourly)
    first = cache.update(DAILY, ["ns/a", "ns/b"], {"ns/a": gib}, now)
    assert first["recurring"] == {"ns/a": 6 * gib}   # 02:00 is within the coming 8 h, on 2 of 3 days
    assert first["soon"] == {"ns/a": gib}            # 01:15 is in the 01:00 hour
    later = cache.update(DAILY, ["ns/a", "ns/b"], {"ns/a": gib}, now + 50 * 60)  # 01:50: 02:05 is next
    assert later["soon"] == {"ns/a": 6 * gib}
    assert "ns/b" not in later["recurring"]          # no past days read: no pattern
