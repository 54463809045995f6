"""Per-VM decision: demand → target → hysteresis. Pure functions, no I/O.

The steps, each small enough to test on its own:
  demand_with_pressure  a guest short of memory wants at least what it has
  with_buffer           Hyper-V's buffer, plus an absolute floor so small guests get room too
  SHORTFALL_BUMP        a guest that ran short gets a 10 % bump (VPA's OOM bump)
                        and each grow within the hour doubles the buffer of the next, as does paging
                        (a paging guest's demand above its size is unseen)
  live_bounds           policy bounds met with KubeVirt's (guestAtBoot .. maxGuest)
  fit                   2 MiB alignment, then the bounds
  decide                grow promptly; shrink a window after the last grow, by a step worth a migration;
                        with a time-of-day signal, grow before a peak the guest's past days had in
                        the coming hour, and shrink no lower than they had in the coming hours
"""

from __future__ import annotations

import re
import string
from dataclasses import replace
from typing import NamedTuple

from dynamic_memory.model import (
    KUBEVIRT_BLOCK,
    Action,
    Decision,
    DemandSignal,
    Limit,
    PolicyParams,
    VMState,
    Why,
    from_fields,
)
from dynamic_memory.quantity import align_down, align_up

SHORTFALL_BUMP_PERCENT = 10
"""A guest found short of memory sizes for 110 % of its demand (in the spirit of VPA's OOM bump,
--oom-bump-up-ratio): it outran its buffer once already. Measured on the shared month, with the
buffer doubling: pressure 0.00095 → 0.00091 for memory ratio 0.2744 → 0.2768."""


def demand_with_pressure(signal: DemandSignal, assigned: int) -> tuple[int | None, int | None]:
    """Return (latest, peak) demand, raised to the assigned size when the guest shows pressure.

    A guest that pages or swaps uses all it has and wants more than its used bytes show.
    """
    latest, peak = signal.latest, signal.peak
    if signal.pressure:
        latest = max(latest or 0, assigned)
        peak = max(peak or 0, latest)
    if latest is not None and peak is not None and latest > peak:
        peak = latest
    return latest, peak


def with_buffer(demand: int, params: PolicyParams, doublings: int = 0) -> int:
    """Demand plus the buffer: bufferPercent of demand, but never less than minimumBuffer.

    `doublings` doubles the buffer that many times: a VM that already grew this hour outran its
    last buffer, so the next one is twice as large (fewer, larger migrations while demand climbs).
    """
    scale = 1 << min(doublings, 6) if doublings else 1
    percent, minimum = demand * params.buffer_percent * scale // 100, params.minimum_buffer * scale
    return demand + (percent if percent > minimum else minimum)


def live_bounds(vm: VMState, params: PolicyParams) -> tuple[int, int]:
    """The range this VM can move in while it runs: the policy's, narrowed by KubeVirt's.

    KubeVirt cannot unplug below guestAtBoot or plug above maxGuest; a VM that booted above the
    policy's maximum stays where it is (floor wins).
    """
    floor = params.minimum if params.minimum > vm.guest_at_boot else vm.guest_at_boot
    ceiling = params.maximum if params.maximum < vm.max_guest else vm.max_guest
    if vm.alignment > KUBEVIRT_BLOCK:  # 1Gi hugepages: KubeVirt's own bounds are whole blocks
        floor, ceiling = align_up(floor, vm.alignment), align_down(ceiling, vm.alignment)
    return floor, ceiling if ceiling > floor else floor


def fit(value: int, floor: int, ceiling: int, alignment: int) -> int:
    """Round up to the hotplug block, then keep within bounds (bounds win: they are aligned in KubeVirt)."""
    value = align_up(value, alignment)
    return ceiling if value >= ceiling else floor if value <= floor else value


def _sizing_template(what: str, then: str = "", extra: tuple[str, ...] = (), *, bump: bool = False,
                     doubled: bool = False) -> str:
    """The words of a sizing: demand (+ bump) + buffer (× doublings) → desired, then `then`.

    Written with names, kept by position: its Why carries the tuple (demand, params, desired,
    *extra). A pass builds a Why for every VM and reads few; a tuple costs a third of a dict to
    build and free, and the policy's numbers are read off `params` only when the words are."""
    buffer = ("{params.buffer_percent}% buffer ×{scale} ({because}) (at least {min_buffer:B})"
              if doubled else "{params.buffer_percent}% buffer (at least {params.minimum_buffer:B})")
    named = f"{what} {{demand:B}}{_BUMP if bump else ''} + {buffer} → {{desired:B}}{then}"
    for i, name in enumerate(("demand", "params", "desired", *extra)):
        named = re.sub(r"\{" + name + r"(?=[.:}])", "{" + str(i), named)
    assert all(field is None or field[:1].isdigit() for _, field, _, _ in string.Formatter().parse(named)), named
    return named


