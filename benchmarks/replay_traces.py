"""Memory saved on real traces: the month of ../shared/traces replayed through every policy
(ours, which learns each VM's setting as the operator does by default, and the baselines of
peers.md: the same engine code the operator runs), plus ours with learnPerVM: false at several
buffer settings as a curve, the oracle that knows the future as the physical limit, and the offline
optimum's frontier: the least memory at each budget of own resizes (every resize is a migration),
bare and keeping the default 20 % buffer above usage, and the time-of-day option. Two worker
processes share the loaded traces (fork), one replay each at a time.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import asdict, replace
from typing import Any

from benchmarks.common import RESULTS, TRACES, say
from dynamic_memory.model import PolicyParams
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.sim.optimum import FrontierPoint, VMOptimum, budgets, fleet_optimum, frontier
from dynamic_memory.sim.per_vm_setting import replay_per_vm_setting
from dynamic_memory.sim.replay import SLOT_S, replay, replay_oracle
from dynamic_memory.sim.report import policies
from dynamic_memory.sim.traces import VMTrace, load_traces

TRACE = TRACES / "bitbrains-rnd-2013-07.csv.gz"
BUFFERS = (5, 10, 20, 50, 100)
"""Our bufferPercent settings on the curve (20 is the default)."""
QUICK_VMS = 50
FIXED = "learnPerVM: false"
"""Our engine with one setting for every VM (minimumBuffer 1Gi, window 8h): the default until 2026-11-29."""
TIME_OF_DAY = {"timeOfDay, minimumBuffer 512Mi, learnPerVM: false": 512 * MIB,
               "timeOfDay, minimumBuffer 1Gi, learnPerVM: false": GIB}
"""Our engine with its time-of-day option, at two minimum buffers (see the README)."""
OPTIONS = tuple(TIME_OF_DAY)
"""Our engine's options, drawn as diamonds."""
STAR: dict[str, Any] = {"color": "gold", "markeredgecolor": "black", "markersize": 15, "zorder": 4}
"""The default policy's mark, in both panels: no baseline's colour."""
OURS = "dynamic-memory (the default: learnPerVM, bufferPercent 20)"
"""The default policy's label, beside its mark."""

_traces: list[VMTrace] = []


BUDGET_MAX = 4.0
"""The frontier's largest budget of own resizes per VM-day."""
MARGIN = 20
"""The second frontier keeps the default bufferPercent above every sample's usage."""


def _one(job: tuple[str, int], workers: int = 1) -> dict[str, Any]:
    """One replay; `workers` > 1 only outside the pool (its processes cannot start their own)."""
    name, buffer = job
    if name == "oracle":
        return replay_oracle(_traces).as_dict()
    if name == "optimum":
        return {"policy": "optimum", "vms": fleet_optimum(_traces, BUDGET_MAX, buffer)}
    params = replace(PolicyParams(startup=0, minimum=0, maximum=2**62), buffer_percent=buffer)
    label = None
    if name == FIXED:
        label, name = name, "dynamic-memory"
    if name in TIME_OF_DAY:  # our engine, with the option on
        params = replace(params, time_of_day=True, minimum_buffer=TIME_OF_DAY[name])
        label, name = name, "dynamic-memory"
    policy = {p.name: p for p in policies(SLOT_S)}[name]
    result = replay(_traces, policy, params, workers=workers).as_dict()
    return {**result, "policy": label or result["policy"], "buffer_percent": buffer}


