"""Node budget: when a node's VMs want more than it can hold, decide who gets what. Pure.

Hyper-V's order under shortage: every VM keeps its floor, then demand is served by weight, and
buffers get what is left, again by weight. Never plan past the room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from dynamic_memory.model import Action, Bytes, Decision, Why
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
    return {k: max(floors[k], align_down(v, alignment)) for k, v in alloc.items()}


def fit_to_room(decisions: Sequence[Decision], claims: Sequence[Claim], room: int,
                alignment: int) -> list[Decision]:
    """The decisions of one node's VMs, cut down where the node cannot hold them all."""
    if sum(c.want for c in claims) <= room:
        return list(decisions)
    alloc = allocate(claims, room, alignment)
    total_weight = sum(max(c.weight, 0) for c in claims)
    weights = {c.key: c.weight for c in claims}
    out = []
    for d in decisions:
        got = alloc.get(d.key, d.target)
        if got >= d.target:
            out.append(d)
            continue
        action = Action.GROW if got > d.current else Action.SHRINK if got < d.current else Action.HOLD
        note = Why("CapacityLimited", "capped by node room {room} (weight {weight} of {total}) → {got}",
                   (("room", Bytes(room)), ("weight", weights[d.key]), ("total", total_weight), ("got", Bytes(got))))
        out.append(replace(d, target=got, action=action, notes=(*d.notes, note), limited="room"))
    return out
