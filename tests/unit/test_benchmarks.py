"""The benchmarks' own logic (they measure; these check they report what they measured)."""

from __future__ import annotations

from benchmarks.__main__ import summarise, table
from benchmarks.common import percentile
from benchmarks.engine_scale import NOW, fleet
from dynamic_memory.policy.engine import plan


def test_percentile_is_an_observed_value() -> None:
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 95) == 19.0 and percentile(values, 50) == 10.0 and percentile(values, 100) == 20.0


def test_table_marks_missed_targets_and_missing_runs() -> None:
    results = {"engine_scale": {"engine_10k_ms": 60.0, "engine_100k_over_10k": 10.5, "measured_at": "t"},
               "reaction": {"reaction_p95_s": 3.6, "reaction_bound_s": 3.5, "measured_at": "t", "trials": 20,
                            "p50_s": 2.0, "max_s": 3.7, "scrape_s": 1.0, "interval_s": 2.0}}
    summary = summarise(results)  # type: ignore[arg-type]
    assert summary["engine_10k_ms"] == 60.0 and summary["prom_speedup_1k"] is None
    rows = {line.split("|")[1].strip(): line for line in table(summary, results).splitlines()  # type: ignore[arg-type]
            if line.startswith("| `")}
    assert "| no |" in rows["`engine_10k_ms`"] and "| yes |" in rows["`engine_100k_over_10k`"]
    assert "| no |" in rows["`reaction_p95_s`"] and "not run" in rows["`prom_speedup_1k`"]


def test_the_engine_fleet_plans_within_the_room_of_the_nodes_it_lands_on() -> None:
    entries, cluster = fleet(400, 20)
    decisions = plan(entries, cluster, NOW)
    assert len(decisions) == 400 and any(d.changes for d in decisions)
    overhead = {e.vm.key: e.vm.overhead for e in entries}
    for name, node in cluster.nodes.items():
        landing = [d for d in decisions if d.changes and d.landing == name]
        assert sum(d.target + overhead[d.key] for d in landing) <= node.free
        assert all(d.node != name for d in landing)
    assert sum(d.changes for d in decisions) <= cluster.migrations_left
