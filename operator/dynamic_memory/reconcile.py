"""One pass over every policy, from the watch caches to decisions. No kopf, no I/O: the handlers
take a Snapshot of the indexes, ask Prometheus, and send what the plan returns.

All policies are planned together: every change is a migration that takes room on another node
and one of KubeVirt's parallel migrations, so the whole cluster is one plan, heaviest weights first
(weights are per policy, so they only matter between policies).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynamic_memory.api import PolicySpec
from dynamic_memory.learning import learnt
from dynamic_memory.model import Cluster, Decision, DemandSignal, NodeState, PolicyParams
from dynamic_memory.policy.engine import DynamicMemory, Entry, SignalSpec
from dynamic_memory.quantity import parse_duration
from dynamic_memory.sources.cluster import PodInfo, cluster, launcher_pod
from dynamic_memory.sources.kubevirt import OWN_BLOCKS, _condition, _get, balloon_disabled, key_of, vm_state
from dynamic_memory.sources.prometheus import Group, MetricsView

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """What the watch caches hold at the start of a pass (plain dicts and plain data)."""

    policies: Mapping[str, PolicySpec]
    """namespace/name → spec of every policy that is not Off."""
    vms: Mapping[str, Mapping[str, Obj]]
    """namespace → VM name → VM."""
    vmis: Mapping[str, Obj]
    """namespace/name → VMI."""
    nodes: Sequence[NodeState] = ()
    pods: Sequence[PodInfo] = ()
    """Every bound, not finished pod."""
    migrations: Mapping[str, bool] = field(default_factory=dict)
    """namespace/VMI name → a VirtualMachineInstanceMigration of it is pending or running."""
    limits: tuple[int, int] = (5, 2)
    """KubeVirt's (parallelMigrationsPerCluster, parallelOutboundMigrationsPerNode)."""
    own_cap: int = 1000
    """The operator's own limit on resizes under way."""
    reserve: int = 0
    """Kept free on every node beyond pod requests."""


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
    raised_floor: list[str] = field(default_factory=list)
    """VMs that booted above the policy's startup (restarted after a grow): they cannot shrink below
    that size until they are stopped, when the boot size is set back."""
    unplug_gaps: dict[str, int] = field(default_factory=dict)
    """VMs whose guest kept part of an unplug (guestCurrent above guestRequested), in bytes."""
    plug_gaps: dict[str, int] = field(default_factory=dict)
    """VMs whose guest has not plugged all it was given (guestCurrent below guestRequested), in bytes."""
    learned: list[str] = field(default_factory=list)
    """VMs sized with a setting of their own, learnt from their past days (learnPerVM)."""


def metrics_group(params: PolicyParams, spec: PolicySpec) -> tuple[SignalSpec, MetricsView]:
    """The signal and metric settings VMs sized with `params` under this policy are queried with."""
    m = spec.metrics
    view = MetricsView(m.nameLabel, m.namespaceLabel, m.matchers, parse_duration(m.staleAfter))
    return DynamicMemory().signal_spec(params), view


def metrics_groups(policies: Mapping[str, PolicySpec], running: Mapping[str, Sequence[str]],
                   learned: Mapping[str, PolicyParams] | None = None) -> tuple[dict[Group, list[str]],
                                                                             dict[str, list[Group]]]:
    """Prometheus query groups for all policies: one per distinct windows and metric settings, whatever the
    number of policies or VMs (`running` maps policy key → its running VMs' keys; `learned`, VM key → the
    setting it learnt, when its windows are its own); and each policy's groups."""
    found: dict[tuple[SignalSpec, MetricsView], tuple[set[str], list[str], list[str]]] = {}
    for key, spec in policies.items():
        params = spec.params()
        namespaces, vms, members = found.setdefault(metrics_group(params, spec), (set(), [], []))
        namespaces.add(key.split("/", 1)[0])
        members.append(key)
        for vm in running.get(key, ()):
            own = (learned or {}).get(vm)
            if own is None:
                vms.append(vm)
                continue
            more = found.setdefault(metrics_group(own, spec), (set(), [], []))
            more[0].add(key.split("/", 1)[0])
            more[1].append(vm)
            more[2].append(key)
    groups: dict[Group, list[str]] = {}
    of_policy: dict[str, list[Group]] = {}
    for (sig, view), (ns, vms, members) in found.items():
        group = Group(sig, view, frozenset(ns))
        groups[group] = vms
        for member in dict.fromkeys(members):
            of_policy.setdefault(member, []).append(group)
    return groups, of_policy


