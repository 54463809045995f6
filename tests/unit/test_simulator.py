"""The simulated cluster keeps KubeVirt's rules and the scenarios tell their stories."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.quantity import GIB
from dynamic_memory.sim.cluster import simulate
from dynamic_memory.sim.report import policies, run_all, summarise, warning_lines
from dynamic_memory.sim.scenarios import SCENARIOS, burst, from_trace, small_node
from tests.unit.test_replay import write_trace


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_no_policy_breaks_kubevirt_rules_or_node_room(name: str) -> None:
    scenario = SCENARIOS[name]()
    results = run_all(scenario, policies(scenario.step_s))
    report = summarise(scenario, results)
    for row in report["policies"]:
        assert row["kubevirt_violations"] == 0, row
        if row["policy"] in ("dynamic-memory", "proxmox"):
            assert row["node_over_capacity_steps"] == 0, row


def test_heavier_weights_are_served_first_across_a_short_pool() -> None:
    sc = small_node()
    result = simulate(DynamicMemory(), sc.nodes, sc.vms, duration_s=sc.duration_s, step_s=sc.step_s)
    tl = result.timeline

    def lacking(weight: str) -> float:
        """GiB-hours of demand not covered (steps of a minute), over the VMs of one weight."""
        return sum(max(0, d - a) for vm in (f"vm-{weight}-1", f"vm-{weight}-2")
                   for d, a in zip(tl.demand[vm], tl.assigned[vm], strict=True)) / GIB / 60

    # gold lacks only the first jump of each burst (2 → 9 GiB within one step); the pool's
    # shortage falls on the lighter VMs
    assert lacking("bronze") > 20 * lacking("gold")
    assert lacking("bronze") >= lacking("silver") > lacking("gold")
    assert all(u <= c for node in tl.node_used for u, c in zip(tl.node_used[node], tl.node_capacity[node],
                                                               strict=True))


def test_every_resize_moves_the_vm_to_another_node() -> None:
    sc = burst()
    result = simulate(DynamicMemory(), sc.nodes, sc.vms, duration_s=sc.duration_s, step_s=sc.step_s)
    moves = [r for r in result.reasons if " on " in r]
    assert moves and len(moves) == result.resizes
    for line in moves:
        source, target = line.split(" on ", 1)[1].split(":", 1)[0].split(" → ")
        assert source != target
    assert result.migrated_bytes >= result.resizes * GIB


def test_a_pinned_vm_is_never_resized() -> None:
    from dataclasses import replace

    sc = burst()
    vms = [replace(vm, pinned=True) for vm in sc.vms]
    result = simulate(DynamicMemory(), sc.nodes, vms, duration_s=sc.duration_s, step_s=sc.step_s)
    assert result.resizes == 0 and result.failed_migrations == 0


def test_burst_is_followed_up_and_back_down() -> None:
    sc = burst()
    result = simulate(DynamicMemory(), sc.nodes, sc.vms, duration_s=sc.duration_s, step_s=sc.step_s)
    tl = result.timeline
    k_open = tl.t.index(4 * 3600)
    assert tl.assigned["vm-0"][k_open] >= tl.demand["vm-0"][k_open]  # caught up while the app runs
    assert tl.assigned["vm-0"][-1] <= 4 * GIB  # given back after the scale-down window
    assert result.resizes <= 12


def test_recommend_mode_changes_nothing() -> None:
    from dataclasses import replace

    from dynamic_memory.model import Mode

    sc = burst()
    vms = [replace(vm, params=replace(vm.params, mode=Mode.RECOMMEND)) for vm in sc.vms]
    result = simulate(DynamicMemory(), sc.nodes, vms, duration_s=sc.duration_s, step_s=sc.step_s)
    assert result.resizes == 0
    assert all(len(set(a)) == 1 for a in result.timeline.assigned.values())


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_static_is_the_reference(name: str) -> None:
    from dynamic_memory.policy.baselines import Static

    scenario = SCENARIOS[name]()
    report = summarise(scenario, run_all(scenario, [Static()]))
    row = report["policies"][0]
    assert (row["memory_ratio"], row["resizes_per_vm_day"]) == (1.0, 0.0)


def test_a_run_that_never_sees_a_fresh_sample_says_so() -> None:
    sc = burst()  # samples every 30 s; stale after 10 s means every sample is stale when decided on
    results = run_all(replace(sc, stale_s=10), policies(sc.step_s))
    rows = {r["policy"]: r for r in summarise(sc, results)["policies"]}
    assert any("never received a fresh sample" in w for w in rows["dynamic-memory"]["warnings"])
    assert "decided no resize in the whole run" in rows["dynamic-memory"]["warnings"]
    assert rows["dynamic-memory"]["resizes_per_vm_day"] == 0
    assert "warning: dynamic-memory: never received a fresh sample" in "\n".join(warning_lines(list(rows.values())))


def test_a_sound_run_has_no_warnings() -> None:
    sc = burst()
    rows = summarise(sc, run_all(sc, [DynamicMemory()]))["policies"]
    assert rows[0]["warnings"] == [] and rows[0]["resizes_per_vm_day"] > 0


def test_trace_scenario_follows_the_traces_sampling(tmp_path: Path) -> None:
    rows = [(v, t * 600, 8, 1 + (t // 20 + v) % 4) for v in (1, 2) for t in range(300)]
    sc = from_trace(write_trace(tmp_path / "t.csv", rows), days=1.5)
    assert (sc.step_s, sc.stale_s) == (600, 1800)
    result = run_all(sc, [DynamicMemory()])["dynamic-memory"]
    assert result.fresh_signals > 0 and result.resizes > 0 and not result.warnings()


def test_the_report_says_whom_a_short_pool_left_short() -> None:
    sc = small_node()
    results = run_all(sc, [p for p in policies(sc.step_s) if p.name in ("dynamic-memory", "static", "vpa")])
    rows = {row["policy"]: row for row in summarise(sc, results)["policies"]}
    for name, row in rows.items():
        tl = results[name].timeline
        by_weight = row["short_by_weight"]
        assert list(by_weight) == ["9000", "5000", "1000"]  # heaviest first
        for weight, metal in (("9000", "gold"), ("5000", "silver"), ("1000", "bronze")):
            short = sum(d > a for vm in (f"vm-{metal}-1", f"vm-{metal}-2")
                        for d, a in zip(tl.demand[vm], tl.assigned[vm], strict=True))
            assert by_weight[weight] == pytest.approx(short / (2 * len(tl.t)), abs=1e-5)
        # two VMs of each weight: the table's pressure is the mean of the three
        assert sum(by_weight.values()) / 3 == pytest.approx(row["pressure_fraction"], abs=1e-4)
    assert set(rows["static"]["short_by_weight"].values()) == {0.0}
    ours = rows["dynamic-memory"]["short_by_weight"]
    assert ours["9000"] < ours["5000"] < ours["1000"]


def test_a_scenario_of_one_weight_has_no_weight_figures() -> None:
    sc = burst()
    report = summarise(sc, run_all(sc, [DynamicMemory()]))
    assert "short_by_weight" not in report["policies"][0]
