"""Node budget: floors, then demand by weight, then buffers; never past the room, now or after."""

from __future__ import annotations

import pytest

from dynamic_memory.model import Action, Decision, Why
from dynamic_memory.policy.budget import Claim, allocate, fit_to_room, grow_from_free, water_fill
from dynamic_memory.quantity import GIB, MIB

G = GIB


@pytest.mark.parametrize(("caps", "weights", "budget", "expected"), [
    ({"a": 10, "b": 10}, {"a": 1, "b": 1}, 10, {"a": 5, "b": 5}),
    ({"a": 10, "b": 10}, {"a": 3, "b": 1}, 8, {"a": 6, "b": 2}),
    ({"a": 2, "b": 10}, {"a": 3, "b": 1}, 8, {"a": 2, "b": 6}),       # capped share flows to the others
    ({"a": 10, "b": 10}, {"a": 1, "b": 0}, 15, {"a": 10, "b": 5}),    # weight 0 gets only leftovers
    ({"a": 10, "b": 10}, {"a": 1, "b": 1}, 100, {"a": 10, "b": 10}),  # never beyond caps
    ({"a": 0}, {"a": 1}, 5, {"a": 0}),
])
def test_water_fill(caps: dict[str, int], weights: dict[str, int], budget: int, expected: dict[str, int]) -> None:
    assert water_fill(caps, weights, budget) == expected


def test_demand_is_served_before_buffers() -> None:
    claims = [Claim("heavy", 2 * G, 6 * G, 10 * G, 9000), Claim("light", 2 * G, 6 * G, 10 * G, 1000)]
    # room 12 covers floors and demand exactly: no buffer for anyone, even the heavy VM
    assert allocate(claims, 12 * G, 2 * MIB) == {"heavy": 6 * G, "light": 6 * G}
    # room 14 leaves 2Gi of buffer, shared 9:1 by weight
    alloc = allocate(claims, 14 * G, 2 * MIB)
    assert alloc["heavy"] - 6 * G == pytest.approx(1.8 * G, abs=4 * MIB)
    assert alloc["light"] - 6 * G == pytest.approx(0.2 * G, abs=4 * MIB)


def test_heavier_weight_is_served_first_when_demand_does_not_fit() -> None:
    claims = [Claim("heavy", 2 * G, 8 * G, 10 * G, 9000), Claim("light", 2 * G, 8 * G, 10 * G, 1000)]
    alloc = allocate(claims, 12 * G, 2 * MIB)
    assert alloc["heavy"] == 8 * G
    assert alloc["light"] == 4 * G
    assert sum(alloc.values()) <= 12 * G


def test_floors_are_kept_even_when_the_room_is_smaller() -> None:
    claims = [Claim("a", 4 * G, 6 * G, 8 * G, 5000), Claim("b", 4 * G, 6 * G, 8 * G, 5000)]
    assert allocate(claims, 6 * G, 2 * MIB) == {"a": 4 * G, "b": 4 * G}


def _decision(key: str, current: int, target: int) -> Decision:
    action = Action.GROW if target > current else Action.SHRINK if target < current else Action.HOLD
    return Decision(key, "n", current, target, action, Why("Test", "test"), demand=target, wanted=target)


def test_grow_waits_for_memory_that_others_are_still_releasing() -> None:
    # a shrinks 10 -> 4, b grows 2 -> 8: the end state fits 12, but until a's migration ends
    # only 12 - 10 - 2 = 0 is free, so b waits
    claims = [Claim("a", 2 * G, 4 * G, 4 * G, 5000, current=10 * G, step=512 * MIB),
              Claim("b", 2 * G, 8 * G, 8 * G, 5000, current=2 * G, step=512 * MIB)]
    out = fit_to_room([_decision("a", 10 * G, 4 * G), _decision("b", 2 * G, 8 * G)], claims, 12 * G, 2 * MIB)
    assert [d.target for d in out] == [4 * G, 2 * G]
    assert out[1].why.code == "Test" and out[1].notes[0].code == "WaitingForRoom"
    assert sum(max(d.current, d.target) for d in out) <= 12 * G


def test_budget_moves_smaller_than_a_step_are_skipped() -> None:
    claims = [Claim("a", 2 * G, 6 * G, 6 * G, 5000, current=6 * G - 4 * MIB, step=512 * MIB)]
    assert grow_from_free(claims, {"a": 6 * G}, 20 * G, 2 * MIB) == {"a": 6 * G}
    alloc = allocate(claims, 6 * G, 2 * MIB)
    assert alloc == {"a": 6 * G - 4 * MIB}  # a 4 MiB grow is not worth a migration


def test_fit_to_room_leaves_decisions_alone_when_they_fit() -> None:
    claims = [Claim("a", 2 * G, 3 * G, 4 * G, 5000, current=2 * G)]
    decisions = [_decision("a", 2 * G, 4 * G)]
    assert fit_to_room(decisions, claims, 10 * G, 2 * MIB) == decisions
