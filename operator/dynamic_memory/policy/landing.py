"""The cluster plan: every resize is a live migration to another node, so a change is planned only
where it can land. Pure.

KubeVirt carries out a memory hotplug by migrating the VM; the target pod asks for the new guest
plus the launcher overhead and carries a required anti-affinity against the VM's own node
(`createMigrationPodAntiAffinityRule`). The source pod keeps its request until the migration
ends. So a change needs, on some *other* node the VM may run on, room for the whole new pod; and
KubeVirt runs only so many migrations at once (parallelMigrationsPerCluster,
parallelOutboundMigrationsPerNode). Changes are served heaviest weight first, grows before shrinks
within a weight, and each one takes its room from the node it is expected to land on, the least
allocated that fits, as kube-scheduler's default scoring picks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from heapq import heapify, heappop
from typing import TYPE_CHECKING

from dynamic_memory.model import (
    Action,
    Cluster,
    Decision,
    Limit,
    Mode,
    NodeState,
    Placement,
    Requirement,
    Toleration,
    VMState,
    Why,
    from_fields,
)
from dynamic_memory.quantity import align_down

if TYPE_CHECKING:
    from dynamic_memory.policy.engine import Entry

BLOCKING_EFFECTS = ("NoSchedule", "NoExecute")


def _requirement_holds(req: Requirement, labels: dict[str, str] | None, name: str) -> bool:
    value = name if req.key == "metadata.name" else (labels or {}).get(req.key)
    op = req.operator
    if op == "In":
        return value is not None and value in req.values
    if op == "NotIn":
        return value is None or value not in req.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and req.values:
        try:
            have, bound = int(value), int(req.values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def _tolerated(taint_key: str, taint_value: str, effect: str, tolerations: Sequence[Toleration]) -> bool:
    for t in tolerations:
        if t.effect and t.effect != effect:
            continue
        if t.operator == "Exists" and (not t.key or t.key == taint_key):
            return True
        if t.key == taint_key and t.value == taint_value:
            return True
    return False


def allows(placement: Placement | None, node: NodeState) -> bool:
    """True when a pod with this placement may be scheduled on the node (as kube-scheduler's
    NodeUnschedulable, NodeAffinity and TaintToleration filters decide)."""
    if not node.schedulable:
        return False
    if placement is None:  # most VMs: any untainted node
        return not any(t.effect in BLOCKING_EFFECTS for t in node.taints)
    labels = dict(node.labels)
    if any(labels.get(k) != v for k, v in placement.node_selector):
        return False
    if placement.terms and not any(all(_requirement_holds(r, labels, node.name) for r in term)
                                   for term in placement.terms):
        return False
    return all(_tolerated(t.key, t.value, t.effect, placement.tolerations)
               for t in node.taints if t.effect in BLOCKING_EFFECTS)


def _landing_nodes(vm: VMState, cluster: Cluster, may_run: dict[Placement | None, list[NodeState]]) -> list[NodeState]:
    """The nodes other than its own where this VM's migration target pod may be scheduled.
    `may_run` keeps, per placement, the nodes it allows: one scan of the cluster for each
    placement a pass meets, not for each change (most VMs share theirs)."""
    nodes = may_run.get(vm.placement)
    if nodes is None:
        nodes = may_run[vm.placement] = [n for n in cluster.nodes.values() if allows(vm.placement, n)]
    return [n for n in nodes if n.name != vm.node]


_GROW, _HOLD, _AUTO, _BLOCKED, _MIGRATIONS = Action.GROW, Action.HOLD, Mode.AUTO, Limit.BLOCKED, Limit.MIGRATIONS
"""Looked up once: reading an enum member off its class costs about 0.25 µs in Python 3.11, and
the plan reads some for every VM."""


Change = tuple[int, float, str, int, bool]
"""A change to place, as its place in the plan order: (-weight, shortness, key, index, sent)."""


def _changes(entries: Sequence[Entry], decisions: Sequence[Decision]) -> list[Change]:
    """The changes to place, in the order of `entries`, each keyed by its place in the plan: heaviest
    weight first, then the VM shortest of memory (largest grow relative to its size; a grow's ratio
    is negative, a shrink's positive, so grows come before shrinks), then by key for a stable plan.
    `sent`: its policy acts (mode Auto), read here once per VM."""
    return [(-e.params.weight, (d.current - d.target) / (d.current or 1), d.key, i, e.params.mode is _AUTO)
            for i, (e, d) in enumerate(zip(entries, decisions, strict=True))
            if d.target != d.current and d.limited is not _BLOCKED]


def _held(d: Decision, limit: Limit, notes: tuple[Why, ...]) -> Decision:
    return from_fields(Decision, (d.key, d.node, d.current, d.current, _HOLD, d.why_code, d.why_template,
                                  d.why_values, d.demand, d.wanted, limit, notes, d.landing))


def _hold(d: Decision, limit: Limit, why: Why) -> Decision:
    return _held(d, limit, (*d.notes, why))


_NO_SLOT = Why("MigrationsBusy", "KubeVirt's parallel migrations (parallelMigrationsPerCluster) are in use: "
                                 "the change waits for the next pass")
_NO_SLOT_NOTES = (_NO_SLOT,)
"""Shared by the many changes of a large pass that wait for a slot and have no other note."""


def land(entries: Sequence[Entry], decisions: Sequence[Decision], cluster: Cluster | None) -> list[Decision]:
    """The decisions, each change given the node it should land on, or cut or held when none can
    take it (order of `decisions` is kept). `cluster` None: no limits (a replay of single VMs)."""
    out = list(decisions)
    if cluster is None:
        return out
    free = {name: node.free for name, node in cluster.nodes.items()}
    outbound = {name: node.outbound for name, node in cluster.nodes.items()}
    left = cluster.migrations_left
    may_run: dict[Placement | None, list[NodeState]] = {}
    for entry in entries:  # changes under way whose target pods the scheduler has yet to place
        vm = entry.vm
        if vm.unlanded:
            fits = [n for n in _landing_nodes(vm, cluster, may_run) if free[n.name] >= vm.unlanded]
            if fits:
                best = max(fits, key=lambda n: (free[n.name] / max(n.allocatable, 1), n.name))
                free[best.name] -= vm.unlanded
    pool = cluster  # known not None inside `place`

    def place(i: int, acts: bool) -> None:
        nonlocal left
        d, vm = decisions[i], entries[i].vm
        if acts and outbound.get(vm.node, 0) >= pool.outbound_per_node:
            out[i] = _hold(d, _MIGRATIONS, Why(
                "MigrationsBusy", "{n} migrations already leave {node} (parallelOutboundMigrationsPerNode): "
                "{target:B} waits for the next pass", {"n": outbound.get(vm.node, 0), "node": vm.node,
                                                       "target": d.target}))
            return
        allowed = _landing_nodes(vm, pool, may_run)
        if not allowed:
            out[i] = _hold(d, Limit.LANDING, Why(
                "NoLandingNode", "no other node it may run on: a resize migrates it off {node}, and its "
                "placement allows no other schedulable node", {"node": vm.node}))
            return
        need = d.target + vm.overhead
        fits = [n for n in allowed if free[n.name] >= need]
        if fits:
            best = max(fits, key=lambda n: (free[n.name] / max(n.allocatable, 1), n.name))
            out[i] = d._replace(landing=best.name)
        else:
            roomiest = max(allowed, key=lambda n: (free[n.name], n.name))
            most = align_down(max(free[roomiest.name] - vm.overhead, 0), vm.alignment)
            step = entries[i].params.scale_up.step(d.current)
            if d.action is _GROW and most - d.current >= step:
                out[i] = d._replace(target=most, limited=Limit.ROOM, landing=roomiest.name, notes=(*d.notes, Why(
                    "CapacityLimited", "capped by room on other nodes: {node} can take {got:B} (+{overhead:B} "
                    "overhead), not {want:B}", {"node": roomiest.name, "got": most, "overhead": vm.overhead,
                                                "want": d.target})))
                need = most + vm.overhead
                best = roomiest
            else:
                out[i] = _hold(d, Limit.ROOM, Why(
                    "NoRoom", "no other node has room for {want:B} + {overhead:B} overhead (the most free is "
                    "{free:B} on {node}); holding at {current:B}", {"want": d.target, "overhead": vm.overhead,
                                                                    "free": max(free[roomiest.name], 0),
                                                                    "node": roomiest.name, "current": d.current}))
                return
        if acts:  # a recommendation shows where the change could land; only changes that are sent
            free[best.name] -= need  # take migrations and room from the ones after them
            outbound[vm.node] = outbound.get(vm.node, 0) + 1
            left -= 1

    # Only the head of the plan order needs sorting: once KubeVirt's migration slots are taken, no
    # room or slot changes hands, every sent change waits and the rest (recommendations) see the
    # same room in any order. A heap gives that head without sorting a large pass's thousands of
    # changes (a full sort took over half of the 100,000-VM plan).
    changes = _changes(entries, decisions)
    queue = changes.copy()
    heapify(queue)
    placed = bytearray(len(decisions))
    while queue and left > 0:
        _, _, _, i, acts = heappop(queue)
        placed[i] = 1
        place(i, acts)
    for _, _, _, i, acts in changes:  # in the order of `decisions`, as they lie in memory (not `*_, i, acts`:
        # a starred target builds a list each time, 3 ms of the 100,000-VM plan's 22,645 waiting changes)
        if not placed[i]:
            if acts:  # the wanted size stays on the decision
                d = decisions[i]
                out[i] = _held(d, _MIGRATIONS, (*d.notes, _NO_SLOT) if d.notes else _NO_SLOT_NOTES)
            else:
                place(i, False)
    return out
