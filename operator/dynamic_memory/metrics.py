"""The operator's own /metrics (prometheus-client): what it sees, decides and fails at."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
VM_LABELS = ["namespace", "name", "policy"]

DEMAND = Gauge("dynamic_memory_vm_demand_bytes", "Guest demand the engine used", VM_LABELS, registry=REGISTRY)
ASSIGNED = Gauge("dynamic_memory_vm_assigned_bytes", "Guest memory now", VM_LABELS, registry=REGISTRY)
TARGET = Gauge("dynamic_memory_vm_target_bytes", "Guest memory the engine wants", VM_LABELS, registry=REGISTRY)
NODE_ROOM = Gauge("dynamic_memory_node_room_bytes",
                  "Memory free on a node for new pods: allocatable - reserve - requests of its bound pods",
                  ["node"], registry=REGISTRY)
CYCLE = Histogram("dynamic_memory_cycle_seconds", "Duration of one pass over all policies", registry=REGISTRY)
DECISIONS = Counter("dynamic_memory_decisions_total", "Changes decided, by reason code and outcome",
                    ["reason", "outcome"], registry=REGISTRY)
ERRORS = Counter("dynamic_memory_errors_total", "Errors by reason", ["reason"], registry=REGISTRY)
PROM_QUERIES = Counter("dynamic_memory_prometheus_queries_total", "PromQL queries sent", registry=REGISTRY)
