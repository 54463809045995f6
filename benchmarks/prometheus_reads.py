"""Prometheus reads: the operator's batched queries against one query set per VM, same Prometheus,
same data, same run.

Debian's Prometheus scrapes the stand-in's virt-handler metrics for 1,000 and then 10,000 guests,
on top of 8 hours of per-minute history backfilled with promtool, so the scale-down window's
subquery walks a full window as it does in production (a fresh Prometheus would flatter it).
The operator's way: a pass sends 3 instant queries per group of policies (fresh demand, low
headroom, paging), side by side, and keeps each VM's scale-down window in memory, read from Prometheus once (the first
pass, timed apart as `seed_ms`). The naive way asks every statistic of every VM every pass, the
window included: `queries()` narrowed to one VM (`name="vm-…"`), 5 queries per VM.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import median, say, timed
from dynamic_memory.model import PolicyParams
from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.quantity import GIB
from dynamic_memory.sources.prometheus import (
    AVAILABLE,
    USABLE,
    Group,
    MetricsView,
    PrometheusSettings,
    PrometheusSource,
    pass_queries,
    queries,
    seed_queries,
)
from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.prometheus import Prometheus, free_port

NAMESPACES = 20
HISTORY_S = 8 * 3600
SCRAPE_S = 5.0
LOOKBACK_S = 300
"""Prometheus' instant-query lookback: the backfill ends before it, where a real Prometheus has
its persisted blocks (hours old) while the last hours live in the head."""


def guests(n: int) -> list[tuple[str, str]]:
    """(namespace, name) of n guests over NAMESPACES namespaces."""
    return [(f"bench-{i % NAMESPACES}", f"vm-{i}") for i in range(n)]


def backfill(keys: list[tuple[str, str]], target: str, tsdb: Path, workdir: Path, seed: int = 6) -> float:
    """HISTORY_S of per-minute available/usable samples as TSDB blocks (promtool); seconds taken.
    The series carry the scrape's job and instance labels: the same series the scrape continues."""
    started = time.perf_counter()
    rng = random.Random(seed)
    end = int(time.time()) - LOOKBACK_S - 60  # as in production, instant queries see only the head block
    text = workdir / "history.om"
    with text.open("w") as out:
        for metric, base in ((AVAILABLE, 8 * GIB), (USABLE, 5 * GIB)):
            out.write(f"# TYPE {metric} gauge\n")
            for ns, name in keys:
                labels = (f'{{instance="{target}",job="kubevirt",name="{name}",namespace="{ns}",'
                          f'node="node-{int(name.rsplit("-", 1)[1]) % 50}"}}')
                out.writelines(f"{metric}{labels} {base + rng.randrange(GIB // 4)} {t}\n"
                               for t in range(end - HISTORY_S, end, 60))
        out.write("# EOF\n")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(text), str(tsdb)],
                   check=True, capture_output=True)
    text.unlink()
    return time.perf_counter() - started


def serve(metrics: GuestMetrics, target: str) -> None:
    """Serve the guests' metrics until killed (in a child process)."""
    metrics.serve(int(target.rsplit(":", 1)[1]))
    while True:
        time.sleep(3600)


def naive_read(source: PrometheusSource, group: Group, keys: list[tuple[str, str]], now: float) -> dict[str, Any]:
    """The same signals, asked one VM at a time."""
    out: dict[str, Any] = {}
    for ns, name in keys:
        one = Group(group.spec, MetricsView(matchers=f'name="{name}"'), frozenset({ns}))
        out.update(source.signals({one: [f"{ns}/{name}"]}, now)[0])
    return out


