"""Guest demand from the metrics KubeVirt's virt-handler exports, read from Prometheus.

A constant number of batched PromQL queries per group of policies that share windows and
metric settings, whatever the number of VMs (one query over 10,000 series takes ~0.1 s; 10,000
single queries take ~26 s). Building the queries and assembling the answers are pure functions;
only `PrometheusSource` does I/O.

Demand = available − usable (the guest's non-reclaimable use, KubeVirt's own recording rule
vmi:kubevirt_vmi_memory_used_bytes). Pressure follows KubeVirt's alert: headroom under 5 % while
the guest takes major page faults or swaps in (major faults alone are normal page-cache misses).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dynamic_memory.history import DailyPeaks, WindowExtreme
from dynamic_memory.model import DemandSignal, VMHistory
from dynamic_memory.policy.engine import SignalSpec

AVAILABLE = "kubevirt_vmi_memory_available_bytes"
DOMAIN = "kubevirt_vmi_memory_domain_bytes"
USABLE = "kubevirt_vmi_memory_usable_bytes"
MAJOR_FAULTS = "kubevirt_vmi_memory_pgmajfault_total"
SWAP_IN = "kubevirt_vmi_memory_swap_in_traffic_bytes"

PRESSURE_HEADROOM = 0.05
"""usable / available below this, with faults or swap-in, is pressure (KubeVirt's alert threshold)."""
MAJOR_FAULTS_PER_S = 10.0
RESOLUTION_S = 60.0
"""Default step of the window subqueries: the peak is the highest of the per-minute demand values."""

@dataclass(frozen=True, slots=True)
class MetricsView:
    """How a policy's VMs appear in Prometheus."""

    name_label: str = "name"
    namespace_label: str = "namespace"
    matchers: str = ""
    stale_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Group:
    """VMs whose signals come from the same queries."""

    spec: SignalSpec
    view: MetricsView
    namespaces: frozenset[str]


def _dur(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def regex_literal(values: Iterable[str]) -> str:
    """An RE2 alternation matching exactly `values`, escaped for a PromQL double-quoted string.

    re.escape turns "team-a" into team\\-a; RE2 accepts the escaped '-', but a PromQL string does
    not know the escape "\\-", so every backslash is doubled for the string literal.
    """
    return "|".join(sorted(re.escape(v).replace("\\", "\\\\") for v in values))


def vm_matchers(keys: Collection[str], view: MetricsView) -> list[str]:
    """Label matchers for these VMs (namespace/name keys), and the policy's own matchers: a VM of the
    same name in another of the namespaces may match too, and is left out by its key."""
    namespaces = {key.split("/", 1)[0] for key in keys}
    names = {key.split("/", 1)[1] for key in keys}
    return ([f'{view.namespace_label}=~"{regex_literal(namespaces)}"', f'{view.name_label}=~"{regex_literal(names)}"']
            + ([view.matchers] if view.matchers.strip() else []))


def _selector(metric: str, group: Group, names: Collection[str] = ()) -> str:
    ns = regex_literal(group.namespaces)
    parts = [f'{group.view.namespace_label}=~"{ns}"'] + ([group.view.matchers] if group.view.matchers.strip() else [])
    if names:
        parts.append(f'{group.view.name_label}=~"{regex_literal(names)}"')
    return f"{metric}{{{', '.join(parts)}}}"


def _demand(group: Group, names: Collection[str] = ()) -> str:
    """available − usable of each series pair (same labels: one exporter), the highest per VM.
    One aggregation, after the subtraction: a third of the evaluation of aggregating each side."""
    by = f"by ({group.view.namespace_label}, {group.view.name_label})"
    return f"max {by} ({_selector(AVAILABLE, group, names)} - {_selector(USABLE, group, names)})"


def queries(group: Group, resolution_s: float = RESOLUTION_S) -> dict[str, str]:
    """The PromQL of one group, by purpose, every window asked in full. Every query returns one
    series per VM. The operator asks `pass_queries` each pass and the window once (`seed_queries`);
    these are what a stateless reader would ask every time (the benchmarks compare the two)."""
    by = f"by ({group.view.namespace_label}, {group.view.name_label})"
    avail, demand = _selector(AVAILABLE, group), _demand(group)
    spec, step = group.spec, _dur(resolution_s)
    out = pass_queries(group, resolution_s)
    if spec.down_window_s > 0:
        window = f"{demand}[{_dur(spec.down_window_s)}:{step}]"
        out["peak"] = (f"max_over_time({window})" if spec.down_quantile >= 1.0
                       else f"quantile_over_time({spec.down_quantile}, {window})")
        history = min(spec.min_history_s, spec.down_window_s) or spec.down_window_s
        out["since"] = f"min_over_time(max {by} (timestamp({avail}))[{_dur(history + resolution_s)}:{step}])"
    return out


def pass_queries(group: Group, resolution_s: float = RESOLUTION_S) -> dict[str, str]:
    """What every pass asks: instant queries (and the scale-up window, short by design).

    `latest` holds only VMs with a sample within staleAfter: no answer, unknown demand. It is read
    from instant selectors, which drop a series Prometheus marked stale: after a migration (every
    resize is one) the source node's virt-handler no longer exports the VMI, and that series' last
    sample must not stand in for the guest for staleAfter (a range's last_over_time kept it, and held
    the shrinks after grows). The range only filters out series that stopped without a marker."""
    by = f"by ({group.view.namespace_label}, {group.view.name_label})"
    avail, usable, demand = _selector(AVAILABLE, group), _selector(USABLE, group), _demand(group)
    fresh = _dur(group.view.stale_s)
    out = {
        "latest": f"max {by} (({avail} - {usable}) and last_over_time({avail}[{fresh}]))",
        # pressure = short and paging, joined here rather than in PromQL: the two halves run side
        # by side and each answers only the few VMs that match (10k VMs: 222 ms as one query)
        "short": f"{usable} / {avail} < {PRESSURE_HEADROOM}",
        "paging": (f"rate({_selector(MAJOR_FAULTS, group)}[2m]) > {MAJOR_FAULTS_PER_S} or "
                   f"rate({_selector(SWAP_IN, group)}[2m]) > 0"),
    }
    if group.spec.up_window_s > 0:
        out["low"] = f"min_over_time({demand}[{_dur(group.spec.up_window_s)}:{_dur(resolution_s)}])"
    return out


SEED_PIECES = 8
"""The window is read once in this many pieces, so that its old peaks expire on time."""
WINDOW_ENTRIES = 64
"""A VM's window keeps at most this many samples (an 8 h window: one per 7.5 min; a kept peak may
outlive its sample by that much, never less)."""
SEED_NAMES_MAX = 200
"""Seed at most this many VMs by name; more (a restart) and the whole group is read."""


def seed_pieces(window_s: float, resolution_s: float = RESOLUTION_S) -> list[float]:
    """How far back each piece of the window ends (0 = now); pieces are equally long, at least `resolution_s`."""
    piece = max(resolution_s, math.ceil(window_s / SEED_PIECES))
    return [k * piece for k in range(math.ceil(window_s / piece))]


def seed_queries(group: Group, names: Collection[str] = (),
                 resolution_s: float = RESOLUTION_S) -> dict[float, str]:
    """The scale-down window in pieces: ends-ago → PromQL of each VM's peak demand in that piece."""
    offsets = seed_pieces(group.spec.down_window_s, resolution_s)
    piece = _dur(offsets[1] if len(offsets) > 1 else group.spec.down_window_s)
    demand, step = _demand(group, names if len(names) <= SEED_NAMES_MAX else ()), _dur(resolution_s)
    return {ago: f"max_over_time({demand}[{piece}:{step}]" + (f" offset {_dur(ago)})" if ago else ")")
            for ago in offsets}


def hourly_query(group: Group, names: Collection[str] = (), resolution_s: float = RESOLUTION_S) -> str:
    """Each VM's peak demand of the hour ending at each point: the range query, stepped by the hour
    over the past days, that a time-of-day pattern is read from when the operator starts. The
    subquery spans 3599 s, not 3600: Prometheus 2 includes a subquery's first step, and the step
    at the very start of the hour reads the previous hour's last sample (seen on 2.42: with 3600 s
    every peak was read into the next hour too). Scrapes further apart than the step can still lend
    an hour's first steps the previous hour's last sample (the lookback): an hour may read higher,
    never lower."""
    demand = _demand(group, names if len(names) <= SEED_NAMES_MAX else ())
    return f"max_over_time({demand}[3599s:{_dur(resolution_s)}])"


def hourly_range(now: float, days: int) -> tuple[float, float]:
    """(start, end) of the hourly range query: the past `days` days of whole clock hours."""
    end = now // 3600 * 3600
    return end - days * 86400 + 3600, end


@dataclass(slots=True)
class _Window:
    peak: WindowExtreme
    first: float | None
    daily: DailyPeaks | None = None
    """Its hourly peaks of the past days (when the policy reads its time of day)."""


class WindowCache:
    """Each VM's scale-down window, kept between passes. Pure: the source fills it.

    Asking Prometheus for an 8-hour window of 10,000 VMs every pass costs seconds (a subquery
    steps through the whole window; benchmarks/prometheus_reads.py). So, like VPA's recommender,
    which reads its history from Prometheus at start and then aggregates in memory, the window is
    read once per VM (in SEED_PIECES pieces, each kept until its end leaves the window: at most
    one piece too long, never too short), and every pass adds the newest sample.
    """

    def __init__(self) -> None:
        self.groups: dict[tuple[SignalSpec, MetricsView], dict[str, _Window]] = {}

    @staticmethod
    def cacheable(spec: SignalSpec) -> bool:
        """Only a highest-of-window composes from pieces (a quantile does not)."""
        return spec.down_window_s > 0 and spec.down_quantile >= 1.0

    def missing(self, group: Group, keys: Collection[str]) -> list[str]:
        """The VMs whose window was never read."""
        known = self.groups.get((group.spec, group.view), {})
        return sorted(k for k in keys if k not in known)

    def seed(self, group: Group, keys: Collection[str], pieces: Mapping[float, Mapping[str, float]],
             now: float, hourly: Mapping[str, Iterable[tuple[float, float]]] | None = None) -> None:
        """Start the windows of `keys` from the pieces' answers (ends-ago → VM → peak), and their
        hourly peaks from `hourly` (VM → (end of the hour, peak), oldest first) when the policy
        reads its time of day."""
        windows = self.groups.setdefault((group.spec, group.view), {})
        span, oldest_first = group.spec.down_window_s, sorted(pieces, reverse=True)
        for key in keys:
            window = _Window(WindowExtreme(span, largest=True, granularity=span / WINDOW_ENTRIES), None)
            if group.spec.daily is not None:
                window.daily = DailyPeaks(group.spec.daily)
                for end, hour_peak in (hourly or {}).get(key, ()):
                    window.daily.push(end - 1, max(0, int(hour_peak)))  # the hour that ends at `end`
            for ago in oldest_first:
                value = pieces[ago].get(key)
                if value is not None:
                    window.peak.push(now - ago, max(0, int(value)))
                    window.first = now - ago if window.first is None else window.first
            windows[key] = window

    def update(self, group: Group, keys: Collection[str], latest: Mapping[str, float],
               now: float) -> dict[str, dict[str, float]]:
        """Add each VM's newest sample; forget VMs no longer asked; the `peak` and `since` answers
        (and `recurring` and `soon` when the policy reads its time of day)."""
        windows = self.groups.setdefault((group.spec, group.view), {})
        for gone in set(windows) - set(keys):
            del windows[gone]
        peak, since, recurring, soon = {}, {}, {}, {}
        for key in keys:
            window = windows.get(key)
            if window is None:
                continue
            if key in latest:
                demand = max(0, int(latest[key]))
                window.peak.push(now, demand)
                window.first = now if window.first is None else window.first
                if window.daily is not None:
                    window.daily.push(now, demand)
            value = window.peak.get(now)
            if value is not None:
                peak[key] = float(value)
            if window.first is not None:
                since[key] = window.first
            if window.daily is not None:
                ahead, next_hour = window.daily.get(now)
                if ahead is not None:
                    recurring[key] = float(ahead)
                if next_hour is not None:
                    soon[key] = float(next_hour)
        return {"peak": peak, "since": since, "recurring": recurring, "soon": soon}


def vector(result: Iterable[Mapping[str, Any]], view: MetricsView) -> dict[str, float]:
    """An instant-vector answer as namespace/name → value (NaN and ±Inf dropped)."""
    out = {}
    for item in result:
        metric = item.get("metric", {})
        ns, name = metric.get(view.namespace_label), metric.get(view.name_label)
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if ns and name and math.isfinite(value):
            out[f"{ns}/{name}"] = value
    return out


def assemble(answers: Mapping[str, Mapping[str, float]], group: Group, keys: Collection[str],
             now: float, resolution_s: float = RESOLUTION_S) -> dict[str, DemandSignal]:
    """Every asked VM's signal; a VM with missing or stale samples gets unknown demand."""
    spec = group.spec
    needed = min(spec.min_history_s, spec.down_window_s) or spec.down_window_s
    out = {}
    for key in keys:
        latest = answers.get("latest", {}).get(key)
        pressure = key in answers.get("short", {}) and key in answers.get("paging", {})
        if latest is None:  # no fresh sample
            out[key] = DemandSignal(None, None, False, pressure)
            continue
        low = answers["low"].get(key) if "low" in answers else latest
        peak = answers["peak"].get(key) if "peak" in answers else latest
        since = answers.get("since", {}).get(key)
        enough = since is not None and now - since >= needed - resolution_s if "since" in answers else True
        recurring, soon = answers.get("recurring", {}).get(key), answers.get("soon", {}).get(key)
        out[key] = DemandSignal(None if low is None else max(0, int(low)), None if peak is None else max(0, int(peak)),
                                enough, pressure, None if recurring is None else int(recurring),
                                None if soon is None else int(soon))
    return out


@dataclass(frozen=True, slots=True)
class PrometheusSettings:
    """Where Prometheus is and how to reach it."""

    url: str
    bearer_token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 10.0
    resolution_s: float = RESOLUTION_S


class PrometheusError(RuntimeError):
    """Prometheus could not be asked or did not answer: demand is then unknown, never low."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        """No answer at all (connection refused, timeout), rather than a query Prometheus refused."""


def _innermost(exc: BaseException) -> BaseException:
    """The error at the bottom of a chain: requests wraps urllib3's retry report, which wraps the
    connection's error, which wraps the operating system's."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__ or next(
            (arg for arg in exc.args if isinstance(arg, BaseException)), None)
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def failure(exc: Exception, timeout_s: float) -> PrometheusError:
    """A failed request in a few words, for a status condition or an error line: a connection is
    named by its innermost cause ("Connection refused"), not by urllib3's retry report, which
    repeats the whole query. `unreachable`: no answer at all, rather than a query refused."""
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return PrometheusError(f"no answer within {timeout_s:g} s", unreachable=True)
    if isinstance(exc, requests.exceptions.ConnectionError):
        root = _innermost(exc)
        words = root.strerror if isinstance(root, OSError) and root.strerror else str(root)
        return PrometheusError(f"cannot connect ({words})", unreachable=True)
    if isinstance(exc, requests.exceptions.RequestException):
        return PrometheusError(f"{type(exc).__name__}: {exc}", unreachable=True)
    return PrometheusError(f"{type(exc).__name__}: {exc}")  # the client's own errors: Prometheus answered


class PrometheusSource:
    """Asks Prometheus the group queries; counts what it sends (the operator exports the count)."""

    def __init__(self, settings: PrometheusSettings, *, keep_windows: bool = True) -> None:
        """`keep_windows=False` asks every window in full every pass (the stateless way, to compare)."""
        import requests
        from prometheus_api_client import PrometheusConnect

        session = requests.Session()
        session.verify = False if settings.insecure_skip_verify else (settings.ca_file or True)
        self.settings = settings
        self.client = PrometheusConnect(url=settings.url, disable_ssl=settings.insecure_skip_verify,
                                        session=session, timeout=int(settings.timeout_s))
        self.queries_sent = 0
        self.windows = WindowCache() if keep_windows else None
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="promql")

    def _headers(self) -> dict[str, str]:
        if not self.settings.bearer_token_file:
            return {}
        with open(self.settings.bearer_token_file, encoding="utf-8") as handle:  # tokens rotate: read each time
            return {"Authorization": f"Bearer {handle.read().strip()}"}

    def _ask(self, promqls: Mapping[Any, str], view: MetricsView, now: float) -> dict[Any, dict[str, float]]:
        """Send queries side by side (Prometheus runs them in parallel); their answers by the same keys."""

        def one(promql: str) -> dict[str, float]:
            try:
                return vector(self.client.custom_query(promql, params={"time": now}), view)
            except Exception as exc:  # requests' and the client's own errors alike
                raise failure(exc, self.settings.timeout_s) from exc

        self.queries_sent += len(promqls)
        return dict(zip(promqls, self.pool.map(one, promqls.values()), strict=True))

    def signals(self, groups: Mapping[Group, Collection[str]],
                now: float) -> tuple[dict[str, DemandSignal], dict[Group, PrometheusError]]:
        """Signals of every VM key in `groups`, asked as of `now` (Unix seconds), and the groups whose
        queries failed, with why: one policy's bad matcher must not blind the others."""
        out: dict[str, DemandSignal] = {}
        failed: dict[Group, PrometheusError] = {}
        self.client.headers = self._headers()
        for group, keys in groups.items():
            try:
                out.update(self._group_signals(group, keys, now))
            except PrometheusError as exc:
                failed[group] = exc
        return out, failed

    def _group_signals(self, group: Group, keys: Collection[str], now: float) -> dict[str, DemandSignal]:
        res = self.settings.resolution_s
        if self.windows is None or not self.windows.cacheable(group.spec):
            return assemble(self._ask(queries(group, res), group.view, now), group, keys, now, res)
        answers = self._ask(pass_queries(group, res), group.view, now)
        missing = self.windows.missing(group, keys)
        if missing:
            names = {k.split("/", 1)[1] for k in missing}
            hourly = self._hourly(group, names, now) if group.spec.daily is not None else None
            self.windows.seed(group, missing, self._ask(seed_queries(group, names, res), group.view, now), now,
                              hourly)
        answers.update(self.windows.update(group, keys, answers["latest"], now))
        return assemble(answers, group, keys, now, res)

    def _hourly(self, group: Group, names: Collection[str], now: float) -> dict[str, list[tuple[float, float]]]:
        """Each VM's hourly peaks over the days its time of day is read from (one range query)."""
        assert group.spec.daily is not None
        start, end = hourly_range(now, group.spec.daily.days)
        try:
            rows = self.client.custom_query_range(hourly_query(group, names, self.settings.resolution_s),
                                                  start_time=_utc(start), end_time=_utc(end), step="3600s")
        except Exception as exc:  # requests' and the client's own errors alike
            raise failure(exc, self.settings.timeout_s) from exc
        finally:
            self.queries_sent += 1
        out: dict[str, list[tuple[float, float]]] = {}
        for item in rows:
            key = _key(item, group.view)
            if key is not None:
                out[key] = [(float(t), float(v)) for t, v in item.get("values", []) if math.isfinite(float(v))]
        return out

    def ping(self) -> str | None:
        """None when Prometheus answers a query; otherwise why not, in words."""
        try:
            self.client.headers = self._headers()
            self.client.custom_query("vector(1)")
        except Exception as exc:  # requests' and the client's own errors alike
            return str(failure(exc, self.settings.timeout_s))
        return None

    def history(self, matchers: Collection[str], view: MetricsView, start: float, end: float,
                step_s: float, *, sized: bool = True) -> dict[str, VMHistory]:
        """Every matching VM's demand from `start` to `end`, and its size at the end (range queries;
        for `recommend`, which reads once and decides once). Not `sized`: every VM with a demand
        sample in the range, its size and node unknown (0, ""): for learning, which reads past days
        and must not lose a VM to a gap in its metrics at `end`."""
        labels = ", ".join(matchers)
        by = f"by ({view.namespace_label}, {view.name_label})"
        # one series across migrations; each point the highest of its step, so no peak falls between points
        demand = (f"max_over_time((max {by} ({AVAILABLE}{{{labels}}} - {USABLE}{{{labels}}}))"
                  f"[{_dur(step_s)}:{_dur(min(step_s, RESOLUTION_S))}])")
        by_node = f"by ({view.namespace_label}, {view.name_label}, node)"
        size = f"max {by_node} ({DOMAIN}{{{labels}}}) or max {by_node} ({AVAILABLE}{{{labels}}})"
        self.client.headers = self._headers()
        try:
            demand_rows = self.client.custom_query_range(demand, start_time=_utc(start), end_time=_utc(end),
                                                         step=_dur(step_s))
            size_rows = self.client.custom_query(size, params={"time": end}) if sized else []
        except Exception as exc:  # requests' and the client's own errors alike
            raise failure(exc, self.settings.timeout_s) from exc
        self.queries_sent += 2 if sized else 1
        sizes = vector(size_rows, view)
        nodes = {key: str(item["metric"].get("node", "")) for item in size_rows
                 if (key := _key(item, view)) is not None}
        out = {}
        for item in demand_rows:
            key = _key(item, view)
            if key is None or (sized and key not in sizes):
                continue
            samples = tuple((float(t), max(0, int(float(v)))) for t, v in item.get("values", [])
                            if math.isfinite(float(v)))
            out[key] = VMHistory(nodes.get(key, ""), samples, int(sizes.get(key, 0)))
        return out


def _utc(t: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, tz=UTC)


def _key(item: Mapping[str, Any], view: MetricsView) -> str | None:
    metric = item.get("metric", {})
    ns, name = metric.get(view.namespace_label), metric.get(view.name_label)
    return f"{ns}/{name}" if ns and name else None
