"""The operator's Prometheus source against a real Prometheus scraping KubeVirt-named metrics."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from dynamic_memory.model import DemandSignal
from dynamic_memory.policy.engine import DailyPattern, SignalSpec
from dynamic_memory.quantity import GIB
from dynamic_memory.sources.prometheus import (
    Group,
    MetricsView,
    PrometheusError,
    PrometheusSettings,
    PrometheusSource,
    pass_queries,
    seed_queries,
)
from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.prometheus import Prometheus, free_port

SPEC = SignalSpec(up_window_s=0, down_window_s=30, down_quantile=1.0, min_history_s=5)


def source(prom: Prometheus) -> PrometheusSource:
    return PrometheusSource(PrometheusSettings(prom.url, resolution_s=1))


def group(ns: str, stale_s: float = 5) -> Group:
    return Group(SPEC, MetricsView(stale_s=stale_s), frozenset({ns}))


def wait_until(check: object, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.25)
    raise AssertionError("condition not met in time")


def test_demand_peak_and_history(prometheus: Prometheus, guest_metrics: GuestMetrics) -> None:
    guest_metrics.set("team-peak", "a", available=8 * GIB, demand=2 * GIB)
    guest_metrics.set("team-peak", "b", available=8 * GIB, demand=3 * GIB)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="team-peak"}')
    src, g = source(prometheus), group("team-peak")
    keys = {"team-peak/a", "team-peak/b", "team-peak/missing"}
    first = src.signals({g: keys}, time.time())[0]
    assert first["team-peak/a"].latest == 2 * GIB and first["team-peak/b"].latest == 3 * GIB
    assert first["team-peak/missing"].latest is None  # never seen: unknown, not zero
    guest_metrics.set("team-peak", "a", available=8 * GIB, demand=5 * GIB)
    wait_until(lambda: src.signals({g: keys}, time.time())[0]["team-peak/a"].latest == 5 * GIB)
    guest_metrics.set("team-peak", "a", available=8 * GIB, demand=GIB)
    wait_until(lambda: src.signals({g: keys}, time.time())[0]["team-peak/a"].latest == GIB)
    after = src.signals({g: keys}, time.time())[0]["team-peak/a"]
    assert after.peak == 5 * GIB  # the spike is still in the window
    wait_until(lambda: src.signals({g: keys}, time.time())[0]["team-peak/a"].enough_history)


def test_stale_metrics_make_demand_unknown(prometheus: Prometheus, guest_metrics: GuestMetrics) -> None:
    guest_metrics.set("stale", "gone", available=8 * GIB, demand=2 * GIB)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="stale"}')
    src, g = source(prometheus), group("stale", stale_s=3)
    assert src.signals({g: {"stale/gone"}}, time.time())[0]["stale/gone"].latest == 2 * GIB
    guest_metrics.remove("stale", "gone")
    wait_until(lambda: src.signals({g: {"stale/gone"}}, time.time())[0]["stale/gone"].latest is None)


def test_a_migrated_guest_is_read_from_its_new_node_at_once(prometheus: Prometheus,
                                                            guest_metrics: GuestMetrics) -> None:
    """Every resize migrates: the source node's virt-handler stops exporting the VMI, and its last
    sample must not stand in for the guest's demand (it did for staleAfter, and held shrinks)."""
    guest_metrics.set("moved", "vm", node="node-1", available=2 * GIB, demand=2 * GIB)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="moved"}')
    src, g = source(prometheus), group("moved", stale_s=60)
    assert src.signals({g: {"moved/vm"}}, time.time())[0]["moved/vm"].latest == 2 * GIB
    guest_metrics.set("moved", "vm", node="node-2", available=4 * GIB, demand=GIB)
    wait_until(lambda: src.signals({g: {"moved/vm"}}, time.time())[0]["moved/vm"].latest == GIB, 20)


def test_pressure_needs_low_headroom_and_faults(prometheus: Prometheus, guest_metrics: GuestMetrics) -> None:
    guest_metrics.set("press", "faulting", available=4 * GIB, demand=4 * GIB - 100 * 2**20, major_faults_per_s=500)
    guest_metrics.set("press", "cache-misses", available=8 * GIB, demand=2 * GIB, major_faults_per_s=500)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="press"}')
    src, g = source(prometheus), group("press")
    keys = {"press/faulting", "press/cache-misses"}
    wait_until(lambda: src.signals({g: keys}, time.time())[0]["press/faulting"].pressure)
    assert not src.signals({g: keys}, time.time())[0]["press/cache-misses"].pressure


@pytest.mark.parametrize("vms", [10, 300])
def test_query_count_does_not_grow_with_vms(prometheus: Prometheus, guest_metrics: GuestMetrics, vms: int) -> None:
    ns = f"count{vms}"
    for i in range(vms):
        guest_metrics.set(ns, f"vm-{i}", available=4 * GIB, demand=GIB + i)
    prometheus.wait_for(f'count(kubevirt_vmi_memory_available_bytes{{namespace="{ns}"}}) == {vms}')
    src, g = source(prometheus), group(ns)
    keys = {f"{ns}/vm-{i}" for i in range(vms)}
    src.signals({g: keys}, time.time())[0]  # the first pass also reads each VM's window, in pieces
    assert src.queries_sent == len(pass_queries(g)) + len(seed_queries(g, resolution_s=1))
    sent = src.queries_sent
    signals = src.signals({g: keys}, time.time())[0]
    assert src.queries_sent - sent == len(pass_queries(g)) == 3
    assert sum(s.latest is not None for s in signals.values()) == vms
    stateless = PrometheusSource(PrometheusSettings(prometheus.url, resolution_s=1), keep_windows=False)
    time.sleep(2)  # a second scrape: a subquery's aligned steps may not reach the newest sample yet
    asked, kept = stateless.signals({g: keys}, time.time())[0], src.signals({g: keys}, time.time())[0]

    def seen(signal: DemandSignal) -> tuple[int | None, int | None, bool, bool]:
        peak = max(signal.peak or 0, signal.latest or 0) if signal.latest is not None else signal.peak
        return signal.latest, peak, signal.enough_history, signal.pressure

    assert {k: seen(v) for k, v in asked.items()} == {k: seen(v) for k, v in kept.items()}  # as asking every window


