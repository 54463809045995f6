"""A simulated KubeVirt cluster that runs any Policy through time.

KubeVirt's rules, as the real one applies them: guest sizes in 2 MiB blocks, at least 1 GiB,
never above maxGuest nor below the boot size while running; every resize is a live migration
to *another* node, which takes time, during which the VM cannot be resized again and both its
pods hold their requests; the scheduler puts the target pod on the least allocated other node
that has room and allows the VM, and a target pod that fits nowhere fails the migration after
five minutes; a node's pods request guest + overhead and must fit in allocatable − reserve.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dynamic_memory.history import DemandHistory
from dynamic_memory.model import (
    KUBEVIRT_BLOCK,
    KUBEVIRT_MIN_GUEST,
    Action,
    Blocker,
    Cluster,
    NodeState,
    Placement,
    PolicyParams,
    VMState,
)
from dynamic_memory.policy.engine import Entry, Policy
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.sources.cluster import PARALLEL_MIGRATIONS

DemandFn = Callable[[float], int]
"""Guest demand in bytes at a time in seconds."""


def launcher_overhead(guest: int, vcpus: int = 2) -> int:
    """virt-launcher overhead as KubeVirt computes it for a plain VM: 240Mi fixed, guest/512 for page
    tables, 8Mi per vCPU plus 8Mi for the IOThread, 32Mi for graphics."""
    return 240 * MIB + guest // 512 + 8 * MIB * vcpus + 8 * MIB + 32 * MIB


@dataclass(frozen=True, slots=True)
class SimNode:
    """A node: what the scheduler sees."""

    name: str
    allocatable: int
    reserve: int = GIB
    """Kept free for kubelet eviction thresholds and system daemons."""
    others: int = 0
    """Memory requests of pods on the node that are not our VMs."""


@dataclass(frozen=True, slots=True)
class SimVM:
    """A VM of the scenario: where it runs, its policy, what it would get without dynamic memory."""

    name: str
    node: str
    params: PolicyParams
    demand: DemandFn
    provisioned: int
    """Its static size (what `static` gives it)."""
    max_guest: int = 0
    """maxGuest; 0 means the policy's maximum."""
    pinned: bool = False
    """Its placement allows only its own node (a nodeSelector on the hostname): it can never migrate."""


HOSTNAME = "kubernetes.io/hostname"
UNSCHEDULABLE_TIMEOUT_S = 300.0
"""virt-controller fails a migration whose target pod stays Pending this long."""


@dataclass(slots=True)
class _Live:
    vm: SimVM
    assigned: int
    guest_at_boot: int
    max_guest: int
    history: DemandHistory
    node: str
    overhead: int
    last_grow: float | None = None
    migrating_until: float = -1.0
    pending: int = 0
    target_node: str | None = None
    """Where its migration's target pod runs; None while it is Pending (it fits nowhere)."""
    log: deque[tuple[float, Action]] = field(default_factory=deque)

    def pod(self, size: int) -> int:
        """A launcher pod's request for a guest of `size`: KubeVirt keeps the overhead on hotplug."""
        return size + self.overhead


@dataclass
class Timeline:
    """What happened, step by step, for the report and the plot."""

    t: list[float] = field(default_factory=list)
    demand: dict[str, list[int]] = field(default_factory=dict)
    assigned: dict[str, list[int]] = field(default_factory=dict)
    node_used: dict[str, list[int]] = field(default_factory=dict)
    """Requests of our VMs' pods (guest + overhead) on each node, migration target pods included."""
    node_of: dict[str, list[str]] = field(default_factory=dict)
    """The node each VM runs on, step by step (every resize moves it)."""
    node_capacity: dict[str, list[int]] = field(default_factory=dict)
    """allocatable − reserve − other pods."""

    def short_steps(self, vm: str) -> int:
        """The steps at which this VM's demand exceeded its assigned memory (it paged or swapped)."""
        return sum(d > a for d, a in zip(self.demand[vm], self.assigned[vm], strict=True))


