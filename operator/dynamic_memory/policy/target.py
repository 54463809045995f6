"""Per-VM decision: demand → target → hysteresis. Pure functions, no I/O.

The steps, each small enough to test on its own:
  demand_with_pressure  a guest short of memory wants at least what it has
  with_buffer           Hyper-V's buffer, plus an absolute floor so small guests get room too
  SHORTFALL_BUMP        a guest that ran short gets a 10 % bump (VPA's OOM bump)
                        and each grow within the hour doubles the buffer of the next
  live_bounds           policy bounds met with KubeVirt's (guestAtBoot .. maxGuest)
  fit                   2 MiB alignment, then the bounds
  decide                grow promptly; shrink a window after the last grow, by a step worth a migration
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from dynamic_memory.model import KUBEVIRT_BLOCK, Action, Decision, DemandSignal, Limit, PolicyParams, VMState, Why
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


def _hold(vm: VMState, why: Why, *, demand: int | None = None, wanted: int | None = None,
          limited: Limit | None = None) -> Decision:
    return Decision(vm.key, vm.node, vm.assigned, vm.assigned, Action.HOLD, why,
                    demand, vm.assigned if wanted is None else wanted, limited)


def _move(vm: VMState, target: int, why: Why, demand: int | None, limited: Limit | None = None) -> Decision:
    action = Action.GROW if target > vm.assigned else Action.SHRINK
    return Decision(vm.key, vm.node, vm.assigned, target, action, why, demand, target, limited)


def _sizing(code: str, what: str, demand: int, params: PolicyParams, desired: int, then: str = "",
            more: Mapping[str, object] | None = None, *, bump: bool = False, doublings: int = 0) -> Why:
    """The words of a sizing: demand (+ bump) + buffer (× doublings) → desired, then `then` with `more`.
    Built for every VM on every pass and read for few: only the template is assembled here."""
    scale = 1 << min(doublings, 6) if doublings else 1
    key = (bump, doublings > 0, then)
    template = _TEMPLATES.get(key)
    if template is None:
        template = _TEMPLATES[key] = ("{what} {demand:B}" + (_BUMP if bump else "") + " + {buffer}% buffer"
                                      + (" ×{scale} (grew {doublings}× this hour)" if doublings else "")
                                      + " (at least {min_buffer:B}) → {desired:B}" + then)
    values = {"what": what, "demand": demand, "buffer": params.buffer_percent, "scale": scale,
              "doublings": doublings, "min_buffer": params.minimum_buffer * scale, "desired": desired}
    if more:
        values.update(more)
    return Why(code, template, values)


_BUMP = f" +{SHORTFALL_BUMP_PERCENT}% (it ran short)"
_TEMPLATES: dict[tuple[bool, bool, str], str] = {}
"""Sizing templates by (bump, doubled, then): a handful, built once."""


def decide(vm: VMState, signal: DemandSignal, params: PolicyParams, now: float) -> Decision:
    """One VM's target for now, with the reason."""
    floor, ceiling = live_bounds(vm, params)
    current = vm.assigned
    if signal.pressure and vm.changed_at is not None and now - vm.changed_at < params.settle_s:
        signal = replace(signal, pressure=False)  # sampled before the resize it just had
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
    wants_more = short or with_buffer(latest, params) - current >= params.scale_up.step(current)
    up_base = latest if peak is None or latest >= peak else peak
    sized_for = up_base + up_base * SHORTFALL_BUMP_PERCENT // 100 if short else up_base
    grow_to = fit(with_buffer(sized_for, params, vm.grows_last_hour), floor, ceiling,
                  params.alignment) if wants_more else current
    if grow_to > current:
        what = "guest short of memory: demand" if short else "demand"
        n = vm.grows_last_hour
        if n >= params.scale_up.max_per_hour:
            why = _sizing("GrowRateLimited", what, up_base, params, grow_to,
                          "; waiting: {n} grows in the last hour (scaleUp.maxPerHour)", {"n": n},
                          bump=short, doublings=n)
            return _hold(vm, why, demand=up_base, wanted=grow_to, limited=Limit.RATE)
        why = _sizing("DemandRose", what, up_base, params, grow_to, bump=short, doublings=n)
        return _move(vm, grow_to, why, up_base)

    if peak is None:
        return _hold(vm, Why("NoPeakYet", "demand {latest:B}; no peak over the scale-down window yet",
                             {"latest": latest}), demand=latest)
    desired = fit(with_buffer(peak, params), floor, ceiling, params.alignment)
    step = params.scale_down.step(current)
    if current - desired < step:
        why = _sizing("Steady", "peak demand", peak, params, desired,
                      "; within {step:B} of {current:B}: not worth a migration", {"step": step, "current": current})
        return _hold(vm, why, demand=peak)
    if not signal.enough_history:
        why = _sizing("WarmingUp", "peak demand", peak, params, desired,
                      "; waiting for metrics to span scaleDown.minHistory")
        return _hold(vm, why, demand=peak, limited=Limit.RATE)
    window = params.scale_down.window_s
    if vm.last_grow is not None and now - vm.last_grow < window:
        why = _sizing("ShrinkWaiting", "peak demand", peak, params, desired,
                      "; grew too recently ({left:.0f} min of the scale-down window left)",
                      {"left": (window - (now - vm.last_grow)) / 60})
        return _hold(vm, why, demand=peak, limited=Limit.RATE)
    if vm.shrinks_last_hour >= params.scale_down.max_per_hour:
        why = _sizing("ShrinkRateLimited", "peak demand", peak, params, desired,
                      "; waiting: {n} shrinks in the last hour (scaleDown.maxPerHour)", {"n": vm.shrinks_last_hour})
        return _hold(vm, why, demand=peak, limited=Limit.RATE)
    return _move(vm, desired, _sizing("DemandFell", "peak demand", peak, params, desired), peak)
