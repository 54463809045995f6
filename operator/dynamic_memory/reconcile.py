"""One pass over every policy, from the watch caches to decisions. No kopf, no I/O: the handlers
feed it what the indexes hold and what Prometheus answered, and send what it returns.

All policies are planned together: a node's budget must weigh every managed VM on it (weights
are per policy, so they only matter between policies). Room on a node = allocatable − reserve −
memory requests of every pod there that is not a managed VM's virt-launcher − the launcher
overhead of the managed VMs there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynamic_memory.api import PolicySpec
from dynamic_memory.model import Decision, DemandSignal
from dynamic_memory.policy.engine import DynamicMemory, Entry, SignalSpec
from dynamic_memory.quantity import parse_duration, parse_quantity
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
    """What one pass decided for one policy's VMs, and what it could not decide on."""

    selected: list[str] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    balloon_off: list[str] = field(default_factory=list)
    claimed_elsewhere: dict[str, str] = field(default_factory=dict)
    """VM → the policy that governs it instead (selectors overlap: the first policy by name wins)."""
    rooms: dict[str, int | None] = field(default_factory=dict)
    """Guest bytes the managed VMs may hold on the nodes this policy's VMs run on."""


def metrics_groups(policies: Mapping[str, PolicySpec], running: Mapping[str, Sequence[str]]) -> dict[Group, list[str]]:
    """Prometheus query groups for all policies: one per distinct windows and metric settings, whatever the
    number of policies or VMs. `running` maps policy key → its running VMs' keys."""
    groups: dict[tuple[SignalSpec, MetricsView], tuple[set[str], list[str]]] = {}
    for key, spec in policies.items():
        m = spec.metrics
        view = MetricsView(m.nameLabel, m.namespaceLabel, m.matchers, parse_duration(m.staleAfter))
        signal = DynamicMemory().signal_spec(spec.params())
        namespaces, vms = groups.setdefault((signal, view), (set(), []))
        namespaces.add(key.split("/", 1)[0])
        vms.extend(running.get(key, ()))
    return {Group(sig, view, frozenset(ns)): vms for (sig, view), (ns, vms) in groups.items()}


def selected(spec: PolicySpec, vms: Mapping[str, Obj]) -> list[str]:
    """Names of the policy's VMs among a namespace's VMs, sorted (stable output)."""
    return sorted(name for name, vm in vms.items()
                  if spec.selector.matches(dict((vm.get("metadata") or {}).get("labels") or {})))


def rooms(nodes: Sequence[str], ours: Mapping[str, Entry], allocatable: Mapping[str, int],
          pods: Mapping[str, Sequence[PodRequest]], reserve: int) -> dict[str, int | None]:
    """Guest bytes the managed VMs may hold on each node; None for a node we know nothing of."""
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


def running_vms(policies: Mapping[str, PolicySpec], vms: Mapping[str, Mapping[str, Obj]],
                vmis: Mapping[str, Obj]) -> dict[str, list[str]]:
    """Policy key → keys of its selected VMs that have a running VMI (what Prometheus is asked about)."""
    out: dict[str, list[str]] = {}
    for key, spec in policies.items():
        ns = key.split("/", 1)[0]
        names = selected(spec, vms.get(ns, {}))
        out[key] = [f"{ns}/{n}" for n in names if ((vmis.get(f"{ns}/{n}") or {}).get("status") or {})
                    .get("phase") == "Running"]
    return out


def plan_all(policies: Mapping[str, PolicySpec], vms: Mapping[str, Mapping[str, Obj]], vmis: Mapping[str, Obj],
             signals: Mapping[str, DemandSignal], allocatable: Mapping[str, int],
             pods: Mapping[str, Sequence[PodRequest]], reserve: int, now: float) -> dict[str, PolicyPass]:
    """One pass over every policy's VMs together, so that a node's budget weighs all the VMs on it.

    `policies` maps namespace/name → spec; `vms` maps namespace → VM name → VM."""
    passes = {key: PolicyPass() for key in policies}
    owner: dict[str, str] = {}
    ours: dict[str, Entry] = {}
    for key in sorted(policies):
        spec, ns = policies[key], key.split("/", 1)[0]
        params = spec.params()
        result = passes[key]
        for name in selected(spec, vms.get(ns, {})):
            vm = vms[ns][name]
            vm_key = key_of(vm)
            if vm_key in owner:
                result.claimed_elsewhere[vm_key] = owner[vm_key]
                continue
            owner[vm_key] = key
            result.selected.append(vm_key)
            if balloon_disabled(vm):
                result.balloon_off.append(vm_key)
            vmi = vmis.get(vm_key)
            state = vm_state(vm, vmi, now) if vmi is not None else None
            if state is None:
                result.stopped.append(vm_key)
                continue
            ours[vm_key] = Entry(state, signals.get(vm_key, DemandSignal(None, None, False)), params)
    entries = list(ours.values())
    node_rooms = rooms(sorted({e.vm.node for e in entries}), ours, allocatable, pods, reserve)
    for entry, decision in zip(entries, DynamicMemory().plan(entries, node_rooms, now), strict=True):
        result = passes[owner[entry.vm.key]]
        result.entries.append(entry)
        result.decisions.append(decision)
        result.rooms[entry.vm.node] = node_rooms.get(entry.vm.node)
    return passes