def measure(n: int, naive_sample: int, repeat: int, profile_repeat: int = 3) -> dict[str, Any]:
    """One Prometheus with n guests: batched read time, per-query time, naive time per VM."""
    workdir = Path(tempfile.mkdtemp(prefix=f"dm-prom-{n}-"))
    try:
        keys = guests(n)
        target = f"127.0.0.1:{free_port()}"
        backfill_s = backfill(keys, target, workdir / "tsdb", workdir)
        metrics = GuestMetrics()
        for i, (ns, name) in enumerate(keys):
            metrics.set(ns, name, node=f"node-{i % 50}", available=8 * GIB, demand=2 * GIB + i)
        # its own process: rendering 5n series for each scrape must not take this one's GIL
        exporter = multiprocessing.get_context("fork").Process(target=serve, args=(metrics, target), daemon=True)
        exporter.start()
        prom = Prometheus(workdir, [target], scrape_s=SCRAPE_S)
        try:
            prom.wait_for(f'count(timestamp({AVAILABLE}) > time() - 10) == {n}', timeout_s=120)
            spec = DynamicMemory().signal_spec(PolicyParams(startup=2 * GIB, minimum=2 * GIB, maximum=32 * GIB))
            group = Group(spec, MetricsView(), frozenset(ns for ns, _ in keys))
            source = PrometheusSource(PrometheusSettings(prom.url, timeout_s=120))
            all_keys = [f"{ns}/{name}" for ns, name in keys]
            now = time.time()
            started = time.perf_counter()
            signals = source.signals({group: all_keys}, now)[0]  # the first pass reads the windows too
            seed_s = time.perf_counter() - started
            known = sum(s.latest is not None for s in signals.values())
            history = sum(s.enough_history for s in signals.values())
            batched = timed(lambda: source.signals({group: all_keys}, time.time())[0], repeat)
            per_query = {}
            profiled = {**queries(group), **{f"seed-{ago / 3600:g}h": q for ago, q in seed_queries(group).items()}}
            for purpose, promql in profiled.items() if profile_repeat else ():
                per_query[purpose] = median(timed(partial(source.client.custom_query, promql), profile_repeat)) * 1000
            sample = keys[:: max(1, n // naive_sample)][:naive_sample]
            stateless = PrometheusSource(PrometheusSettings(prom.url, timeout_s=120), keep_windows=False)
            whole = timed(lambda: stateless.signals({group: all_keys}, time.time())[0], profile_repeat) \
                if profile_repeat else []
            started = time.perf_counter()
            naive = naive_read(stateless, group, sample, now)
            naive_s = time.perf_counter() - started
            signals = source.signals({group: all_keys}, now)[0]
            agree = all(naive[k].latest == signals[k].latest and naive[k].peak == signals[k].peak
                        and naive[k].enough_history == signals[k].enough_history for k in naive)
        finally:
            prom.stop()
            exporter.kill()
        naive_total = naive_s / len(sample) * n
        result = {"vms": n, "series_scraped": 5 * n, "history_hours": HISTORY_S / 3600, "backfill_s": backfill_s,
                  "batched_ms": median(batched) * 1000, "batched_min_ms": min(batched) * 1000,
                  "batched_queries": len(pass_queries(group)), "per_query_ms": per_query,
                  "first_pass_with_window_s": seed_s,
                  "batched_every_window_ms": median(whole) * 1000 if whole else None,
                  "naive_queries": len(queries(group)) * n, "naive_vms_timed": len(sample), "naive_s": naive_total,
                  "naive_extrapolated": len(sample) < n, "speedup": naive_total / median(batched),
                  "vms_with_demand": known, "vms_with_history": history, "naive_agrees": agree}
        say(f"prometheus: {n:>6,} VMs: batched {result['batched_ms']:7.1f} ms ({result['batched_queries']} queries), "
            f"naive {naive_total:7.2f} s ({len(queries(group)) * n:,} queries"
            + (f", timed on {len(sample):,} VMs" if len(sample) < n else "") + f"): {result['speedup']:,.0f}×; "
            f"{known:,} with demand, {history:,} with 2h of history; answers agree: {agree}")
        say(f"prometheus:   first pass (reads every window once): {seed_s:.2f} s"
            + (f"; batched but asking every window every pass (no window cache): {median(whole) * 1000:.0f} ms"
               if whole else ""))
        if per_query:
            say("prometheus:   per query: " + ", ".join(f"{k} {v:.0f} ms" for k, v in per_query.items()))
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(quick: bool = False) -> dict[str, Any]:
    """Both sizes; the speedup at 1k and the batched time at 10k."""
    small = measure(1_000, naive_sample=1_000, repeat=5 if quick else 11, profile_repeat=1 if quick else 3)
    large = measure(10_000, naive_sample=200 if quick else 1_000, repeat=5 if quick else 9,
                    profile_repeat=0 if quick else 3)
    result = {"1000": small, "10000": large, "prom_speedup_1k": small["speedup"],
              "prom_batched_10k_ms": large["batched_ms"],
              "targets": {"prom_speedup_1k": ">= 100", "prom_batched_10k_ms": "< 300"}}
    say(f"prometheus: speedup at 1k {small['speedup']:,.0f}× (target ≥ 100×); batched at 10k "
        f"{large['batched_ms']:.0f} ms (target < 300 ms)")
    return result

