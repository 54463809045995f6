"""A pass and Python's cyclic garbage collector: the pass's objects are left out of the young
generations (a young collection would walk them all, alive and acyclic), the rest of the process's
young cycles are not held over until a full collection, and objects a caller froze stay frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from dynamic_memory.model import Cluster, DemandSignal, NodeState, PolicyParams, VMState
from dynamic_memory.policy.engine import Entry, plan
from dynamic_memory.quantity import GIB, MIB

NOW = 1_800_000_000.0


def fleet(vms: int = 2000) -> tuple[list[Entry], Cluster]:
    params = PolicyParams(startup=2 * GIB, minimum=2 * GIB, maximum=32 * GIB)
    entries = [Entry(VMState(f"ns/vm-{i}", f"n{i % 4}", 4 * GIB, 2 * GIB, 16 * GIB, 200 * MIB),
                     DemandSignal(3 * GIB, 3 * GIB, True), params) for i in range(vms)]
    nodes = {f"n{k}": NodeState(f"n{k}", 1024 * GIB, 512 * GIB) for k in range(4)}
    return entries, Cluster(nodes)


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def young_ids() -> set[int]:
    return {id(o) for generation in (0, 1) for o in gc.get_objects(generation)}


def test_a_pass_leaves_its_decisions_out_of_the_young_generations(collector_on: None) -> None:
    entries, cluster = fleet()
    gc.collect()
    decisions = plan(entries, cluster, NOW)
    _ = [[] for _ in range(1000)]  # allocations enough to start a young collection
    young = young_ids()
    assert len(decisions) == 2000
    assert not [d for d in decisions if id(d) in young]
    assert gc.isenabled()


class _Linked:
    """An object in a reference cycle with itself: garbage only the cyclic collector frees."""

    def __init__(self) -> None:
        self.me = self


def test_a_cycle_made_before_a_pass_is_left_to_the_young_collections(collector_on: None) -> None:
    """Moved to the oldest generation with the pass's objects, it would live until a full
    collection (the 1,000-VM operator held 49 MiB more so)."""
    entries, cluster = fleet(200)
    gc.collect()
    cycle = _Linked()
    gone = weakref.ref(cycle)
    del cycle
    plan(entries, cluster, NOW)
    gc.collect(1)  # the young generations only
    assert gone() is None


def test_objects_the_caller_froze_stay_frozen_through_a_pass(collector_on: None) -> None:
    entries, cluster = fleet(200)
    gc.collect()
    kept = [(i, str(i)) for i in range(1000)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        plan(entries, cluster, NOW)
        assert gc.get_freeze_count() == frozen
        assert id(kept) not in {id(o) for o in gc.get_objects()}  # frozen objects are in no generation
    finally:
        gc.unfreeze()
