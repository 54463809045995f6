"""PromQL the source builds: namespace matchers must survive the PromQL string and RE2 alike."""

from __future__ import annotations

import re

from dynamic_memory.policy.engine import SignalSpec
from dynamic_memory.sources.prometheus import Group, MetricsView, queries, regex_literal


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
