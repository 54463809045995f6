"""What the operator learns for a policy with learnPerVM: the days it works out, what it keeps on the
VM, the setting it sizes the VM with, and the query groups that setting needs."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from dynamic_memory import learning
from dynamic_memory.actuators.kubevirt import LEARNED_SETTING, learned_patch
from dynamic_memory.learning import Lesson, keep_reads, learn, learnt, lessons, setting_note, window
from dynamic_memory.model import Blocker, DemandSignal, VMState
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.reconcile import learned_params, metrics_groups, plan_all, running_vms
from dynamic_memory.sources.kubevirt import LEARNED, learned_costs
from tests.unit.test_reconcile import node, pod, snapshot, spec, vm, vmi

DAY = 86400
TODAY = 20_000  # 2024-10-04
NOW = TODAY * DAY + 3600.0
CHEAP_FIRST = [[100.0, 0.0, 0.0]] + [[500.0, 0.0, 0.0]] * 5
"""One day's costs on which the first candidate (minimumBuffer 128Mi, window 2h) is the cheapest."""


def iso(day: int) -> str:
    return date.fromordinal(date(1970, 1, 1).toordinal() + day).isoformat()


def annotated(kept: dict[int, list[list[float]]], name: str = "x") -> dict[str, Any]:
    out = vm("a", name, "db")
    out["metadata"]["annotations"] = {LEARNED: json.dumps({iso(d): c for d, c in kept.items()})}
    return out


def test_the_costs_annotation_reads_back_what_was_written_and_skips_what_does_not_read() -> None:
    kept = {TODAY - 2: CHEAP_FIRST, TODAY - 1: [[12.34, 1.0, 2.0]] * 6}
    body = learned_patch(kept, "words")["metadata"]["annotations"]
    assert body[LEARNED_SETTING] == "words"
    assert learned_costs(body, 6) == {TODAY - 2: CHEAP_FIRST, TODAY - 1: [[12.3, 1.0, 2.0]] * 6}
    assert learned_costs(body, 5) == {}  # written for another set of candidates: learnt again
    edited = {LEARNED: json.dumps({iso(TODAY - 1): CHEAP_FIRST, "yesterday": CHEAP_FIRST,
                                   iso(TODAY - 2): [[1, -1, 0]] * 6, iso(TODAY - 3): [["a", 0, 0]] * 6})}
    assert learned_costs(edited, 6) == {TODAY - 1: CHEAP_FIRST}
    assert learned_costs({LEARNED: "{not json"}, 6) == {}
    assert learned_costs({LEARNED: "[1, 2]"}, 6) == {}


def test_a_vm_takes_the_cheapest_candidate_once_it_has_three_days() -> None:
    policy = spec("db", 5000, learnPerVM=True)
    params = policy.params()
    two = {TODAY - 2: CHEAP_FIRST, TODAY - 1: CHEAP_FIRST}
    assert learnt(params, annotated(two), NOW) is None  # the policy's own until 3 days
    three = {**two, TODAY - 3: CHEAP_FIRST}
    chosen = learnt(params, annotated(three), NOW)
    assert chosen is not None
    assert (chosen.minimum_buffer, chosen.scale_down.window_s) == (128 * MIB, 7200.0)
    assert chosen.buffer_percent == params.buffer_percent and chosen.maximum == params.maximum
    # a day older than the 14 the choice reads does not count
    assert learnt(params, annotated({**two, TODAY - 15: CHEAP_FIRST}), NOW) is None
    # the policy's own setting (1Gi, 8h: the fourth candidate) cheapest: nothing of its own
    own_cheapest = [[500.0, 0.0, 0.0]] * 3 + [[100.0, 0.0, 0.0]] + [[500.0, 0.0, 0.0]] * 2
    assert learnt(params, annotated({TODAY - k: own_cheapest for k in (1, 2, 3)}), NOW) is None
    assert learnt(spec("db", 5000, learnPerVM=False).params(), annotated(three), NOW) is None  # not learning


def test_the_reads_of_vms_that_no_longer_learn_are_forgotten() -> None:
    policy = spec("db", 5000, learnPerVM=True)
    params = policy.params()
    three = {TODAY - k: CHEAP_FIRST for k in (1, 2, 3)}
    for name in ("x", "y", "z"):
        assert learnt(params, annotated(three, name), NOW) is not None
    keep_reads({"a/y"})  # x and z deleted, stopped, or out of a learning policy
    assert set(learning._READS) == {"a/y"}
    chosen = learnt(params, annotated(three, "x"), NOW)  # x back: read afresh
    assert chosen is not None and chosen.minimum_buffer == 128 * MIB
    assert set(learning._READS) == {"a/x", "a/y"}


