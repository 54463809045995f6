"""decide(): one table row per rule of the per-VM decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from dynamic_memory.model import Action, Blocker, DemandSignal, PolicyParams, VMState
from dynamic_memory.policy.target import decide, demand_with_pressure, fit, live_bounds, with_buffer
from dynamic_memory.quantity import GIB, MIB, align_up

H = 3600.0
NOW = 100 * H
PARAMS = PolicyParams(startup=2 * GIB, minimum=GIB, maximum=16 * GIB)


def gib(x: float) -> int:
    return int(x * GIB)


@dataclass
class Row:
    name: str
    assigned: float
    latest: float | None
    peak: float | None
    action: Action
    target: int | None = None
    code: str = ""
    boot: float = 2
    max_guest: float = 16
    enough_history: bool = True
    pressure: bool = False
    last_grow_h_ago: float | None = None
    grows: int = 0
    shrinks: int = 0
    blocked: Blocker | None = None
    recurring: float | None = None
    soon: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def sized(demand: float, *, bump: bool = False, doublings: int = 0) -> int:
    d = gib(demand)
    d = d + d * 10 // 100 if bump else d
    return align_up(with_buffer(d, PARAMS, doublings), 2 * MIB)


ROWS = [
    Row("short guest grows at once, sized +10%", 4, 5, 5, Action.GROW, sized(5, bump=True), "DemandRose"),
    Row("buffer short by a step grows", 4, 3.9, 3.9, Action.GROW, sized(3.9), "DemandRose"),
    Row("buffer short by less than a step holds", 4, 3.2, 3.2, Action.HOLD, code="Steady"),
    Row("demand + buffer met holds", 6, 5, 5, Action.HOLD, code="Steady"),
    Row("fallen demand shrinks after the window", 8, 2, 3, Action.SHRINK, sized(3), "DemandFell",
        last_grow_h_ago=8),
    Row("never resized: shrink allowed once metrics cover the window", 8, 2, 3, Action.SHRINK, sized(3), "DemandFell"),
    Row("recent grow: shrink waits for the window", 8, 2, 3, Action.HOLD, code="ShrinkWaiting", last_grow_h_ago=1),
    Row("metrics younger than minHistory: no shrink", 8, 2, 3, Action.HOLD, code="WarmingUp",
        enough_history=False),
    Row("shrinks per hour are limited", 8, 2, 3, Action.HOLD, code="ShrinkRateLimited", shrinks=1),
    Row("shrink smaller than the step holds", 5, 3.2, 3.2, Action.HOLD, code="Steady"),
    Row("unknown demand never shrinks", 12, None, None, Action.HOLD, code="DemandUnknown"),
    Row("unknown latest with a stale peak never shrinks", 12, None, 1, Action.HOLD, code="DemandUnknown"),
    Row("mid-migration VM is left alone", 4, 9, 9, Action.HOLD, code="Migrating", blocked=Blocker.MIGRATING),
    Row("pressure raises demand to what it has, and doubles the buffer", 4, 2, 2, Action.GROW,
        sized(4, bump=True, doublings=1), "DemandRose", pressure=True),
    Row("pressure after a grow this hour: the buffer doubled twice", 4, 2, 2, Action.GROW,
        sized(4, bump=True, doublings=2), "DemandRose", pressure=True, grows=1),
    Row("never below the boot size", 6, 1, 1, Action.HOLD, code="Steady", boot=6),
    Row("never above maxGuest", 4, 30, 30, Action.GROW, gib(16), "DemandRose"),
    Row("never above the policy maximum", 4, 30, 30, Action.GROW, gib(16), "DemandRose", max_guest=64),
    Row("outside the bounds: moved in", 20, 5, 5, Action.SHRINK, gib(16), "OutOfBounds", max_guest=64),
    Row("grows per hour are limited", 4, 5, 5, Action.HOLD, code="GrowRateLimited", grows=4),
    Row("a second grow in the hour doubles the buffer", 4, 5, 5, Action.GROW, sized(5, bump=True, doublings=1),
        "DemandRose", grows=1),
    # time of day: 6Gi + 20 % = 7.2Gi, 3686.4 blocks of 2Mi, rounded up to 3687
    Row("a peak its past days had in the coming hour: grows before it", 4, 2, 2, Action.GROW, 3687 * 2 * MIB,
        "PeakAhead", soon=6),
    Row("no peak above its size in the coming hour: no grow ahead", 8, 2, 2, Action.SHRINK, 3 * GIB, "DemandFell",
        soon=6),
    Row("grows per hour are limited, also ahead of a peak", 4, 3, 3, Action.HOLD, code="Steady", grows=4, soon=6),
    Row("its past days' peak of the coming hours keeps it from shrinking", 8, 2, 3, Action.HOLD, code="Steady",
        recurring=7),
    Row("a shrink goes no lower than its past days' peak of the coming hours", 12, 2, 3, Action.SHRINK,
        3687 * 2 * MIB, "DemandFell", recurring=6),
    Row("a past days' peak below the window's changes nothing", 8, 2, 3, Action.SHRINK, 4 * GIB, "DemandFell",
        recurring=2),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_decide(row: Row) -> None:
    vm = VMState("ns/vm", "node", gib(row.assigned), gib(row.boot), gib(row.max_guest), 0,
                 None if row.last_grow_h_ago is None else NOW - row.last_grow_h_ago * H,
                 row.grows, row.shrinks, row.blocked)
    signal = DemandSignal(None if row.latest is None else gib(row.latest),
                          None if row.peak is None else gib(row.peak), row.enough_history, row.pressure,
                          None if row.recurring is None else gib(row.recurring),
                          None if row.soon is None else gib(row.soon))
    d = decide(vm, signal, PARAMS, NOW)
    assert (d.action, d.why.code) == (row.action, row.code), d.reason
    assert d.target == (row.target if row.target is not None else vm.assigned), d.reason
    assert d.reason  # every decision explains itself in words


def test_reason_reads_like_the_issue_example() -> None:
    vm = VMState("ns/vm", "node", gib(3.3), gib(2), gib(16))
    d = decide(vm, DemandSignal(gib(3.1), gib(3.1)), PARAMS, NOW)
    assert d.reason == "demand 3.1Gi + 20% buffer (at least 1Gi) → 4.1Gi"


def test_reasons_say_when_sized_for_the_time_of_day() -> None:
    vm = VMState("ns/vm", "node", gib(4), gib(2), gib(16))
    ahead = decide(vm, DemandSignal(gib(2), gib(2), soon=gib(6)), PARAMS, NOW)
    assert ahead.reason == "peak of the coming hour on past days 6Gi + 20% buffer (at least 1Gi) → 7.2Gi: growing " \
                           "before it comes"
    held = decide(VMState("ns/vm", "node", gib(8), gib(2), gib(16)), DemandSignal(gib(2), gib(3), recurring=gib(7)),
                  PARAMS, NOW)
    assert held.reason == ("peak of the coming hours at this time on past days 7Gi + 20% buffer (at least 1Gi) → "
                           "8.4Gi; within 1Gi of 8Gi: not worth a migration")


def test_reason_shows_every_factor_of_a_grow() -> None:
    vm = VMState("ns/vm", "node", gib(2), gib(2), gib(16), grows_last_hour=1)
    d = decide(vm, DemandSignal(gib(3.1), gib(3.1)), PARAMS, NOW)
    assert d.reason == ("guest short of memory: demand 3.1Gi +10% (it ran short) + 20% buffer ×2 "
                        "(grew 1× this hour) (at least 2Gi) → 5.41Gi")


@pytest.mark.parametrize(("latest", "peak", "pressure", "assigned", "expected"), [
    (1, 2, False, 4, (1, 2)),
    (3, 2, False, 4, (3, 3)),   # the peak is at least the newest sample
    (1, 2, True, 4, (4, 4)),    # pressure: at least what it has
    (None, None, True, 4, (4, 4)),
    (None, None, False, 4, (None, None)),
])
def test_demand_with_pressure(latest: int | None, peak: int | None, pressure: bool, assigned: int,
                              expected: tuple[int | None, int | None]) -> None:
    assert demand_with_pressure(DemandSignal(latest, peak, True, pressure), assigned) == expected


@pytest.mark.parametrize(("demand", "percent", "minimum", "expected"), [
    (10 * GIB, 20, GIB, 12 * GIB),      # percent wins on big guests
    (2 * GIB, 20, GIB, 3 * GIB),        # the absolute minimum wins on small ones
    (10 * GIB, 2000, GIB, 210 * GIB),   # Hyper-V's upper end
    (0, 20, GIB, GIB),
])
def test_with_buffer(demand: int, percent: int, minimum: int, expected: int) -> None:
    params = PolicyParams(GIB, GIB, GIB, buffer_percent=percent, minimum_buffer=minimum)
    assert with_buffer(demand, params) == expected


def test_live_bounds_meet_kubevirt() -> None:
    params = PolicyParams(startup=4 * GIB, minimum=2 * GIB, maximum=32 * GIB)
    assert live_bounds(VMState("a", "n", 4 * GIB, 4 * GIB, 16 * GIB), params) == (4 * GIB, 16 * GIB)
    # booted above the policy maximum: it cannot go below its boot size, so floor wins
    assert live_bounds(VMState("a", "n", 40 * GIB, 40 * GIB, 64 * GIB), params) == (40 * GIB, 40 * GIB)


@pytest.mark.parametrize(("value", "expected"), [(3 * GIB + 1, 3 * GIB + 2 * MIB), (0, GIB), (99 * GIB, 16 * GIB)])
def test_fit(value: int, expected: int) -> None:
    assert fit(value, GIB, 16 * GIB, 2 * MIB) == expected


def test_pressure_sampled_before_the_last_resize_completed_is_not_believed() -> None:
    # 3.2Gi since a resize 5 s ago; the newest sample still shows the 2Gi guest paging
    signal = DemandSignal(gib(2), gib(2.5), True, pressure=True)
    just_resized = VMState("ns/vm", "node", gib(3.2), gib(2), gib(16), grows_last_hour=1, last_grow=NOW - 20,
                           changed_at=NOW - 5)
    assert decide(just_resized, signal, PARAMS, NOW).action is Action.HOLD
    settled = VMState("ns/vm", "node", gib(3.2), gib(2), gib(16), grows_last_hour=1, last_grow=NOW - 120,
                      changed_at=NOW - PARAMS.settle_s - 1)
    assert decide(settled, signal, PARAMS, NOW).action is Action.GROW


def test_reason_says_why_a_paging_guest_gets_a_doubled_buffer() -> None:
    vm = VMState("ns/vm", "node", gib(2), gib(2), gib(16))
    d = decide(vm, DemandSignal(gib(2), gib(2), True, pressure=True), PARAMS, NOW)
    # 2Gi + 10 % = 2.2Gi; 20 % of it is below the 1Gi floor, doubled: 2.2Gi + 2Gi
    assert d.reason == ("guest short of memory: demand 2Gi +10% (it ran short) + 20% buffer ×2 "
                        "(paging: demand above its size is unseen) (at least 2Gi) → 4.2Gi")
