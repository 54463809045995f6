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
from dataclasses import dataclass
from typing import Any

from dynamic_memory.model import DemandSignal
from dynamic_memory.policy.engine import SignalSpec

AVAILABLE = "kubevirt_vmi_memory_available_bytes"
USABLE = "kubevirt_vmi_memory_usable_bytes"
MAJOR_FAULTS = "kubevirt_vmi_memory_pgmajfault_total"
SWAP_IN = "kubevirt_vmi_memory_swap_in_traffic_bytes"

PRESSURE_HEADROOM = 0.05
"""usable / available below this, with faults or swap-in, is pressure (KubeVirt's alert threshold)."""
MAJOR_FAULTS_PER_S = 10.0
RESOLUTION_S = 60.0
"""Default step of the window subqueries: the peak is the highest of the per-minute demand values."""

MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"([^"\\]|\\.)*"\s*'
MATCHERS_PATTERN = rf"^({MATCHER}(,{MATCHER})*)?$"
"""Extra label matchers a policy may add: `label="value"` pairs, comma-separated, nothing else."""


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


def _selector(metric: str, group: Group) -> str:
    ns = regex_literal(group.namespaces)
    parts = [f'{group.view.namespace_label}=~"{ns}"'] + ([group.view.matchers] if group.view.matchers.strip() else [])
    return f"{metric}{{{', '.join(parts)}}}"


def queries(group: Group, resolution_s: float = RESOLUTION_S) -> dict[str, str]:
    """The PromQL of one group, by purpose. Every query returns one series per VM."""
    by = f"by ({group.view.namespace_label}, {group.view.name_label})"
    avail, usable = _selector(AVAILABLE, group), _selector(USABLE, group)
    demand = f"(max {by} ({avail}) - max {by} ({usable}))"
    spec, step = group.spec, _dur(resolution_s)
    out = {
        "latest": demand,
        "fresh": f"max {by} (timestamp({avail}))",
        "pressure": (f"(max {by} ({usable}) / max {by} ({avail}) < {PRESSURE_HEADROOM}) and "
                     f"((max {by} (rate({_selector(MAJOR_FAULTS, group)}[2m])) > {MAJOR_FAULTS_PER_S}) or "
                     f"(max {by} (rate({_selector(SWAP_IN, group)}[2m])) > 0))"),
    }
    if spec.down_window_s > 0:
        window = f"{demand}[{_dur(spec.down_window_s)}:{step}]"
        out["peak"] = (f"max_over_time({window})" if spec.down_quantile >= 1.0
                       else f"quantile_over_time({spec.down_quantile}, {window})")
        history = min(spec.min_history_s, spec.down_window_s) or spec.down_window_s
        out["since"] = f"min_over_time(max {by} (timestamp({avail}))[{_dur(history + resolution_s)}:{step}])"
    if spec.up_window_s > 0:
        out["low"] = f"min_over_time({demand}[{_dur(spec.up_window_s)}:{step}])"
    return out


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
        fresh = answers.get("fresh", {}).get(key)
        latest = answers.get("latest", {}).get(key)
        pressure = key in answers.get("pressure", {})
        if fresh is None or latest is None or now - fresh > group.view.stale_s:
            out[key] = DemandSignal(None, None, False, pressure)
            continue
        low = answers["low"].get(key) if "low" in answers else latest
        peak = answers["peak"].get(key) if "peak" in answers else latest
        since = answers.get("since", {}).get(key)
        enough = since is not None and now - since >= needed - resolution_s if "since" in answers else True
        out[key] = DemandSignal(None if low is None else max(0, int(low)), None if peak is None else max(0, int(peak)),
                                enough, pressure)
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


class PrometheusSource:
    """Asks Prometheus the group queries; counts what it sends (the operator exports the count)."""

    def __init__(self, settings: PrometheusSettings) -> None:
        import requests
        from prometheus_api_client import PrometheusConnect

        session = requests.Session()
        session.verify = False if settings.insecure_skip_verify else (settings.ca_file or True)
        self.settings = settings
        self.client = PrometheusConnect(url=settings.url, disable_ssl=settings.insecure_skip_verify,
                                        session=session, timeout=int(settings.timeout_s))
        self.queries_sent = 0

    def _headers(self) -> dict[str, str]:
        if not self.settings.bearer_token_file:
            return {}
        with open(self.settings.bearer_token_file, encoding="utf-8") as handle:  # tokens rotate: read each time
            return {"Authorization": f"Bearer {handle.read().strip()}"}

    def signals(self, groups: Mapping[Group, Collection[str]], now: float) -> dict[str, DemandSignal]:
        """Signals of every VM key in `groups`, asked as of `now` (Unix seconds)."""
        out: dict[str, DemandSignal] = {}
        self.client.headers = self._headers()
        for group, keys in groups.items():
            answers = {}
            for purpose, promql in queries(group, self.settings.resolution_s).items():
                self.queries_sent += 1
                try:
                    result = self.client.custom_query(promql, params={"time": now})
                except Exception as exc:  # requests' and the client's own errors alike
                    raise PrometheusError(f"{type(exc).__name__}: {exc}") from exc
                answers[purpose] = vector(result, group.view)
            out.update(assemble(answers, group, keys, now, self.settings.resolution_s))
        return out
