"""The operator's settings: flags of `dynamic-memory run`, or DM_* environment variables (Helm)."""

from __future__ import annotations

import os
from dataclasses import dataclass

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
    tick_s: float = 1.0
    """How often each policy's timer wakes to see whether its own interval is due."""
    mode_cap: str = "Auto"
    """The most any policy may do: Recommend makes the whole operator report-only (try it first)."""

    def effective_mode(self, mode: str) -> str:
        """A policy's mode, capped: Off < Recommend < Auto."""
        order = ["Off", "Recommend", "Auto"]
        return order[min(order.index(mode), order.index(self.mode_cap))]

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorConfig:
        """Read DM_* variables; unset ones keep their defaults, bad ones are errors."""
        e = dict(os.environ if env is None else env)
        d = cls()

        def flag(name: str, default: bool) -> bool:
            value = e.get(name)
            if value is None:
                return default
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{name}={value!r} is not a boolean (true or false)")
            return value.lower() in ("true", "1", "yes")

        return cls(
            prometheus_url=e.get("DM_PROMETHEUS_URL", d.prometheus_url),
            prometheus_token_file=e.get("DM_PROMETHEUS_TOKEN_FILE") or None,
            prometheus_ca_file=e.get("DM_PROMETHEUS_CA_FILE") or None,
            prometheus_insecure=flag("DM_PROMETHEUS_INSECURE", d.prometheus_insecure),
            node_reserve=parse_quantity(e["DM_NODE_RESERVE"]) if "DM_NODE_RESERVE" in e else d.node_reserve,
            max_in_flight=int(e.get("DM_MAX_IN_FLIGHT", d.max_in_flight)),
            metrics_port=int(e.get("DM_METRICS_PORT", d.metrics_port)),
            tick_s=float(e.get("DM_TICK_SECONDS", d.tick_s)),
            mode_cap=_mode(e.get("DM_MODE_CAP") or d.mode_cap),
        )


def _mode(value: str) -> str:
    if value not in ("Off", "Recommend", "Auto"):
        raise ValueError(f"DM_MODE_CAP={value!r} must be Off, Recommend or Auto")
    return value