def test_the_setting_note_says_what_is_used_and_why() -> None:
    params = spec("db", 5000, learnPerVM=True).params()
    assert setting_note(params, {TODAY - 1: CHEAP_FIRST}, TODAY) == (
        "minimumBuffer 1Gi, scaleDown.stabilizationWindow 8h: the policy's own, until 3 days with metrics are "
        "learnt (1 so far)")
    days = {TODAY - k: CHEAP_FIRST for k in (1, 2, 3)} | {TODAY - 4: [[0.0, 0.0, 0.0]] * 6}
    assert setting_note(params, days, TODAY) == (
        "minimumBuffer 128Mi, scaleDown.stabilizationWindow 2h: of 6 candidates, the one that would have cost "
        "least on its past 3 days with metrics")


def state(name: str) -> VMState:
    return VMState(f"a/{name}", "n", 4 * GIB, 2 * GIB, 16 * GIB)


def test_a_pass_learns_the_day_just_ended_of_every_vm_before_older_days() -> None:
    policy = spec("db", 5000, learnPerVM=True)
    params = policy.params()
    fresh = [(params, state(n), vm("a", n, "db")) for n in ("p", "q")]  # nothing kept: 14 days each
    up_to_date = (params, state("r"), annotated({TODAY - k: CHEAP_FIRST for k in range(1, 15)}, "r"))
    other = (spec("db", 5000, learnPerVM=False).params(), state("s"), vm("a", "s", "db"))  # not learning
    todo = lessons([*fresh, up_to_date, other], NOW, budget=5)
    # yesterday for p and q first (2), then older days, newest first, with what is left (3)
    assert [(lesson.key, lesson.days) for lesson in todo] == [
        ("a/p", [TODAY - 4, TODAY - 3, TODAY - 2, TODAY - 1]), ("a/q", [TODAY - 1])]
    assert all(lesson.today == TODAY for lesson in todo)
    assert (todo[0].floor, todo[0].ceiling) == (2 * GIB, 16 * GIB)  # the policy's startup .. maximum
    assert window(todo) == ((TODAY - 4) * DAY - 24 * 3600, TODAY * DAY)
    assert lessons([up_to_date, other], NOW) == []


def test_a_vm_learns_no_day_before_it_was_created() -> None:
    """Prometheus holds none of its samples from before then: a new VM gets no patch of empty days."""
    policy = spec("db", 5000, learnPerVM=True)
    params = policy.params()

    def created(name: str, at: str) -> tuple[Any, ...]:
        out = vm("a", name, "db")
        out["metadata"]["creationTimestamp"] = at
        return (params, state(name), out)

    todo = lessons([created("old", f"{iso(TODAY - 30)}T08:00:00Z"), created("two", f"{iso(TODAY - 2)}T23:59:59Z"),
                    created("new", f"{iso(TODAY)}T00:10:00Z")], NOW)
    assert [(lesson.key, lesson.days) for lesson in todo] == [
        ("a/old", [TODAY - k for k in range(14, 0, -1)]), ("a/two", [TODAY - 2, TODAY - 1])]


def test_a_vm_kubevirt_can_never_resize_learns_nothing() -> None:
    """Its setting would never be used: no reads of its past and no annotation for it. A VM that
    is only busy for now (migrating) still learns."""
    policy = spec("db", 5000, learnPerVM=True)
    params = policy.params()
    typed = (params, state("t")._replace(blocked=Blocker.INSTANCETYPE), vm("a", "t", "db"))
    moving = (params, state("m")._replace(blocked=Blocker.MIGRATING), vm("a", "m", "db"))
    assert [lesson.key for lesson in lessons([typed, moving], NOW)] == ["a/m"]


def test_a_vm_its_bounds_leave_one_size_learns_nothing() -> None:
    """Booted at its policy's maximum (16 GiB), it can neither shrink below what it booted with nor
    grow past the maximum while it runs: every candidate would hold it there."""
    policy = spec("db", 5000, learnPerVM=True)
    params = policy.params()
    booted_big = (params, VMState("a/b", "n", 16 * GIB, 16 * GIB, 64 * GIB), vm("a", "b", "db"))
    one_below = (params, VMState("a/c", "n", 15 * GIB, 15 * GIB, 64 * GIB), vm("a", "c", "db"))
    assert [lesson.key for lesson in lessons([booted_big, one_below], NOW)] == ["a/c"]