@dataclass
class SimResult:
    """One policy's run of one scenario."""

    policy: str
    timeline: Timeline
    resizes: int = 0
    violations: list[str] = field(default_factory=list)
    """KubeVirt rules a decision broke (must stay empty for our engine)."""
    reasons: list[str] = field(default_factory=list)
    """The words of every change, in order (the first few go in the report)."""
    fresh_signals: int = 0
    """Decisions made with a fresh demand sample (0: the policy only ever saw unknown demand)."""
    migrated_bytes: int = 0
    """Guest memory copied by the resizes' live migrations (each copies the whole VM)."""
    failed_migrations: int = 0
    """Resizes whose target pod fitted on no other node (failed after five minutes)."""
    stale_s: float = 0.0
    follows_demand: bool = True

    def warnings(self) -> list[str]:
        """What makes this run's figures meaningless, in words (empty when nothing does)."""
        out = []
        if not self.fresh_signals:
            out.append(f"never received a fresh sample (samples older than {self.stale_s:.0f}s count as missing), "
                       "so every VM stayed at its start size: the figures say nothing about the policy")
        if not self.resizes and self.follows_demand:
            out.append("decided no resize in the whole run")
        return out

    def summary(self, vm_count: int, days: float, static_bytes: int) -> dict[str, float | int | str | list[str]]:
        """Figures for the comparison table."""
        tl = self.timeline
        steps = len(tl.t)
        total_assigned = sum(sum(v) for v in tl.assigned.values())
        pressured = sum(tl.short_steps(name) for name in tl.demand)
        over = sum(u > c for node in tl.node_used for u, c in zip(tl.node_used[node], tl.node_capacity[node],
                                                                 strict=True))
        return {
            "policy": self.policy,
            "mean_assigned_gib": round(total_assigned / max(steps, 1) / GIB, 2),
            "memory_ratio": round(total_assigned / max(static_bytes * steps, 1), 4),
            "pressure_fraction": round(pressured / max(steps * vm_count, 1), 5),
            "resizes_per_vm_day": round(self.resizes / max(vm_count * days, 1e-9), 3),
            "migrated_gib_per_vm_day": round(self.migrated_bytes / GIB / max(vm_count * days, 1e-9), 2),
            "failed_migrations": self.failed_migrations,
            "node_over_capacity_steps": over,
            "kubevirt_violations": len(self.violations),
            "warnings": self.warnings(),
        }


def _kubevirt_check(live: _Live, target: int) -> str | None:
    """The reason KubeVirt would refuse a live guest change, or None."""
    name = live.vm.name
    if target % KUBEVIRT_BLOCK:
        return f"{name}: {target} is not a multiple of 2Mi"
    if target < KUBEVIRT_MIN_GUEST:
        return f"{name}: {target} is below 1Gi"
    if target > live.max_guest:
        return f"{name}: {target} is above maxGuest {live.max_guest} (RestartRequired)"
    if target < live.guest_at_boot:
        return f"{name}: {target} is below guestAtBoot {live.guest_at_boot} (RestartRequired)"
    return None


def _schedule(lives: Sequence[_Live], live: _Live, need: int, capacity: dict[str, int],
              allocatable: dict[str, int]) -> str | None:
    """kube-scheduler's pick for a migration target pod: another node with room, the least allocated."""
    if live.vm.pinned:
        return None
    free = _free(lives, capacity)
    fits = [n for n in capacity if n != live.node and free[n] >= need]
    return max(fits, key=lambda n: (free[n] / allocatable[n], n)) if fits else None


def _free(lives: Sequence[_Live], capacity: dict[str, int]) -> dict[str, int]:
    """Each node's room: capacity minus the requests of every pod on it, migration targets included."""
    free = dict(capacity)
    for live in lives:
        free[live.node] -= live.pod(live.assigned)
        if live.target_node is not None:
            free[live.target_node] -= live.pod(live.pending)
    return free


def _cluster(lives: Sequence[_Live], nodes: Sequence[SimNode], capacity: dict[str, int]) -> Cluster:
    free = _free(lives, capacity)
    outbound: dict[str, int] = {}
    for live in lives:
        if live.pending:
            outbound[live.node] = outbound.get(live.node, 0) + 1
    return Cluster({n.name: NodeState(n.name, n.allocatable, free[n.name], {HOSTNAME: n.name},
                                      outbound=outbound.get(n.name, 0)) for n in nodes},
                   migrations_left=max(PARALLEL_MIGRATIONS - sum(outbound.values()), 0))