class _ShrinkWords(NamedTuple):
    """The words of a VM sized for a peak (holding, or shrinking to it), by what the peak is."""

    steady: str
    warming_up: str
    waiting: str
    rate_limited: str
    fell: str


def _shrink_words(what: str) -> _ShrinkWords:
    return _ShrinkWords(
        _sizing_template(what, "; within {step:B} of {current:B}: not worth a migration", ("step", "current")),
        _sizing_template(what, "; waiting for metrics to span scaleDown.minHistory"),
        _sizing_template(what, "; grew too recently ({left:.0f} min of the scale-down window left)", ("left",)),
        _sizing_template(what, "; waiting: {n} shrinks in the last hour (scaleDown.maxPerHour)", ("n",)),
        _sizing_template(what))


_BUMP = f" +{SHORTFALL_BUMP_PERCENT}% (it ran short)"
_BY_PEAK = _shrink_words("peak demand")
_BY_DAY = _shrink_words("peak of the coming hours at this time on past days")
"""Sized for its time of day: the guest reached more in the coming hours on its past days than
in its scale-down window, and is not shrunk below it."""
_PEAK_AHEAD = _sizing_template("peak of the coming hour on past days", ": growing before it comes")
_GROWN = ("n", "scale", "min_buffer", "because")
"""A grow's extra fields: grows in the last hour, the buffer's doubling and floor, and why it doubled."""


def _doubled_because(grows: int, paging: bool) -> str:
    """Why a grow's buffer is doubled: grows this hour that it outran, or paging that hides its demand."""
    grew = f"grew {grows}× this hour"
    if not paging:
        return grew
    return "paging: demand above its size is unseen" + (f", and {grew}" if grows else "")


_GROW_WORDS = {(short, doubled): (_sizing_template(_what, "", _GROWN, bump=short, doubled=doubled),
                                  _sizing_template(_what, "; waiting: {n} grows in the last hour (scaleUp.maxPerHour)",
                                                   _GROWN, bump=short, doubled=doubled))
               for short, _what in ((False, "demand"), (True, "guest short of memory: demand"))
               for doubled in (False, True)}
"""(DemandRose, GrowRateLimited) templates by (short of memory, grew this hour already)."""


_HOLD, _GROW, _SHRINK = Action.HOLD, Action.GROW, Action.SHRINK
"""Looked up once: reading an enum member off its class costs about 0.25 µs in Python 3.11, and
a pass reads one for every VM."""


def _hold(vm: VMState, why: Why, demand: int | None = None, wanted: int | None = None,
          limited: Limit | None = None) -> Decision:
    current = vm.assigned
    return from_fields(Decision, (vm.key, vm.node, current, current, _HOLD, *why, demand,
                           current if wanted is None else wanted, limited, (), None))


def _move(vm: VMState, target: int, why: Why, demand: int | None, limited: Limit | None = None) -> Decision:
    action = _GROW if target > vm.assigned else _SHRINK
    return from_fields(Decision, (vm.key, vm.node, vm.assigned, target, action, *why, demand, target, limited, (),
                                  None))


