"""The operator's settings: flags of `dynamic-memory run`, or DM_* environment variables (Helm)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dynamic_memory.errors import UserError
from dynamic_memory.quantity import parse_quantity


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    """Everything the operator is told at start."""

    prometheus_url: str = "http://prometheus-k8s.monitoring.svc:9090"
    prometheus_token_file: str | None = None
    prometheus_ca_file: str | None = None
    prometheus_insecure: bool = False
    node_reserve: int = 1024**3
    """Kept free on every node beyond pod requests (kubelet eviction thresholds, system daemons)."""
    max_in_flight: int = 2
    """Resizes under way cluster-wide at most: KubeVirt live-migrates each one."""
    metrics_port: int = 8000
    mode_cap: str = "Auto"
    """The most any policy may do: Recommend makes the whole operator report-only (try it first)."""

    def effective_mode(self, mode: str) -> str:
        """A policy's mode, capped: Off < Recommend < Auto."""
        order = ["Off", "Recommend", "Auto"]
        return order[min(order.index(mode), order.index(self.mode_cap))]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        """Read DM_* variables; unset ones keep their defaults. A bad one is a UserError naming the
        variable and its flag: a configuration error, which no retry can fix."""
        e = dict(os.environ if env is None else env)
        d = cls()

        def bad(name: str, value: str, wanted: str) -> UserError:
            flag = "--" + name.removeprefix("DM_").lower().replace("_", "-")
            return UserError(f"{flag} ({name}) is {value!r}: {wanted}")

        def number(name: str, default: float, kind: type[int] | type[float], low: float, high: float) -> float:
            value = e.get(name)
            if value is None:
                return default
            try:
                out = kind(value)
            except ValueError:
                raise bad(name, value, f"must be a number from {low:g} to {high:g}") from None
            if not low <= out <= high:
                raise bad(name, value, f"must be from {low:g} to {high:g}")
            return out

        def flag(name: str, default: bool) -> bool:
            value = e.get(name)
            if value is None:
                return default
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise bad(name, value, "must be true or false")
            return value.lower() in ("true", "1", "yes")

        reserve = e.get("DM_NODE_RESERVE")
        try:
            node_reserve = d.node_reserve if reserve is None else parse_quantity(reserve)
        except ValueError:
            raise bad("DM_NODE_RESERVE", reserve or "", "must be a memory quantity such as 1Gi or 512Mi") from None
        url = e.get("DM_PROMETHEUS_URL", d.prometheus_url)
        if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
            raise bad("DM_PROMETHEUS_URL", url, "must be an http:// or https:// URL, e.g. http://prometheus:9090")
        mode_cap = e.get("DM_MODE_CAP") or d.mode_cap
        if mode_cap not in ("Off", "Recommend", "Auto"):
            raise bad("DM_MODE_CAP", mode_cap, "must be Off, Recommend or Auto")
        for name in ("DM_PROMETHEUS_TOKEN_FILE", "DM_PROMETHEUS_CA_FILE"):
            path = e.get(name)
            if path and not os.path.isfile(path):
                raise bad(name, path, "no such file")
        return cls(
            prometheus_url=url,
            prometheus_token_file=e.get("DM_PROMETHEUS_TOKEN_FILE") or None,
            prometheus_ca_file=e.get("DM_PROMETHEUS_CA_FILE") or None,
            prometheus_insecure=flag("DM_PROMETHEUS_INSECURE", d.prometheus_insecure),
            node_reserve=node_reserve,
            max_in_flight=int(number("DM_MAX_IN_FLIGHT", d.max_in_flight, int, 1, 1000)),
            metrics_port=int(number("DM_METRICS_PORT", d.metrics_port, int, 0, 65535)),
            mode_cap=mode_cap,
        )
