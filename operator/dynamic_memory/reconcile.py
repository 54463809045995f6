"""One policy's pass, from the watch caches to decisions. No kopf, no I/O: the handlers feed it
what the indexes hold and what Prometheus answered, and send what it returns.

Room on a node = allocatable − reserve − memory requests of every pod there that is not a
virt-launcher of this policy's VMs − the launcher overhead of this policy's VMs there. VMs of
other policies are pods like any other: passes run one at a time, so nobody double-books a node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynamic_memory.api import PolicySpec
from dynamic_memory.model import Decision, DemandSignal
from dynamic_memory.policy.engine import DynamicMemory, Entry
from dynamic_memory.quantity import parse_quantity
from dynamic_memory.sources.kubevirt import balloon_disabled, key_of, vm_state
from dynamic_memory.sources.prometheus import Group, MetricsView

VM_NAME_LABEL = "vm.kubevirt.io/name"
"""KubeVirt's label on a virt-launcher pod naming its VMI."""

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PodRequest:
    """A pod's memory request on its node, and the VM it runs if it is a virt-launcher."""

    namespace: str
    vm: str | None
    memory: int


def pod_request(pod: Obj) -> tuple[str, PodRequest] | None:
    """(node, request) of a scheduled, not finished pod; None otherwise."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    node = spec.get("nodeName")
    if not node or status.get("phase") in ("Succeeded", "Failed"):
        return None
    memory = 0
    for container in spec.get("containers") or []:
        request = ((container.get("resources") or {}).get("requests") or {}).get("memory")
        if request:
            try:
                memory += parse_quantity(str(request))
            except ValueError:
                continue
    meta = pod.get("metadata") or {}
    return node, PodRequest(meta.get("namespace", ""), (meta.get("labels") or {}).get(VM_NAME_LABEL), memory)


def node_allocatable(node: Obj) -> int | None:
    """status.allocatable.memory in bytes."""
    value = ((node.get("status") or {}).get("allocatable") or {}).get("memory")
    try:
        return parse_quantity(str(value)) if value is not None else None
    except ValueError:
        return None


@dataclass
class PolicyPass:
    """What one pass decided for one policy, and what it could not decide on."""

    selected: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    balloon_off: list[str] = field(default_factory=list)


def metrics_group(spec: PolicySpec, namespace: str) -> Group:
    """The Prometheus queries that serve this policy's VMs."""
    from dynamic_memory.quantity import parse_duration

    m = spec.metrics
    view = MetricsView(m.nameLabel, m.namespaceLabel, m.matchers, parse_duration(m.staleAfter))
    return Group(DynamicMemory().signal_spec(spec.params()), view, frozenset({namespace}))


def selected(spec: PolicySpec, vms: Mapping[str, Obj]) -> list[str]:
    """Names of the policy's VMs among a namespace's VMs, sorted (stable output)."""
    return sorted(name for name, vm in vms.items()
                  if spec.selector.matches(dict((vm.get("metadata") or {}).get("labels") or {})))


def rooms(nodes: Sequence[str], ours: Mapping[str, Entry], allocatable: Mapping[str, int],
          pods: Mapping[str, Sequence[PodRequest]], reserve: int) -> dict[str, int | None]:
    """Guest bytes this policy's VMs may hold on each node; None for a node we know nothing of."""
    mine = {tuple(k.split("/", 1)) for k in ours}
    overhead: dict[str, int] = defaultdict(int)
    for entry in ours.values():
        overhead[entry.vm.node] += entry.vm.overhead
    out: dict[str, int | None] = {}
    for node in nodes:
        if node not in allocatable:
            out[node] = None
            continue
        others = sum(p.memory for p in pods.get(node, ()) if (p.namespace, p.vm) not in mine)
        out[node] = allocatable[node] - reserve - others - overhead[node]
    return out


def plan_pass(spec: PolicySpec, namespace: str, vms: Mapping[str, Obj], vmis: Mapping[str, Obj],
              signals: Mapping[str, DemandSignal], allocatable: Mapping[str, int],
              pods: Mapping[str, Sequence[PodRequest]], reserve: int, now: float) -> PolicyPass:
    """Decisions for one policy's running VMs."""
    params = spec.params()
    result = PolicyPass()
    ours: dict[str, Entry] = {}
    for name in selected(spec, vms):
        vm = vms[name]
        key = key_of(vm)
        result.selected.append(key)
        if balloon_disabled(vm):
            result.balloon_off.append(key)
        vmi = vmis.get(key)
        state = vm_state(vm, vmi, now) if vmi is not None else None
        if state is None:
            result.stopped.append(key)
            continue
        ours[key] = Entry(state, signals.get(key, DemandSignal(None, None, False)), params)
    result.entries = list(ours.values())
    node_rooms = rooms(sorted({e.vm.node for e in result.entries}), ours, allocatable, pods, reserve)
    result.decisions = DynamicMemory().plan(result.entries, node_rooms, now)
    return result