def learned_params(snapshot: Snapshot, running: Mapping[str, Sequence[str]], now: float) -> dict[str, PolicyParams]:
    """Running VM key → the setting it learnt, for the VMs of policies with learnPerVM that have learnt
    one (the others are sized with their policy's)."""
    out = {}
    for key, vms in running.items():
        params = snapshot.policies[key].params()
        if not params.learn:
            continue
        for vm_key in vms:
            ns, name = vm_key.split("/", 1)
            chosen = learnt(params, snapshot.vms[ns][name], now)
            if chosen is not None:
                out[vm_key] = chosen
    return out


def selected(spec: PolicySpec, vms: Mapping[str, Obj]) -> list[str]:
    """Names of the policy's VMs among a namespace's VMs, sorted (stable output)."""
    return sorted(name for name, vm in vms.items()
                  if spec.selector.matches(dict((vm.get("metadata") or {}).get("labels") or {})))


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


def stopped(vm: Obj) -> bool:
    """KubeVirt reports the VM as stopped and nothing asks it to start (a VM starting or stopping is
    neither: a boot-size patch then would change maxGuest under a starting VMI)."""
    spec = vm.get("spec") or {}
    return (_get(vm, "status", "printableStatus") == "Stopped" and not spec.get("running")
            and spec.get("runStrategy") not in ("Always", "RerunOnFailure"))


def migrating_vmis(snapshot: Snapshot) -> dict[str, str]:
    """VMIs that use one of KubeVirt's parallel migrations now (a migration pending or running, or a
    hotplug waiting for its migration), mapped to the node they leave."""
    out = {}
    for key, vmi in snapshot.vmis.items():
        hotplug = _condition(vmi, "HotMemoryChange")
        if snapshot.migrations.get(key) or (hotplug and hotplug.get("status") == "True"):
            out[key] = str(_get(vmi, "status", "nodeName") or "")
    return out


@dataclass
class Plan:
    """One pass's outcome: each policy's part, and the cluster it was planned on."""

    passes: dict[str, PolicyPass]
    cluster: Cluster


def plan_all(snapshot: Snapshot, signals: Mapping[str, DemandSignal], now: float,
             learned: Mapping[str, PolicyParams] | None = None) -> Plan:
    """One pass over every policy's VMs together: a change takes room and a migration that another
    policy's VM might need, and weights decide across policies. `learned`: the VMs sized with a
    setting of their own (learned_params)."""
    passes = {key: PolicyPass() for key in snapshot.policies}
    owner: dict[str, str] = {}
    ours: dict[str, Entry] = {}
    launchers: dict[str, list[PodInfo]] = defaultdict(list)
    for pod in snapshot.pods:
        if pod.created_by:
            launchers[pod.created_by].append(pod)
    for key in sorted(snapshot.policies):
        spec, ns = snapshot.policies[key], key.split("/", 1)[0]
        params = spec.params()
        result = passes[key]
        for name in selected(spec, snapshot.vms.get(ns, {})):
            vm = snapshot.vms[ns][name]
            vm_key = key_of(vm)
            if vm_key in owner:
                result.claimed_elsewhere[vm_key] = owner[vm_key]
                continue
            owner[vm_key] = key
            result.selected.append(vm_key)
            if balloon_disabled(vm):
                result.balloon_off.append(vm_key)
            vmi = snapshot.vmis.get(vm_key)
            if vmi is None:
                if stopped(vm):
                    result.stopped.append(vm_key)
                continue
            pods = launchers.get(str(_get(vmi, "metadata", "uid"))) or []
            launcher = launcher_pod(pods, vmi)
            state = vm_state(vm, vmi, now, pod_request=launcher.memory if launcher else None,
                             placement=launcher.placement if launcher else None,
                             migrating=bool(snapshot.migrations.get(vm_key)))
            if state is None:
                continue
            if state.blocked in OWN_BLOCKS and not any(p.node and p.node != state.node for p in pods):
                state = state._replace(unlanded=state.assigned + state.overhead)  # its target pod is not placed yet
            if state.guest_at_boot > params.startup:
                result.raised_floor.append(vm_key)
            if state.unplug_gap:
                result.unplug_gaps[vm_key] = state.unplug_gap
            if state.plug_gap:
                result.plug_gaps[vm_key] = state.plug_gap
            own = (learned or {}).get(vm_key)
            if own is not None:
                result.learned.append(vm_key)
            ours[vm_key] = Entry(state, signals.get(vm_key, DemandSignal(None, None, False)), own or params)
    world = cluster(snapshot.nodes, snapshot.pods, migrating_vmis(snapshot), snapshot.limits, snapshot.own_cap,
                    snapshot.reserve)
    entries = list(ours.values())
    for entry, decision in zip(entries, DynamicMemory().plan(entries, world, now), strict=True):
        result = passes[owner[entry.vm.key]]
        result.entries.append(entry)
        result.decisions.append(decision)
    return Plan(passes, world)
