"""PromQL the source builds: namespace matchers must survive the PromQL string and RE2 alike."""

from __future__ import annotations

import re

from dynamic_memory.policy.engine import SignalSpec
from dynamic_memory.sources.prometheus import (
    Group,
    MetricsView,
    WindowCache,
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