def decide(vm: VMState, signal: DemandSignal, params: PolicyParams, now: float) -> Decision:
    """One VM's target for now, with the reason."""
    floor, ceiling = live_bounds(vm, params)
    current = vm.assigned
    if signal.pressure and vm.changed_at is not None and now - vm.changed_at < params.settle_s:
        signal = signal._replace(pressure=False)  # sampled before the resize it just had
    latest, peak = signal.latest, signal.peak
    if signal.pressure or (latest is not None and peak is not None and latest > peak):  # most VMs: neither
        latest, peak = demand_with_pressure(signal, current)
    if vm.blocked is not None:  # its demand is still known: the status shows it
        b = vm.blocked
        words = f"{b.words}: {vm.blocked_detail}" if vm.blocked_detail else b.words
        return _hold(vm, Why(b.code, "not resizable{now}: {why}", {"now": "" if b.lasting else " now", "why": words}),
                     demand=peak if peak is not None else latest, limited=Limit.BLOCKED)
    if vm.alignment > params.alignment:
        params = replace(params, alignment=vm.alignment)

    if not floor <= current <= ceiling:
        target = fit(current, floor, ceiling, params.alignment)
        why = Why("OutOfBounds", "{current:B} is outside {floor:B}..{ceiling:B}",
                  {"current": current, "floor": floor, "ceiling": ceiling})
        return _move(vm, target, why, peak, limited=Limit.BOUNDS)

    if latest is None:
        return _hold(vm, Why("DemandUnknown", "demand unknown (no fresh guest metrics): holding, never shrinking"))

    short = latest > current or signal.pressure
    # not short: a grow only for a step worth a migration (checked first: most VMs stop here)
    gap = with_buffer(latest, params) - current  # a step is never negative: most VMs stop at `gap >= 0`
    wants_more = short or (gap >= 0 and gap >= params.scale_up.step(current))
    up_base = latest if peak is None or latest >= peak else peak
    sized_for = up_base + up_base * SHORTFALL_BUMP_PERCENT // 100 if short else up_base
    # a paging guest shows at most its size: what it wants beyond is unseen, so it is sized as one
    # that outran its buffer already (measured on the shared month with the guest's view capped at its
    # size: own resizes 0.773 → 0.720 per VM-day, pressure 0.00132 → 0.00105, memory 0.2616 → 0.2690);
    # `+ pressure` counts True as one doubling
    grow_to = fit(with_buffer(sized_for, params, vm.grows_last_hour + signal.pressure), floor, ceiling,
                  params.alignment) if wants_more else current
    if grow_to > current:
        n = vm.grows_last_hour
        doublings = n + signal.pressure
        words, limited_words = _GROW_WORDS[short, doublings > 0]
        scale = 1 << min(doublings, 6)
        values = (up_base, params, grow_to, n, scale, params.minimum_buffer * scale,
                  _doubled_because(n, signal.pressure))
        if n >= params.scale_up.max_per_hour:
            return _hold(vm, Why("GrowRateLimited", limited_words, values), up_base, grow_to, Limit.RATE)
        return _move(vm, grow_to, Why("DemandRose", words, values), up_base)
    soon = signal.soon
    if soon is not None and soon > current and vm.grows_last_hour < params.scale_up.max_per_hour:
        ahead = fit(with_buffer(soon, params), floor, ceiling, params.alignment)
        if ahead > current:  # it will be short in that hour, as it was on its past days
            return _move(vm, ahead, Why("PeakAhead", _PEAK_AHEAD, (soon, params, ahead)), latest)

    if peak is None:
        return _hold(vm, Why("NoPeakYet", "demand {latest:B}; no peak over the scale-down window yet",
                             {"latest": latest}), demand=latest)
    sized_by, sizing = peak, _BY_PEAK
    recurring = signal.recurring
    if recurring is not None and recurring > peak:
        sized_by, sizing = recurring, _BY_DAY
    desired = fit(with_buffer(sized_by, params), floor, ceiling, params.alignment)
    step = params.scale_down.step(current)
    if current - desired < step:
        return from_fields(Decision, (vm.key, vm.node, current, current, _HOLD, "Steady", sizing.steady,
                                      (sized_by, params, desired, step, current), peak, current, None, (),
                                      None))  # most VMs: _hold, inlined
    if not signal.enough_history:
        return _hold(vm, Why("WarmingUp", sizing.warming_up, (sized_by, params, desired)),
                     peak, None, Limit.RATE)
    window = params.scale_down.window_s
    if vm.last_grow is not None and now - vm.last_grow < window:
        return _hold(vm, Why("ShrinkWaiting", sizing.waiting, (
            sized_by, params, desired, (window - (now - vm.last_grow)) / 60)),
            peak, None, Limit.RATE)
    if vm.shrinks_last_hour >= params.scale_down.max_per_hour:
        return _hold(vm, Why("ShrinkRateLimited", sizing.rate_limited, (
            sized_by, params, desired, vm.shrinks_last_hour)), peak, None, Limit.RATE)
    return _move(vm, desired, Why("DemandFell", sizing.fell, (sized_by, params, desired)), peak)
