"""Node budget: when a node's VMs want more than it can hold, decide who gets what. Pure.

Hyper-V's order under shortage: every VM keeps its floor, then demand is served by weight, and
buffers get what is left, again by weight. Never plan past the room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dynamic_memory.model import Action, Decision, Why
from dynamic_memory.quantity import align_down


@dataclass(frozen=True, slots=True)
class Claim:
    """One VM's stake in its node's memory, all in bytes of guest memory."""

    key: str
    floor: int
    """What it keeps whatever happens (guestAtBoot, or all it has while KubeVirt is busy with it)."""
    need: int
    """Its demand without buffer, within [floor, want]."""
    want: int
    """Its decided target (demand plus buffer, after hysteresis)."""
    weight: int
    current: int = 0
    """What it has now: a budget move smaller than `step` keeps it, where the room allows."""
    step: int = 0


def water_fill(caps: Mapping[str, int], weights: Mapping[str, int], budget: int) -> dict[str, int]:
    """Share `budget` in proportion to weight, nobody beyond its cap; weight-0 items get leftovers only."""
    given = dict.fromkeys(caps, 0)
    for pool in ([k for k in caps if weights[k] > 0], [k for k in caps if weights[k] <= 0]):
        open_ = [k for k in pool if caps[k] > 0]
        while budget > 0 and open_:
            total = sum(max(weights[k], 0) for k in open_) or len(open_)
            spent = 0
            for k in open_:
                share = budget * (weights[k] if weights[k] > 0 else 1) // total
                take = min(share, caps[k] - given[k])
                given[k] += take
                spent += take
            if spent == 0:  # shares rounded to 0: give the crumbs to the heaviest one
                k = max(open_, key=lambda k: weights[k])
                take = min(budget, caps[k] - given[k])
                given[k] += take
                spent = take
            budget -= spent
            open_ = [k for k in open_ if given[k] < caps[k]]
    return given


def allocate(claims: Sequence[Claim], room: int, alignment: int) -> dict[str, int]:
    """Guest bytes per VM within `room`: floors, then demand by weight, then buffers by weight."""
    alloc = {c.key: c.floor for c in claims}
    free = room - sum(alloc.values())
    if free <= 0:
        return alloc
    weights = {c.key: c.weight for c in claims}
    for phase_cap in ({c.key: c.need - alloc[c.key] for c in claims},
                      {c.key: c.want - c.need for c in claims}):
        given = water_fill(phase_cap, weights, free)
        for key, extra in given.items():
            alloc[key] += extra
        free -= sum(given.values())
    floors = {c.key: c.floor for c in claims}
    alloc = {k: max(floors[k], align_down(v, alignment)) for k, v in alloc.items()}
    return _sticky(claims, alloc, room)


def _sticky(claims: Sequence[Claim], alloc: dict[str, int], room: int) -> dict[str, int]:
    """Skip budget moves too small to be worth a migration: small grows first (that frees room),
    then small shrinks while the room still holds them. Demand noise must not migrate VMs."""
    small = [c for c in claims if 0 < abs(alloc[c.key] - c.current) < c.step and c.floor <= c.current]
    for c in small:
        if alloc[c.key] > c.current:
            alloc[c.key] = c.current
    used = sum(alloc.values())
    for c in sorted(small, key=lambda c: -c.weight):
        extra = c.current - alloc[c.key]
        if extra > 0 and used + extra <= room:
            alloc[c.key] = c.current
            used += extra
    return alloc


def grow_from_free(claims: Sequence[Claim], alloc: dict[str, int], room: int, alignment: int) -> dict[str, int]:
    """Grows use only memory that is free now; what shrinking VMs release is for the next pass.

    A resize is a migration that takes time: until a shrink completes its memory is still held,
    so while changes are under way the node holds max(current, target) of every VM (squeezed's
    two phases: free memory first, then allocate).
    """
    if sum(max(c.current, alloc[c.key]) for c in claims) <= room:
        return alloc
    growers = [c for c in claims if alloc[c.key] > c.current]
    held = sum(max(c.current, alloc[c.key]) for c in claims if c not in growers)
    free = room - held - sum(c.current for c in growers)
    given = water_fill({c.key: alloc[c.key] - c.current for c in growers},
                       {c.key: c.weight for c in growers}, max(free, 0))
    out = dict(alloc)
    for c in growers:
        out[c.key] = c.current + align_down(given[c.key], alignment)
    return out


def fit_to_room(decisions: Sequence[Decision], claims: Sequence[Claim], room: int,
                alignment: int) -> list[Decision]:
    """The decisions of one node's VMs, cut down where the node cannot hold them all, now or after."""
    wanted = {c.key: c.want for c in claims}
    if sum(max(c.current, c.want) for c in claims) <= room:
        return list(decisions)
    short = sum(wanted.values()) > room
    alloc = grow_from_free(claims, allocate(claims, room, alignment) if short else wanted, room, alignment)
    total_weight = sum(max(c.weight, 0) for c in claims)
    weights = {c.key: c.weight for c in claims}
    out = []
    for d in decisions:
        got = alloc.get(d.key, d.target)
        if got >= d.target:
            out.append(d)
            continue
        action = Action.GROW if got > d.current else Action.SHRINK if got < d.current else Action.HOLD
        if short:
            note = Why("CapacityLimited", "capped by node room {room:B} (weight {weight} of {total}) → {got:B}",
                       {"room": room, "weight": weights[d.key], "total": total_weight, "got": got})
        else:
            note = Why("WaitingForRoom", "waiting for memory other VMs are releasing: {got:B} for now",
                       {"got": got})
        out.append(d._replace(target=got, action=action, notes=(*d.notes, note), limited="room"))
    return out
