"""Run the benchmarks: `python3 -m benchmarks [--quick] [--only NAME ...]`.

Writes benchmarks/results/<name>.json, summary.json (every headline figure by name) and
results.md (the table the README links to). Figures from benchmarks not run this time are taken
from their last JSON, and the table says when each was measured.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import engine_scale, footprint, prometheus_reads, reaction, replay_traces
from benchmarks.common import RESULTS, read_json, say, write_json

BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "engine_scale": engine_scale.run,
    "prometheus_reads": prometheus_reads.run,
    "reaction": reaction.run,
    "footprint": footprint.run,
    "replay": replay_traces.run,
}

Met = Callable[[float, dict[str, Any]], bool]

# (key in summary.json and in its benchmark's JSON, benchmark, target, met given the summary or None, format)
FIGURES: list[tuple[str, str, str, Met | None, str]] = [
    ("engine_10k_ms", "engine_scale", "< 50 ms", lambda v, s: v < 50, "{:.1f} ms"),
    ("engine_100k_over_10k", "engine_scale", "≤ 11×", lambda v, s: v <= 11, "{:.2f}×"),
    ("prom_speedup_1k", "prometheus_reads", "≥ 100×", lambda v, s: v >= 100, "{:.0f}×"),
    ("prom_batched_10k_ms", "prometheus_reads", "< 300 ms", lambda v, s: v < 300, "{:.0f} ms"),
    ("reaction_p95_s", "reaction", "≤ reaction_bound_s",
     lambda v, s: s["reaction_bound_s"] is not None and v <= s["reaction_bound_s"], "{:.2f} s"),
    ("reaction_bound_s", "reaction", "scrape + interval + 0.5 s", None, "{:.1f} s"),
    ("operator_rss_mib", "footprint", "≤ 150 MiB", lambda v, s: v <= 150, "{:.0f} MiB"),
    ("operator_cpu_share", "footprint", "≤ 10 % of a core", lambda v, s: v <= 0.10, "{:.1%}"),
    ("api_list_per_cycle", "footprint", "0", lambda v, s: v == 0, "{:.2f}"),
    ("api_writes_per_changed_vm", "footprint", "1", lambda v, s: v == 1, "{:.2f}"),
    ("month_replay_s", "replay", "< 60 s", lambda v, s: v < 60, "{:.1f} s"),
]


def summarise(results: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    """Every headline figure by name (None when its benchmark never ran)."""
    out: dict[str, Any] = {}
    for key, bench, *_ in FIGURES:
        out[key] = (results.get(bench) or {}).get(key)
    out["replay"] = (results.get("replay") or {}).get("replay", {})
    return out


def notes(results: dict[str, dict[str, Any] | None]) -> list[str]:
    """One line per benchmark: the conditions and the profile behind its headline figure."""
    out = []
    if engine := results.get("engine_scale"):
        out.append(f"engine: one `plan` pass, medians, the sizes taking turns (each timed pass right after an "
                   f"untimed one of its size); from 10k to 100k VMs the pass grows "
                   f"{engine['engine_100k_over_10k']:.2f}×, its Python calls "
                   f"{engine.get('calls_100k_over_10k', 0):.2f}×, "
                   f"and a loop that only reads each VM once {engine.get('touch_100k_over_10k', 0):.2f}× (this "
                   f"machine's caches; see `profile_10k` in engine_scale.json).")
        if by := engine.get("allocators_10k_ms"):  # absent from results written before it was measured
            out.append("engine, by allocator: the 10k pass in fresh processes taking turns, medians: on Python's "
                       f"allocator {', '.join(f'{t:.1f}' for t in by['pymalloc'])} ms, on the operator image's "
                       f"(deploy/Dockerfile) {', '.join(f'{t:.1f}' for t in by['image'])} ms.")
    if prom := results.get("prometheus_reads"):
        big = prom["10000"]
        queries = ", ".join(f"{k} {v:.0f} ms" for k, v in big["per_query_ms"].items() if not k.startswith("seed"))
        out.append(f"prometheus: {big['history_hours']:g} h of backfilled history; at 10k VMs one query at a time: "
                   f"{queries or 'not profiled (quick)'}; the first pass, which reads every window once: "
                   f"{big['first_pass_with_window_s']:.1f} s; naive timed on {big['naive_vms_timed']:,} VMs.")
    if reaction := results.get("reaction"):
        out.append(f"reaction: {reaction['trials']} trials, p50 {reaction['p50_s']:.2f} s, "
                   f"max {reaction['max_s']:.2f} s; "
                   f"scrape {reaction['scrape_s']:g} s, interval {reaction['interval_s']:g} s.")
    if fp := results.get("footprint"):
        out.append(f"footprint: {fp['vms']:,} VMs, {fp['policies']} policies, {fp['passes']:.0f} passes in "
                   f"{fp['duration_s']:.0f} s (a pass {fp['mean_pass_s'] * 1000:.0f} ms), on the image's allocator "
                   f"({' '.join(f'{k}={v}' for k, v in (fp.get('allocator') or {}).items()) or 'not recorded'}); "
                   f"the operator's requests at "
                   f"steady state: {fp['steady_requests_by_operator'] or 'none'}; after {fp['changed_vms']} VMs' "
                   f"demand rose: {fp['requests_by_operator_after_change']}.")
    if (rp := results.get("replay")) and rp.get("month_replay_s") is not None:
        out.append(f"replay: the month through the default policy alone, as `dynamic-memory replay TRACE` runs it: "
                   f"reading the trace {rp['trace_load_s']:.1f} s, each VM's learnt days and the replay "
                   f"{rp['month_replay_s'] - rp['trace_load_s']:.1f} s; then the other policies and buffers, "
                   f"two processes side by side ({rp['seconds']:.0f} s in all).")
    return out


def table(summary: dict[str, Any], results: dict[str, dict[str, Any] | None]) -> str:
    """results.md: the figures against their targets, then the replay."""
    lines = ["# Benchmark results", "",
             "Generated by `bash benchmarks/run` (see the README); every figure is in `summary.json`.", "",
             "| figure | value | target | met | run |", "|---|---|---|---|---|"]
    for key, bench, target, met, fmt in FIGURES:
        value = summary[key]
        r = results.get(bench) or {}
        when = f"{r.get('measured_at', '?')}{' quick' if r.get('quick') else ''}"
        ok = "" if met is None else "—" if value is None else "yes" if met(value, summary) else "no"
        lines.append(f"| `{key}` | {'not run' if value is None else fmt.format(value)} | {target} | {ok} | {when} |")
    lines += ["", "## Where the figures come from", ""] + [f"- {note}" for note in notes(results)]
    replay = results.get("replay") or {}
    if replay:
        lines += ["", f"## Memory saved on real traces ({replay['trace']}: {replay['vms']} VMs, "
                      f"{replay['vm_days']:.0f} VM-days{', quick' if replay.get('quick') else ''})", "",
                  "| policy | memory_ratio | pressure_fraction | resizes_per_vm_day | own resizes/VM-day "
                  "| migrated GiB/VM-day | slack |", "|---|---|---|---|---|---|---|"]
        for name, p in replay["replay"].items():
            own = p.get("own_resizes_per_vm_day")  # absent from results written before these columns
            lines.append(f"| {name} | {p['memory_ratio']:.4f} | {p['pressure_fraction']:.5f} | "
                         f"{p['resizes_per_vm_day']:.3f} | "
                         + (f"{own:.3f} | {p['migrated_gib_per_vm_day']:.1f} | {p['slack']:.3f} |" if own is not None
                            else "— | — | — |"))
        if at := replay.get("optimum_at_our_budget"):
            lines += ["", f"The offline optimum at our own {at['budget']:.3f} resizes/VM-day keeps memory_ratio "
                          f"{at['memory_ratio']:.4f} (using {at['own_resizes_per_vm_day']:.3f}): ours is "
                          f"{replay['ours_over_optimum']:.2f}× that. Its frontier is the right panel of replay.png."]
        if (fat := replay.get("optimum_at_fixed_budget")) and replay.get("fixed_over_optimum"):
            lines += ["", f"At the own {fat['budget']:.3f} resizes/VM-day of our engine with learnPerVM: false "
                          f"(one setting for every VM) the optimum keeps {fat['memory_ratio']:.4f}: that engine is "
                          f"{replay['fixed_over_optimum']:.2f}× it."]
        if (kat := replay.get("optimum_kept_at_our_budget")) and (kaf := replay.get("optimum_kept_at_fixed_budget")):
            lines += ["", f"Keeping {replay['optimum_margin_percent']}% above every sample's usage (the default "
                          f"bufferPercent, never used), the optimum keeps {kat['memory_ratio']:.4f} at our "
                          f"budget (ours {replay['ours_over_optimum_kept']:.2f}× that) and "
                          f"{kaf['memory_ratio']:.4f} at learnPerVM: false's ("
                          f"{replay['fixed_over_optimum_kept']:.2f}× that): the dashed frontier of replay.png."]
        lines += ["", "Ours with learnPerVM: false, by `bufferPercent` (20 is the default):", "",
                  "| bufferPercent | memory_ratio | pressure_fraction | resizes_per_vm_day |", "|---|---|---|---|"]
        for c in replay["buffer_curve"]:
            lines.append(f"| {c['buffer_percent']} | {c['memory_ratio']:.4f} | {c['pressure_fraction']:.5f} | "
                         f"{c['resizes_per_vm_day']:.3f} |")
        lines += ["", "![memory_ratio against pressure_fraction](replay.png)"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run, then write the summary and the table."""
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter: under 5 minutes")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    for name in args.only or BENCHMARKS:
        t0 = time.perf_counter()
        say(f"== {name}{' (quick)' if args.quick else ''}")
        result = BENCHMARKS[name](args.quick)
        result.update(quick=args.quick, measured_at=time.strftime("%Y-%m-%d %H:%M"), machine=platform.node(),
                      benchmark_seconds=time.perf_counter() - t0)
        write_json(name, result)
        say(f"== {name}: {time.perf_counter() - t0:.0f} s")
    results = {name: read_json(name) for name in BENCHMARKS}
    summary = summarise(results)
    write_json("summary", summary)
    (RESULTS / "results.md").write_text(table(summary, results))
    say(f"benchmarks: {time.perf_counter() - started:.0f} s; {RESULTS / 'summary.json'}, {RESULTS / 'results.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