def test_prometheus_down_is_an_error_not_low_demand_and_says_why_in_few_words() -> None:
    src = PrometheusSource(PrometheusSettings(f"http://127.0.0.1:{free_port()}", timeout_s=2))
    signals, failed = src.signals({group("x"): {"x/vm"}}, time.time())
    assert signals == {} and failed[group("x")].unreachable, failed
    # the condition's words: the cause, not urllib3's retry report with the whole query in it
    assert str(failed[group("x")]) == "cannot connect (Connection refused)"
    assert src.ping() == "cannot connect (Connection refused)"
    with pytest.raises(PrometheusError, match=r"^cannot connect \(Connection refused\)$") as raised:
        src.history(['name="vm"'], MetricsView(), time.time() - 3600, time.time(), 60)
    assert raised.value.unreachable


def test_the_time_of_day_query_is_answered(prometheus: Prometheus, guest_metrics: GuestMetrics) -> None:
    """The hourly range query a time-of-day pattern is seeded from is one Prometheus takes; a guest
    with no past days has no pattern (its demand alone sizes it)."""
    # a namespace of its own, waited for by name: another tier's guests may share a namespace
    guest_metrics.set("daily-query", "vm", available=8 * GIB, demand=2 * GIB)
    prometheus.wait_for('kubevirt_vmi_memory_available_bytes{namespace="daily-query", name="vm"}')
    src = source(prometheus)
    g = Group(SignalSpec(0, 30, 1.0, 5, DailyPattern()), MetricsView(stale_s=5), frozenset({"daily-query"}))
    signals, failed = src.signals({g: {"daily-query/vm"}}, time.time())
    assert failed == {}
    assert signals["daily-query/vm"].latest == 2 * GIB
    assert (signals["daily-query/vm"].recurring, signals["daily-query/vm"].soon) == (None, None)


def test_a_restarted_operator_reads_the_time_of_day_from_past_days(tmp_path: Path,
                                                                     guest_metrics: GuestMetrics) -> None:
    """No learning is lost on a restart: three days of guests at 1Gi, written into Prometheus'
    storage as blocks, are the pattern a fresh source reads at its first pass. On two of the days,
    `first` reached 6Gi in this hour of the day (the first of the coming six), `last` in the sixth,
    `before` in the hour before this one: an hourly peak read an hour off, or leaking into the next
    hour, would count the wrong one. Samples a minute apart, half-way between the subquery's steps,
    as a scrape every minute leaves them."""
    now = time.time()
    hour = int(now // 3600)
    peaks = {"first": {hour - 24, hour - 48}, "last": {hour + 5 - 24, hour + 5 - 72},
             "before": {hour - 1 - 24, hour - 1 - 48}}
    times = range((hour - 72) * 3600 + 30, int(now) - 3600, 60)
    lines = []
    for metric in ("kubevirt_vmi_memory_available_bytes", "kubevirt_vmi_memory_usable_bytes"):
        lines.append(f"# TYPE {metric} gauge")
        for name, at in peaks.items():
            labels = f'{{name="{name}",namespace="pastdays",node="node-1"}}'
            if metric.endswith("available_bytes"):
                lines += [f"{metric}{labels} {8 * GIB} {t}" for t in times]
            else:  # usable = available - demand
                lines += [f"{metric}{labels} {8 * GIB - (6 * GIB if t // 3600 in at else GIB)} {t}" for t in times]
    history = tmp_path / "history.om"
    history.write_text("\n".join(lines) + "\n# EOF\n")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(history), str(tmp_path / "tsdb")],
                   check=True, capture_output=True)
    for name in peaks:  # the guests now, scraped live
        guest_metrics.set("pastdays", name, available=8 * GIB, demand=GIB)
    prom = Prometheus(tmp_path, [f"127.0.0.1:{guest_metrics.port}"])
    try:
        prom.wait_for('count(kubevirt_vmi_memory_available_bytes{namespace="pastdays", job="kubevirt"}) == 3')
        g = Group(SignalSpec(0, 30, 1.0, 5, DailyPattern(days=3, agree=2, ahead_h=6, lead_s=900)),
                  MetricsView(stale_s=5), frozenset({"pastdays"}))
        minutely = PrometheusSource(PrometheusSettings(prom.url, resolution_s=60))  # the operator's default
        signals, failed = minutely.signals({g: {f"pastdays/{name}" for name in peaks}}, time.time())
        assert failed == {}
        assert {name: signals[f"pastdays/{name}"].latest for name in peaks} == dict.fromkeys(peaks, GIB)
        # within the coming six hours on 2 of 3 days, or an hour before them
        assert {name: signals[f"pastdays/{name}"].recurring for name in peaks} == {
            "first": 6 * GIB, "last": 6 * GIB, "before": GIB}
        # the hour holding 15 minutes from now: this one, or the next, quiet on every day but first's
        soon = signals["pastdays/first"].soon
        assert soon == (6 * GIB if int((now + 900) // 3600) == hour else GIB)
        assert signals["pastdays/last"].soon == signals["pastdays/before"].soon == GIB
    finally:
        prom.stop()
