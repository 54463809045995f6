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


def test_the_engine_fleet_plans_and_stays_within_room() -> None:
    entries, rooms = fleet(400, 20)
    decisions = plan(entries, rooms, NOW)
    assert len(decisions) == 400 and any(d.changes for d in decisions)
    for node, room in rooms.items():
        assert room is not None
        mine = [d for d in decisions if d.node == node]
        assert sum(max(d.current, d.target) for d in mine) <= max(room, sum(d.current for d in mine))
