"""What the operator learns, each pass, for policies with learnPerVM (the default): pure, no kopf, no I/O.

Each VM's setting comes from what every candidate would have cost it on each of its past 14 UTC
days (policy/learner.py). A day is worked out once, after it ends, from its samples in Prometheus
(and the window before it), and kept on the VM in an annotation: a restarted operator reads them
back and has lost nothing; a newly selected VM has its days read back as far as Prometheus keeps
them. A pass works out at most DAYS_PER_PASS VM-days (6 to 11 ms of CPU each, in a worker
thread), so learning never holds up the passes that resize for long: at 10,000 VMs and a pass
every 30 s, the day just ended is done in under two hours.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dynamic_memory.model import PolicyParams, VMState
from dynamic_memory.policy.learner import (
    CANDIDATES,
    DAY_S,
    LOOKBACK_S,
    Choice,
    candidate_params,
    choose,
    costs_of_day,
    day_of,
    days_to_learn,
    kept_days,
    own_index,
    setting_words,
    utc_day,
)
from dynamic_memory.policy.target import live_bounds
from dynamic_memory.sources.kubevirt import LEARNED, _get, learned_costs, parse_time

Obj = Mapping[str, Any]
Kept = Mapping[int, Sequence[Sequence[float]]]
"""Day → each candidate's [GiB × samples, short samples, own resizes]."""
DAYS_PER_PASS = 50
"""VM-days a pass works out at most: under a second of CPU, in a worker thread."""
STEP_S = 300.0
"""Samples are read 5 minutes apart, each the highest demand of its 5 minutes: the spacing of the
traces the candidates and the costs' weights were chosen on."""
CHOICE = Choice()


def _text(vm: Obj) -> str:
    return str((_get(vm, "metadata", "annotations") or {}).get(LEARNED) or "")


def kept_of(vm: Obj) -> Kept:
    """The days kept on the VM (its `learned-costs` annotation), parsed afresh: for a lesson."""
    return learned_costs({LEARNED: _text(vm)}, len(CANDIDATES))


@dataclass(slots=True)
class _Read:
    """What a VM's annotation said when last read: a pass asks every learning VM for its setting and
    its missing days, and the text changes once a day. Only the small answers are kept (the parsed
    costs of a VM are about ten times its text)."""

    text: str
    created: str
    """The VM's creationTimestamp as written: a VM deleted and made again is read afresh."""
    born: int | None
    """The UTC day it was created (None: not known): no day before it holds its samples."""
    days: frozenset[int]
    picks: dict[tuple[PolicyParams, int], int]
    """(policy's params, today) → the candidate `choose` took."""
    empty: set[int] = field(default_factory=set)
    """Days Prometheus held no sample of, kept here rather than written on the VM (`no_samples`)."""


_READS: dict[str, _Read] = {}
"""VM key → its last read annotation, for the VMs that learnt in the last pass (`keep_reads`)."""


def _read(vm: Obj) -> _Read:
    key = f"{_get(vm, 'metadata', 'namespace')}/{_get(vm, 'metadata', 'name')}"
    text, created = _text(vm), str(_get(vm, "metadata", "creationTimestamp") or "")
    read = _READS.get(key)
    if read is None or read.text != text or read.created != created:
        born = parse_time(created)
        read = _READS[key] = _Read(text, created, None if born is None else utc_day(born), frozenset(kept_of(vm)), {})
    return read


def no_samples(lesson: Lesson) -> None:
    """Remember that none of the lesson's days had a sample, on a VM that has learnt nothing (one
    older than its Prometheus, or one that shows no guest metrics): they are not asked again, and
    nothing is written on the VM for them. Kept in memory only: a restarted operator asks once more."""
    _read(lesson.vm).empty.update(lesson.days)


def keep_reads(keys: Collection[str]) -> None:
    """Forget the reads of VMs no longer learning (deleted, stopped, or their policy no longer learns):
    called once a pass with the VMs that learn, so the memo never outgrows the fleet."""
    for key in [key for key in _READS if key not in keys]:
        del _READS[key]


@lru_cache(maxsize=256)
def _candidates(params: PolicyParams) -> tuple[list[PolicyParams], int]:
    """A policy's candidates and the index of its own setting among them (-1: none), once per policy."""
    candidates = candidate_params(params)
    return candidates, own_index(params, candidates)


def _choice(kept: Kept, params: PolicyParams, today: int) -> int:
    """The candidate `choose` takes for today from the days kept (-1: the policy's own)."""
    return choose(kept_days(kept, today, CHOICE), _candidates(params)[1], CHOICE)


