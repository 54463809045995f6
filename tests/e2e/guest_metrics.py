"""virt-handler's guest memory metrics, as KubeVirt names and labels them, for guests whose
demand the tests set. Served over HTTP for a real Prometheus to scrape."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from tests.e2e.units import MIB

LABELS = ["name", "namespace", "node"]
LABEL_PREFIX = "kubernetes_vmi_label_"


def _label(key: str) -> str:
    """virt-handler's metric label for a VMI label key."""
    return LABEL_PREFIX + re.sub(r"[./-]", "_", key)


@dataclass
class Guest:
    """One guest's memory as its balloon driver reports it."""

    node: str
    available: int
    """Guest RAM (MemTotal)."""
    demand: int
    """Non-reclaimable use: usable = available − demand."""
    major_faults_per_s: float = 0.0
    swap_in_per_s: float = 0.0
    major_faults: float = 0.0
    swapped_in: float = 0.0
    last: float = field(default_factory=time.monotonic)
    vmi_labels: dict[str, str] = field(default_factory=dict)
    """The VMI's labels, exported as virt-handler does: kubernetes_vmi_label_<key, with . / - as _>."""
    unused: int | None = None
    """MemFree as measured (a real guest); None: half of what is usable."""
    domain: int | None = None
    """The domain's memory (guestCurrent) when it differs from MemTotal (a real guest's kernel keeps some)."""

    def advance(self, now: float) -> None:
        dt, self.last = now - self.last, now
        self.major_faults += self.major_faults_per_s * dt
        self.swapped_in += self.swap_in_per_s * dt


class GuestMetrics:
    """A Prometheus collector of kubevirt_vmi_memory_* for the guests set on it."""

    def __init__(self) -> None:
        self.guests: dict[tuple[str, str], Guest] = {}
        self.lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self.port = 0

    def set(self, namespace: str, name: str, *, node: str = "node-1", available: int, demand: int,
            major_faults_per_s: float = 0.0, swap_in_per_s: float = 0.0,
            vmi_labels: dict[str, str] | None = None) -> None:
        """Create or change a guest."""
        with self.lock:
            guest = self.guests.get((namespace, name))
            if guest is None:
                self.guests[(namespace, name)] = Guest(node, available, demand, major_faults_per_s, swap_in_per_s,
                                                       vmi_labels=dict(vmi_labels or {}))
                return
            if vmi_labels is not None:
                guest.vmi_labels = dict(vmi_labels)
            guest.advance(time.monotonic())
            guest.node, guest.available, guest.demand = node, available, demand
            guest.major_faults_per_s, guest.swap_in_per_s = major_faults_per_s, swap_in_per_s

    def measured(self, namespace: str, name: str, *, node: str, domain: int, total: int, available: int, free: int,
                 major_faults: int, swap_in: int, vmi_labels: dict[str, str]) -> None:
        """A real guest, as its balloon driver reported it: MemTotal, MemAvailable, MemFree and counters."""
        with self.lock:
            self.guests[(namespace, name)] = Guest(node, total, total - available, major_faults=major_faults,
                                                   swapped_in=swap_in, vmi_labels=dict(vmi_labels), unused=free,
                                                   domain=domain)

    def short_of_memory(self, namespace: str, name: str, *, node: str, available: int) -> None:
        """The guest wants more than it has: it shows no more use than it has, and pages instead
        (16 MiB of headroom, 1000 major faults a second)."""
        self.set(namespace, name, node=node, available=available, demand=available - 16 * MIB,
                 major_faults_per_s=1000.0)

    def remove(self, namespace: str, name: str) -> None:
        """The guest's metrics disappear (VM stopped, or virt-handler lost it)."""
        with self.lock:
            self.guests.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        """What virt-handler would export now."""
        now = time.monotonic()
        with self.lock:
            # one label set per family: a guest without one of the VMI labels gets "" (absent in Prometheus)
            extra = sorted({_label(k) for g in self.guests.values() for k in g.vmi_labels})
            names = LABELS + extra
            fams: dict[str, Any] = {
                "available": GaugeMetricFamily("kubevirt_vmi_memory_available_bytes", "guest RAM", labels=names),
                "usable": GaugeMetricFamily("kubevirt_vmi_memory_usable_bytes", "MemAvailable", labels=names),
                "unused": GaugeMetricFamily("kubevirt_vmi_memory_unused_bytes", "MemFree", labels=names),
                "domain": GaugeMetricFamily("kubevirt_vmi_memory_domain_bytes", "memory in domain xml", labels=names),
                "swap": GaugeMetricFamily("kubevirt_vmi_memory_swap_in_traffic_bytes", "swapped in", labels=names),
                "faults": CounterMetricFamily("kubevirt_vmi_memory_pgmajfault", "major faults", labels=names),
            }
            for (ns, name), g in self.guests.items():
                g.advance(now)
                mine = {_label(k): v for k, v in g.vmi_labels.items()}
                labels = [name, ns, g.node] + [mine.get(k, "") for k in extra]
                usable = max(0, g.available - g.demand)
                fams["domain"].add_metric(labels, g.available if g.domain is None else g.domain)
                fams["available"].add_metric(labels, g.available)
                fams["usable"].add_metric(labels, usable)
                fams["unused"].add_metric(labels, usable // 2 if g.unused is None else g.unused)
                fams["swap"].add_metric(labels, g.swapped_in)
                fams["faults"].add_metric(labels, g.major_faults)
        yield from fams.values()

    def serve(self, port: int) -> None:
        """Serve /metrics on 127.0.0.1:port in a background thread."""
        start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.port = port
