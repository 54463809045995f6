"""The offline optimum against a brute force written here from its definition: every choice of change
hours, every candidate level, each sample clamped to KubeVirt's bounds as the replay clamps it."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from dynamic_memory.sim.optimum import frontier, optimum
from dynamic_memory.sim.traces import VMTrace

GIB = 2**30
HOUR = 3600


def trace(usage: list[int], provisioned: list[int], per_hour: int = 2) -> VMTrace:
    ts = [h * HOUR + k * (HOUR // per_hour) for h in range(len(usage) // per_hour) for k in range(per_hour)]
    return VMTrace("ns/vm", array("q", ts), array("q", provisioned), array("q", usage))


def brute_force(t: VMTrace, changes: int, margin: int = 0) -> float:
    """min Σ assigned: the VM starts at its provisioned size; at most `changes` times, at the start of
    an hour, it takes any level; each sample is assigned that level clamped to [min(1Gi, prov), prov]
    and must hold the sample's usage plus `margin` percent of it (capped at prov; a missing sample,
    usage 0, holds anything)."""
    hours = sorted({ts // HOUR for ts in t.ts})
    samples = list(zip(t.ts, t.provisioned, t.usage, strict=True))
    wants = {(u, p): min(u + u * margin / 100, p) for _, p, u in samples}
    candidates = sorted({p for p in t.provisioned} | {wants[u, p] for _, p, u in samples if u > 0} | {0})

    def cost_at(level: float, group: list[tuple[int, int, int]]) -> float | None:
        total = 0.0
        for _, prov, usage in group:
            got = min(max(level, min(GIB, prov)), prov)
            if usage > 0 and got < wants[usage, prov]:
                return None
            total += got
        return total

    best = float("inf")
    for k in range(changes + 1):
        for starts in itertools.combinations(hours, k):
            ends = [*starts, hours[-1] + 1]
            kept = [s for s in samples if s[0] // HOUR < ends[0]]  # before the first change
            total = cost_at(t.provisioned[0], kept)
            for lo, hi in itertools.pairwise(ends):
                if total is None:
                    break
                group = [s for s in samples if lo <= s[0] // HOUR < hi]
                costs = [c for c in (cost_at(level, group) for level in candidates) if c is not None]
                total = total + min(costs) if costs else None
            if total is not None:
                best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(12))
def test_the_optimum_is_the_cheapest_assignment(seed: int) -> None:
    rng = random.Random(seed)
    hours, per_hour = rng.randint(3, 7), rng.choice((1, 2, 3))
    prov = [rng.choice((2, 4, 8)) * GIB] * (hours * per_hour)
    if seed % 3 == 0:  # the provisioned size moves: KubeVirt's bounds move with it
        cut = rng.randrange(len(prov))
        prov = prov[:cut] + [rng.choice((1, 2, 6)) * GIB] * (len(prov) - cut)
    usage = [0 if rng.random() < 0.1 else rng.randint(GIB // 4, p) for p in prov]
    t = trace(usage, prov, per_hour)
    got = optimum(t, 3)
    for k in range(4):
        assert got.cost[k] == brute_force(t, k), (k, usage, prov)
    kept = optimum(t, 3, margin_percent=20)  # a policy's bufferPercent kept above every sample
    for k in range(4):
        assert kept.cost[k] == pytest.approx(brute_force(t, k, margin=20), rel=1e-12), (k, usage, prov)


def test_a_flat_vm_changes_once_and_a_nightly_peak_is_planned_for() -> None:
    flat = optimum(trace([3 * GIB] * 12, [8 * GIB] * 12), 5)
    assert flat.best(5) == (12 * 3 * GIB, 1)  # down to its usage once, never again
    nightly = [GIB] * 8 + [6 * GIB] * 4 + [GIB] * 8  # hours 4 and 5 peak
    peaked = optimum(trace(nightly, [8 * GIB] * 20), 4)
    assert peaked.best(1) == ((12 * 8 + 8 * 1) * GIB, 1)  # keep 8Gi through the peak, then down: not 6Gi all day
    assert peaked.best(3) == ((16 * 1 + 4 * 6) * GIB, 3)  # down, up for the peak, down again
    assert peaked.best(4)[1] == 3  # a fourth change would buy nothing


def test_usage_above_the_starting_size_needs_a_change_whatever_the_budget() -> None:
    t = trace([GIB, GIB, 5 * GIB, 5 * GIB], [4 * GIB, 4 * GIB, 8 * GIB, 8 * GIB])
    assert optimum(t, 0).best(0) == ((4 + 4 + 5 + 5) * GIB, 1)


def test_the_frontier_falls_as_the_budget_grows() -> None:
    rng = random.Random(3)
    vms = [optimum(trace([rng.randint(GIB, 6 * GIB) for _ in range(48)], [8 * GIB] * 48), 12) for _ in range(5)]
    points = frontier(vms, [0.25, 1, 4, 12])
    ratios = [p.memory_ratio for p in points]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > ratios[-1]


def test_replay_optimum_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    rows = ["vm,timestamp_s,memory_provisioned_kib,memory_usage_kib"]
    rows += [f"a,{h * HOUR},{8 * 2**20},{(6 if 4 <= h < 6 else 1) * 2**20}" for h in range(24)]
    path.write_text("\n".join(rows) + "\n")
    run = [sys.executable, "-m", "dynamic_memory", "replay", str(path), "--policy", "optimum"]
    one = json.loads(subprocess.run([*run, "--budget", "3", "--json"], capture_output=True, text=True,
                                    check=True).stdout)
    # 24 hourly samples on one day: budget 3 → down to 1Gi, up to 6Gi for hours 4-5, down again
    assert one["memory_ratio"] == pytest.approx((22 * 1 + 2 * 6) / (24 * 8))
    assert one["own_resizes_per_vm_day"] == pytest.approx(3 / (23 / 24))
    kept = json.loads(subprocess.run([*run, "--budget", "3", "--buffer", "20", "--json"], capture_output=True,
                                     text=True, check=True).stdout)
    assert kept["memory_ratio"] == pytest.approx((22 * 1.2 + 2 * 7.2) / (24 * 8))  # 20% above usage, every hour
    shown = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "knowing the future" in shown and "| budget" in shown
    assert "never below usage + 20%" in subprocess.run([*run, "--buffer", "20"], capture_output=True, text=True,
                                                        check=True).stdout
    refused = subprocess.run([*run, "--policy-file", str(path)], capture_output=True, text=True)
    assert refused.returncode != 0 and "--buffer PERCENT" in refused.stderr
    wrong = subprocess.run([*run[:-2], "--budget", "1"], capture_output=True, text=True)
    assert wrong.returncode != 0 and "--budget is the offline optimum's" in wrong.stderr