def learnt(params: PolicyParams, vm: Obj, now: float) -> PolicyParams | None:
    """The setting the VM is sized with today when its policy learns and the VM has enough days
    kept; None: the policy's own."""
    if not params.learn:
        return None
    candidates, own = _candidates(params)
    read, today = _read(vm), utc_day(now)
    pick = read.picks.get((params, today))
    if pick is None:
        pick = read.picks[params, today] = _choice(kept_of(vm), params, today)
    return None if pick in (own, -1) else candidates[pick]


def setting_note(params: PolicyParams, kept: Mapping[int, Sequence[Sequence[float]]], today: int) -> str:
    """The setting the VM is sized with today, and why, for its `learned-setting` annotation."""
    candidates = _candidates(params)[0]
    pick = _choice(kept, params, today)
    days = sum(1 for day in range(today - CHOICE.days, today) if day in kept and kept[day][0][0] > 0)  # as choose
    if days < CHOICE.warm:
        return (f"{setting_words(params)}: the policy's own, until {CHOICE.warm} days with metrics are learnt "
                f"({days} so far)")
    return (f"{setting_words(candidates[pick])}: of {len(CANDIDATES)} candidates, the one that would have "
            f"cost least on its past {days} days with metrics")


@dataclass(frozen=True, slots=True)
class Lesson:
    """Days of one VM to work out this pass."""

    key: str
    vm: Obj
    """The VirtualMachine as the watch cache holds it."""
    days: list[int]
    today: int
    params: PolicyParams
    floor: int
    ceiling: int
    kept: Kept


def lessons(chosen: Sequence[tuple[PolicyParams, VMState, Obj]], now: float,
            budget: int = DAYS_PER_PASS) -> list[Lesson]:
    """The VM-days to work out this pass, at most `budget`, one lesson per VM: first the day just
    ended of every VM (the newest learning matters most), then older days, newest first. A VM that
    KubeVirt can never resize while it runs (an instancetype, ...), or whose bounds leave it one size,
    learns nothing it could use; nor does a VM learn the days before it was created (they hold
    none of its samples: written, they would be a patch of empty days on every new VM)."""
    today = utc_day(now)
    wanting = []
    for params, state, vm in chosen:
        if not params.learn or (state.blocked is not None and state.blocked.lasting):
            continue
        floor, ceiling = live_bounds(state, params)
        if ceiling <= floor:  # its bounds leave it one size: every candidate would hold it there
            continue
        read = _read(vm)
        days = days_to_learn(read.days | read.empty, today, CHOICE, read.born)
        if days:
            wanting.append((params, state, vm, floor, ceiling, days))
    picked: dict[int, list[int]] = {}
    left = budget
    for i, (*_, days) in enumerate(wanting):
        if left > 0 and days[-1] == today - 1:
            picked[i], left = [today - 1], left - 1
    for i, (*_, days) in enumerate(wanting):
        older = [day for day in days if day != today - 1][-left:] if left > 0 else []
        if older:
            picked[i], left = older + picked.get(i, []), left - len(older)
    out = []
    for i in sorted(picked):
        params, state, vm, floor, ceiling, _ = wanting[i]
        out.append(Lesson(state.key, vm, picked[i], today, params, floor, ceiling, kept_of(vm)))
    return out


def window(lessons_: Sequence[Lesson]) -> tuple[float, float]:
    """The time range whose samples the lessons read: their days and the window before the first."""
    first = min(day for lesson in lessons_ for day in lesson.days)
    last = max(day for lesson in lessons_ for day in lesson.days)
    return first * DAY_S - LOOKBACK_S, (last + 1) * DAY_S


def learn(lesson: Lesson, samples: Sequence[tuple[float, int]], stale_s: float) -> Kept | None:
    """The VM's kept days with the lesson's worked out from its demand samples (oldest first, STEP_S
    apart; a day with none costs nothing, and does not count towards the days a VM needs), and
    those older than the choice reads dropped; None when neither the lesson's days nor those kept
    have a sample (nothing learnt, before or now, is worth a write: `no_samples`). `stale_s` is the
    policy's: a sample goes stale no sooner than three steps on (a live pass reads samples seconds
    apart, these are minutes)."""
    stale_s = max(stale_s, 3 * STEP_S)
    ts = [t for t, _ in samples]
    usage = [d for _, d in samples]
    floor, ceiling = [lesson.floor] * len(ts), [lesson.ceiling] * len(ts)
    kept = {day: costs for day, costs in lesson.kept.items() if day >= lesson.today - CHOICE.days}
    for day in lesson.days:
        found = day_of(ts, usage, floor, ceiling, day * DAY_S)
        kept[day] = ([[0.0, 0.0, 0.0] for _ in CANDIDATES] if found is None else
                     [list(map(float, cost)) for cost in costs_of_day(found, _candidates(lesson.params)[0], stale_s)])
    return kept if any(costs[0][0] > 0 for costs in kept.values()) else None  # a day with metrics, as `choose`
