"""Invariants of the engine over random inputs (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dynamic_memory.model import Action, DemandSignal, PolicyParams, ScaleRules, VMState
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
                   draw(st.none() | st.just("migrating")))


signals = st.builds(DemandSignal, maybe_bytes, maybe_bytes, st.booleans(), st.booleans())


@given(vm_states(), signals, params(), st.floats(0, 2 * 10**6))
@settings(max_examples=400)
def test_target_is_within_live_bounds_and_aligned(vm: VMState, signal: DemandSignal, p: PolicyParams,
                                                  now: float) -> None:
    d = decide(vm, signal, p, now)
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


@st.composite
def nodes(draw: st.DrawFn) -> tuple[list[Entry], int]:
    count = draw(st.integers(1, 6))
    entries = [Entry(draw(vm_states(key=f"vm-{i}")), draw(signals), draw(params())) for i in range(count)]
    held = sum(e.vm.assigned for e in entries)
    room = draw(st.integers(held, held + 64 * GIB))  # the node holds what runs on it now
    return entries, room


@given(nodes(), st.floats(0, 2 * 10**6))
@settings(max_examples=300)
def test_never_past_the_room_now_or_after(node: tuple[list[Entry], int], now: float) -> None:
    entries, room = node
    decisions = plan(entries, {"n": room}, now)
    assert sum(max(d.current, d.target) for d in decisions) <= room
    for e, d in zip(entries, decisions, strict=True):
        floor, _ = live_bounds(e.vm, e.params)
        if e.vm.blocked:
            assert d.target == e.vm.assigned
        elif d.changes and floor <= e.vm.assigned:
            assert d.target >= min(floor, e.vm.assigned)