def test_a_day_is_worked_out_from_its_samples_and_old_days_are_dropped() -> None:
    params = spec("db", 5000, learnPerVM=True).params()
    kept = {TODAY - 20: CHEAP_FIRST, TODAY - 14: CHEAP_FIRST}
    lesson = Lesson("a/x", vm("a", "x", "db"), [TODAY - 3, TODAY - 1], TODAY, params, 2 * GIB, 16 * GIB, kept)
    # 3 GiB used every 5 minutes the day before yesterday and yesterday; nothing before
    samples = [(float(t), 3 * GIB) for t in range((TODAY - 2) * DAY, TODAY * DAY, 300)]
    out = learn(lesson, samples, 900.0)
    assert out is not None
    assert sorted(out) == [TODAY - 14, TODAY - 3, TODAY - 1]  # 20 days ago is beyond what the choice reads
    assert out[TODAY - 14] == CHEAP_FIRST
    assert out[TODAY - 3] == [[0.0, 0.0, 0.0]] * 6  # no sample: a day that costs nothing
    # yesterday, with a full day before it: each candidate holds 3 GiB + its buffer all day, from the
    # day's first sample, never short and never resized. 3 GiB + 20 % (above 128Mi) is 3686.4 MiB:
    # 3688 MiB in 2 MiB blocks; the others' buffers are their minimum (1, 1, 2, 4 GiB)
    assert out[TODAY - 1] == [[3688 / 1024 * 288, 0.0, 0.0]] * 2 + [[4.0 * 288, 0.0, 0.0]] * 2 + [
        [5.0 * 288, 0.0, 0.0], [7.0 * 288, 0.0, 0.0]]


def test_days_without_a_sample_are_remembered_not_written() -> None:
    """A VM older than its Prometheus, or one that shows no guest metrics: its empty days are not
    asked again, and its annotation is not written for them."""
    policy = spec("db", 5000, learnPerVM=True)
    params = policy.params()
    chosen = [(params, state("quiet"), vm("a", "quiet", "db"))]
    first = lessons(chosen, NOW)
    assert [lesson.days for lesson in first] == [[TODAY - k for k in range(14, 0, -1)]]
    assert learn(first[0], [], 900.0) is None
    learning.no_samples(first[0])
    assert lessons(chosen, NOW) == []
    assert lessons(chosen, NOW + DAY)[0].days == [TODAY]  # the next day is asked when it ends
    # a sample on one day of a lesson: every day of it is written, the empty ones as costing nothing
    one = [(float((TODAY - 1) * DAY + 600), 3 * GIB)]
    kept = learn(first[0], one, 900.0)
    assert kept is not None and sorted(kept) == first[0].days and kept[TODAY - 2] == [[0.0, 0.0, 0.0]] * 6
    # no sample now, but a day with metrics kept: written, with the setting in use and its words
    restored = Lesson("a/back", vm("a", "back", "db"), [TODAY - 1], TODAY, params, 2 * GIB, 16 * GIB,
                      {TODAY - 2: CHEAP_FIRST})
    assert learn(restored, [], 900.0) == {TODAY - 2: CHEAP_FIRST, TODAY - 1: [[0.0, 0.0, 0.0]] * 6}


def test_learnt_vms_are_queried_with_their_own_windows_and_sized_with_their_setting() -> None:
    policies = {"a/p": spec("db", 5000, learnPerVM=True)}
    kept = {TODAY - k: CHEAP_FIRST for k in (1, 2, 3)}
    pods = [pod("a", f"virt-launcher-{n}", "a", "2304Mi", f"uid-a-{n}") for n in ("x", "y")]
    snap = snapshot(policies, [annotated(kept, "x"), vm("a", "y", "db")], [vmi("a", "x"), vmi("a", "y")],
                    [node("a", "64Gi"), node("b", "64Gi")], pods)
    running = running_vms(policies, snap.vms, snap.vmis)
    learned = learned_params(snap, running, NOW)
    assert list(learned) == ["a/x"]
    groups, of_policy = metrics_groups(policies, running, learned)
    assert len(of_policy["a/p"]) == 2
    windows = {group.spec.down_window_s: vms for group, vms in groups.items()}
    assert windows == {8 * 3600.0: ["a/y"], 2 * 3600.0: ["a/x"]}
    short = DemandSignal(2 * GIB, 2 * GIB, True, pressure=True)
    plan = plan_all(snap, {"a/x": short, "a/y": short}, NOW, learned)
    assert plan.passes["a/p"].learned == ["a/x"]
    x, y = plan.passes["a/p"].decisions
    # paging: each minimum buffer doubled (its demand above its size is unseen)
    assert "(at least 256Mi)" in x.reason and "(at least 2Gi)" in y.reason
    assert x.target < y.target