def plot(points: dict[str, dict[str, Any]], curve: list[dict[str, Any]], fronts: tuple[list[FrontierPoint], ...],
         title: str) -> None:
    """Left: memory_ratio against pressure_fraction, each policy a point, ours a curve over the
    buffer; lower left is better on both; each buffer label is tied to its point by a line, because
    the smallest buffers sit almost on one point. Right: memory_ratio against own resizes per
    VM-day, with the offline optimum's frontier: how far each policy is from the least memory its
    migrations could buy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 6), layout="constrained", width_ratios=(1.15, 1))
    xs = [c["pressure_fraction"] for c in curve]
    ys = [c["memory_ratio"] for c in curve]
    ax.plot(xs, ys, "o-", color="tab:blue", label=f"{FIXED} at bufferPercent …", zorder=3)
    for i, c in enumerate(sorted(curve, key=lambda c: -c["memory_ratio"])):  # labels up and left, in order
        ax.annotate(f"{c['buffer_percent']}%", (c["pressure_fraction"], c["memory_ratio"]),
                    textcoords="offset points", xytext=(-70 - 6 * i, 34 - 17 * i), fontsize=8, color="tab:blue",
                    ha="right", va="center", arrowprops={"arrowstyle": "-", "color": "tab:blue", "lw": 0.6})
    ours = points["dynamic-memory"]
    ax.plot(ours["pressure_fraction"], ours["memory_ratio"], "*", label=OURS, **STAR)
    colors = {}
    for name, p in points.items():
        if name in ("dynamic-memory", "oracle", FIXED):
            continue
        (mark,) = ax.plot(p["pressure_fraction"], p["memory_ratio"], "D" if name in OPTIONS else "s",
                          markersize=7, label=name, zorder=3)
        colors[name] = mark.get_color()
    _frontier(bx, points, curve, fronts, colors)
    ax.set_xscale("symlog", linthresh=1e-4)
    ax.set_xlim(-1e-5, 2 * max(max(xs), *(p["pressure_fraction"] for p in points.values())))
    ax.set_ylim(0, 1.08)
    ax.annotate("better: less memory\nand less pressure", xy=(0.03, 0.04), xytext=(0.2, 0.22),
                xycoords="axes fraction", textcoords="axes fraction", fontsize=9, color="darkgreen",
                ha="center", arrowprops={"arrowstyle": "->", "color": "darkgreen", "lw": 1.5})
    ax.set_xlabel("pressure_fraction: share of samples with demand above assigned (linear below 1e-4, log above)")
    ax.set_ylabel("memory_ratio: assigned ÷ provisioned")
    ax.set_title("memory against pressure", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=11)
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "replay.png", dpi=120)
    plt.close(fig)


def _frontier(bx: Any, points: dict[str, dict[str, Any]], curve: list[dict[str, Any]],
              fronts: tuple[list[FrontierPoint], ...], colors: dict[str, str]) -> None:
    """memory_ratio against own resizes per VM-day: the optimum's frontiers (bare, and keeping the
    default buffer) and every policy."""
    bare, kept = fronts
    bx.plot([f.own_resizes_per_vm_day for f in bare], [f.memory_ratio for f in bare], "-", color="black",
            label="offline optimum: the least memory with that many own resizes")
    bx.plot([f.own_resizes_per_vm_day for f in kept], [f.memory_ratio for f in kept], "--", color="black",
            label=f"offline optimum keeping {MARGIN}% above usage (the default bufferPercent)")
    bx.plot([c["own_resizes_per_vm_day"] for c in curve], [c["memory_ratio"] for c in curve], "o-", color="tab:blue",
            label=f"{FIXED} at bufferPercent 5 … 100", zorder=3)
    fixed = points[FIXED]
    bx.annotate("20%", (fixed["own_resizes_per_vm_day"], fixed["memory_ratio"]), textcoords="offset points",
                xytext=(-60, -30), fontsize=8, color="tab:blue", ha="right",
                arrowprops={"arrowstyle": "-", "color": "tab:blue", "lw": 0.6})
    ours = points["dynamic-memory"]
    bx.plot(ours["own_resizes_per_vm_day"], ours["memory_ratio"], "*", label=OURS, **STAR)
    for name, color in colors.items():
        p = points[name]
        if p["own_resizes_per_vm_day"] > 0:  # a policy that never resizes has no place on a log scale
            bx.plot(p["own_resizes_per_vm_day"], p["memory_ratio"], "D" if name in OPTIONS else "s",
                    markersize=7, color=color, label=name, zorder=3)
    bx.text(0.02, 0.02, "the optimum never lets usage exceed what is assigned; a policy near or below it\n"
            f"pays in pressure (left panel). Dashed: the same, with {MARGIN} % above usage at every sample, as if the\n"
            "buffer were never used. static (no resizes, ratio 1) is off this log scale.",
            transform=bx.transAxes, fontsize=8, va="bottom")
    bx.set_xscale("log")
    bx.set_xlabel("own resizes per VM-day (each a live migration; not those the trace forced), log scale")
    bx.set_ylabel("memory_ratio: assigned ÷ provisioned")
    bx.set_ylim(0, 1.08)
    bx.set_title("memory against migrations", fontsize=10)
    bx.grid(True, alpha=0.3, which="both")
    bx.legend(fontsize=8, loc="center right")  # upper right hid proxmox (3 own resizes, ratio 0.8)


def run(quick: bool = False) -> dict[str, Any]:
    """Every policy's three figures; the plot."""
    global _traces
    started = time.perf_counter()
    _traces = load_traces(TRACE)
    load_s = time.perf_counter() - started
    if quick:
        _traces = _traces[:QUICK_VMS]
    # the default policy alone first, in this process: what `dynamic-memory replay TRACE` costs (it
    # shares its candidates' days out over the machine's cores itself)
    base = PolicyParams(startup=0, minimum=0, maximum=2**62)
    ours: dict[str, Any] = {**replay_per_vm_setting(_traces, base).as_dict(), "buffer_percent": 20}
    month_s = None if quick else load_s + ours["seconds"]
    if month_s is not None:
        say(f"replay: the whole month through the default policy, alone: {month_s:.1f} s (reading the trace "
            f"{load_s:.1f} s, the candidates' days and the replay {ours['seconds']:.1f} s; target < 60 s)")
    jobs = [("optimum", 0), ("optimum", MARGIN)] + [(p.name, 20) for p in policies(SLOT_S)] + [("oracle", 0)]
    jobs += [(FIXED, b) for b in BUFFERS] + [(name, 20) for name in TIME_OF_DAY]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_one, [j for j in jobs if j != ("dynamic-memory", 20)], chunksize=1)
    results.insert(jobs.index(("dynamic-memory", 20)), ours)
    optimum: list[VMOptimum] = results.pop(0)["vms"]
    kept: list[VMOptimum] = results.pop(0)["vms"]
    del jobs[:2]
    points = {r["policy"]: r for r, (_, b) in zip(results, jobs, strict=True) if b in (20, 0)}
    front, kept_front = (frontier(vms, budgets(high=BUDGET_MAX)) for vms in (optimum, kept))
    own, fixed_own = (points[name]["own_resizes_per_vm_day"] for name in ("dynamic-memory", FIXED))
    (at_ours,), (at_fixed,) = frontier(optimum, [own]), frontier(optimum, [fixed_own])
    (kept_at_ours,), (kept_at_fixed,) = frontier(kept, [own]), frontier(kept, [fixed_own])
    curve = sorted((r for r in results if r["policy"] == FIXED), key=lambda r: r["buffer_percent"])
    head = results[0]
    title = (f"{TRACE.name}: {head['vms']} VMs, {head['vm_days']:.0f} VM-days"
             + (f" (quick: first {QUICK_VMS} VMs)" if quick else ""))
    plot(points, curve, (front, kept_front), title)
    summary = {name: {k: p[k] for k in ("memory_ratio", "pressure_fraction", "resizes_per_vm_day",
                                        "own_resizes_per_vm_day", "migrated_gib_per_vm_day", "slack")}
               for name, p in points.items()}
    ratio = {name: points[name]["memory_ratio"] for name in ("dynamic-memory", FIXED)}
    result = {"trace": TRACE.name, "vms": head["vms"], "vm_days": head["vm_days"], "quick": quick,
              "policies": points, "buffer_curve": curve, "replay": summary,
              "optimum_frontier": [asdict(f) for f in front], "optimum_at_our_budget": asdict(at_ours),
              "ours_over_optimum": ratio["dynamic-memory"] / at_ours.memory_ratio,
              "optimum_at_fixed_budget": asdict(at_fixed), "fixed_over_optimum": ratio[FIXED] / at_fixed.memory_ratio,
              "optimum_margin_percent": MARGIN, "optimum_kept_frontier": [asdict(f) for f in kept_front],
              "optimum_kept_at_our_budget": asdict(kept_at_ours),
              "ours_over_optimum_kept": ratio["dynamic-memory"] / kept_at_ours.memory_ratio,
              "optimum_kept_at_fixed_budget": asdict(kept_at_fixed),
              "fixed_over_optimum_kept": ratio[FIXED] / kept_at_fixed.memory_ratio,
              "month_replay_s": month_s, "trace_load_s": load_s,
              "seconds": time.perf_counter() - started}
    say(f"replay: the offline optimum at our own {own:.3f} resizes/VM-day: memory_ratio "
        f"{at_ours.memory_ratio:.4f} (it used {at_ours.own_resizes_per_vm_day:.3f}); ours is "
        f"{result['ours_over_optimum']:.2f}× that")
    say(f"replay: the offline optimum at {FIXED}'s own {fixed_own:.3f}: memory_ratio "
        f"{at_fixed.memory_ratio:.4f}; {FIXED} is {result['fixed_over_optimum']:.2f}× that")
    say(f"replay: the optimum keeping {MARGIN}% above usage: {kept_at_ours.memory_ratio:.4f} at our budget (ours "
        f"{result['ours_over_optimum_kept']:.2f}× that), {kept_at_fixed.memory_ratio:.4f} at {FIXED}'s "
        f"({result['fixed_over_optimum_kept']:.2f}× that)")
    for name, p in points.items():
        say(f"replay: {name:>50}: memory_ratio {p['memory_ratio']:.4f}, pressure_fraction "
            f"{p['pressure_fraction']:.5f}, resizes/VM-day {p['resizes_per_vm_day']:.3f}")
    for c in curve:
        say(f"replay: {FIXED} bufferPercent {c['buffer_percent']:>3}: {c['memory_ratio']:.4f} / "
            f"{c['pressure_fraction']:.5f} / {c['resizes_per_vm_day']:.3f}")
    return result

