"""Invariants of the engine over random inputs (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamic_memory.model import (
    Action,
    Blocker,
    Cluster,
    DemandSignal,
    Limit,
    NodeState,
    Placement,
    PolicyParams,
    ScaleRules,
    VMState,
)
from dynamic_memory.policy.engine import Entry, plan
from dynamic_memory.policy.target import decide, live_bounds
from dynamic_memory.quantity import GIB, MIB

BLOCK = 2 * MIB
blocks = st.integers(min_value=512, max_value=64 * 512).map(lambda n: n * BLOCK)  # 1 GiB .. 64 GiB
maybe_bytes = st.none() | st.integers(min_value=0, max_value=80 * GIB)


@st.composite
def params(draw: st.DrawFn) -> PolicyParams:
    lo, start, hi = sorted(draw(st.lists(blocks, min_size=3, max_size=3)))
    return PolicyParams(startup=start, minimum=lo, maximum=hi,
                        buffer_percent=draw(st.integers(5, 2000)),
                        minimum_buffer=draw(st.integers(0, 4 * GIB)),
                        weight=draw(st.integers(0, 10000)),
                        scale_up=ScaleRules(0, draw(st.integers(0, 2 * GIB)), draw(st.integers(0, 100)),
                                            draw(st.integers(1, 60))),
                        scale_down=ScaleRules(draw(st.floats(0, 86400)), draw(st.integers(0, 4 * GIB)),
                                              draw(st.integers(0, 100)), draw(st.integers(1, 60))))


@st.composite
def vm_states(draw: st.DrawFn, node: str = "n", key: str = "vm") -> VMState:
    boot, assigned, max_guest = sorted(draw(st.lists(blocks, min_size=3, max_size=3)))
    return VMState(key, node, assigned, boot, max_guest, draw(st.integers(0, GIB)),
                   draw(st.none() | st.floats(0, 10**6)), draw(st.integers(0, 10)), draw(st.integers(0, 10)),
                   draw(st.none() | st.sampled_from(Blocker)))


signals = st.builds(DemandSignal, maybe_bytes, maybe_bytes, st.booleans(), st.booleans())


@given(vm_states(), signals, params(), st.floats(0, 2 * 10**6))
@settings(max_examples=400)
def test_target_is_within_live_bounds_and_aligned(vm: VMState, signal: DemandSignal, p: PolicyParams,
                                                  now: float) -> None:
    d = decide(vm, signal, p, now)
    assert len(d) == len(d._fields)  # the hot paths build decisions from every field, in order
    floor, ceiling = live_bounds(vm, p)
    if d.action is not Action.HOLD:
        assert floor <= d.target <= ceiling
        assert d.target % BLOCK == 0
    else:
        assert d.target == vm.assigned


@given(vm_states(), params(), st.floats(0, 2 * 10**6), st.booleans(), maybe_bytes)
def test_unknown_demand_never_shrinks(vm: VMState, p: PolicyParams, now: float, pressure: bool,
                                      stale_peak: int | None) -> None:
    floor, ceiling = live_bounds(vm, p)
    d = decide(vm, DemandSignal(None, stale_peak, True, pressure), p, now)
    if floor <= vm.assigned <= ceiling:  # out-of-bounds VMs are moved in whatever the metrics say
        assert d.target >= vm.assigned


@given(vm_states(), signals, params(), st.floats(0, 2 * 10**6))
def test_decisions_are_deterministic(vm: VMState, signal: DemandSignal, p: PolicyParams, now: float) -> None:
    assert decide(vm, signal, p, now) == decide(vm, signal, p, now)


HOSTNAME = "kubernetes.io/hostname"


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[Entry], Cluster]:
    names = [f"node-{i}" for i in range(draw(st.integers(1, 5)))]
    count = draw(st.integers(1, 8))
    entries = []
    for i in range(count):
        node = draw(st.sampled_from(names))
        vm = draw(vm_states(node=node, key=f"vm-{i}"))
        pinned = draw(st.booleans()) and draw(st.booleans())
        placement = Placement(((HOSTNAME, node),)) if pinned else None
        entries.append(Entry(vm._replace(placement=placement), draw(signals), draw(params())))
    nodes = {n: NodeState(n, 128 * GIB, draw(st.integers(-GIB, 96 * GIB)), {HOSTNAME: n},
                          outbound=draw(st.integers(0, 3))) for n in names}
    return entries, Cluster(nodes, draw(st.integers(0, 6)), draw(st.integers(1, 3)))


@given(clusters(), st.floats(0, 2 * 10**6))
@settings(max_examples=300)
def test_the_plan_never_overfills_a_node_and_moves_every_change_elsewhere(world: tuple[list[Entry], Cluster],
                                                                          now: float) -> None:
    entries, cluster = world
    decisions = plan(entries, cluster, now)
    assert all(len(d) == len(d._fields) for d in decisions)
    by_key = {e.vm.key: e for e in entries}
    changes = [d for d in decisions if d.changes]
    for name, node in cluster.nodes.items():
        # the target pods of this pass's changes fit in what the node has free now (the source
        # pods keep their requests until their migrations end, so they are not counted as freed)
        assert sum(d.target + by_key[d.key].vm.overhead for d in changes if d.landing == name) <= max(node.free, 0)
        leaving = [d for d in changes if d.node == name]
        assert node.outbound + len(leaving) <= max(cluster.outbound_per_node, node.outbound)
    assert len(changes) <= cluster.migrations_left
    for d in changes:
        e = by_key[d.key]
        assert d.landing is not None and d.landing != e.vm.node
        assert e.vm.placement is None  # a pinned VM has no landing place and is never changed
        assert e.vm.blocked is None


@given(clusters(), st.floats(0, 2 * 10**6), st.integers(0, 10000))
@settings(max_examples=300)
def test_heavier_weights_are_planned_first(world: tuple[list[Entry], Cluster], now: float, cut: int) -> None:
    """What the VMs of weight ≥ cut get does not depend on the lighter VMs at all."""
    entries, cluster = world
    heavy = [e for e in entries if e.params.weight >= cut]
    together = {d.key: d for d in plan(entries, cluster, now)}
    alone = {d.key: d for d in plan(heavy, cluster, now)}
    assert all(together[k] == alone[k] for k in alone)


@given(clusters(), st.floats(0, 2 * 10**6))
@settings(max_examples=300)
def test_a_change_waits_for_a_migration_slot_only_when_every_slot_is_taken(world: tuple[list[Entry], Cluster],
                                                                            now: float) -> None:
    """A change held for KubeVirt's migration limits, whose own node still lets a migration leave,
    means the plan used every cluster-wide slot."""
    entries, cluster = world
    decisions = plan(entries, cluster, now)
    changes = [d for d in decisions if d.changes]
    leaving = {name: node.outbound + sum(d.node == name for d in changes) for name, node in cluster.nodes.items()}
    waiting = [d for d in decisions if d.limited is Limit.MIGRATIONS and leaving[d.node] < cluster.outbound_per_node]
    if waiting:
        assert len(changes) == cluster.migrations_left