def simulate(policy: Policy, nodes: Sequence[SimNode], vms: Sequence[SimVM], *, duration_s: float,
             step_s: float, migration_s: Callable[[int], float] = lambda guest: 10 + 2 * guest / GIB,
             stale_s: float = 120.0, boot_at_provisioned: bool = False) -> SimResult:
    """Run `policy` over the scenario; decisions every `step_s`, metrics scraped at the same rate."""
    lives = []
    for sim_vm in vms:
        boot = sim_vm.provisioned if boot_at_provisioned else sim_vm.params.startup
        # a statically sized VM has no hotplug headroom: its ceiling is what it was given
        max_guest = boot if boot_at_provisioned else sim_vm.max_guest or max(sim_vm.params.maximum, boot)
        spec = policy.signal_spec(sim_vm.params)
        lives.append(_Live(sim_vm, boot, boot, max_guest, DemandHistory(spec, stale_s), sim_vm.node,
                           launcher_overhead(boot)))
    result = SimResult(policy.name, Timeline(), stale_s=stale_s, follows_demand=policy.follows_demand)
    tl = result.timeline
    for live in lives:
        tl.demand[live.vm.name] = []
        tl.assigned[live.vm.name] = []
        tl.node_of[live.vm.name] = []
    for node in nodes:
        tl.node_used[node.name] = []
        tl.node_capacity[node.name] = []
    capacity = {n.name: n.allocatable - n.reserve - n.others for n in nodes}
    allocatable = {n.name: n.allocatable for n in nodes}

    steps = int(duration_s // step_s)
    for k in range(steps + 1):
        now = k * step_s
        for live in lives:  # migrations that ended: the VM moves, or stays where it was
            if live.pending and now >= live.migrating_until:
                if live.target_node is not None:
                    live.assigned, live.node = live.pending, live.target_node
                else:
                    result.failed_migrations += 1
                live.pending, live.target_node = 0, None
        entries = []
        for live in lives:
            while live.log and live.log[0][0] <= now - 3600:
                live.log.popleft()
            grows = sum(1 for _, a in live.log if a is Action.GROW)
            blocked = Blocker.HOTPLUG_IN_PROGRESS if live.pending else None
            placement = Placement(((HOSTNAME, live.node),)) if live.vm.pinned else None
            # while a change settles the VM may end at either size: count the larger
            state = VMState(live.vm.name, live.node, max(live.pending, live.assigned), live.guest_at_boot,
                            live.max_guest, live.overhead, live.last_grow, grows, len(live.log) - grows, blocked,
                            own_change=bool(live.pending), placement=placement)
            signal = live.history.signal(now)
            result.fresh_signals += signal.latest is not None
            entries.append(Entry(state, signal, live.vm.params))
        decisions = policy.plan(entries, _cluster(lives, nodes, capacity), now)
        for live, d in zip(lives, decisions, strict=True):
            if d.changes and live.vm.params.mode.value == "Auto" and not live.pending:
                problem = _kubevirt_check(live, d.target)
                if problem:
                    result.violations.append(f"t={now:.0f}s {problem}")
                    continue
                live.pending = d.target
                live.target_node = _schedule(lives, live, live.pod(d.target), capacity, allocatable)
                if live.target_node is None:
                    live.migrating_until = now + UNSCHEDULABLE_TIMEOUT_S
                    continue
                live.migrating_until = now + migration_s(max(d.target, live.assigned))
                result.migrated_bytes += live.assigned
                if d.action is Action.GROW:
                    live.last_grow = now
                live.log.append((now, d.action))
                result.resizes += 1
                result.reasons.append(f"t={now / 3600:.2f}h {live.vm.name}: {d.action.value} "
                                      f"{d.current // MIB}Mi → {d.target // MIB}Mi on {live.node} → "
                                      f"{live.target_node}: {d.reason}")
        tl.t.append(now)
        for live in lives:
            demand = live.vm.demand(now)
            tl.demand[live.vm.name].append(demand)
            tl.assigned[live.vm.name].append(live.assigned)
            tl.node_of[live.vm.name].append(live.node)
            live.history.push(now, demand)
        free = _free(lives, capacity)
        for n in capacity:
            tl.node_used[n].append(capacity[n] - free[n])
            tl.node_capacity[n].append(capacity[n])
    return result
