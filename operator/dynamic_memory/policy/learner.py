"""Each VM's knobs learned from its own past days (issue 13). Pure.

One rule for every VM sizes a guest that sits flat all month and one that spikes every night alike.
Here every VM is still sized by the same engine, but with the knobs that served it best: each of a
few candidate settings (minimum buffer × scale-down window) is replayed over each past day of the
VM as if it had been in charge that day (`costs_of_day`), and each day the VM takes the candidate that
cost least over its last `Choice.days` days (`choose`).

A candidate's day needs only that day's samples and one window before them, and it starts from
the size the candidate itself would have held then, not from what the VM really held: so the
operator can work each day out once from Prometheus and keep the costs, and a restart loses
nothing. The replay (sim/per_vm_setting.py) scores its days with the same `costs_of_day`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from dynamic_memory.history import DemandHistory
from dynamic_memory.model import DemandSignal, Learn, Limit, PolicyParams, VMState, from_fields
from dynamic_memory.policy.engine import DynamicMemory, SignalSpec
from dynamic_memory.policy.target import decide, fit, with_buffer
from dynamic_memory.quantity import GIB, MIB, format_bytes, format_duration

HOUR_S = 3600.0
DAY_S = 86400
"""A learner's day: the operator's are UTC days (`utc_day`), the replay's count from its first sample."""
CANDIDATES: tuple[tuple[int, float], ...] = (
    (128 * MIB, 2 * HOUR_S), (128 * MIB, 24 * HOUR_S), (GIB, 2 * HOUR_S), (GIB, 8 * HOUR_S),
    (2 * GIB, 4 * HOUR_S), (4 * GIB, 4 * HOUR_S))
"""(minimumBuffer, scaleDown.window): the six that a 30-setting grid used most on the shared month."""
LOOKBACK_S = max(window for _, window in CANDIDATES)
"""How far before a day its samples are read: the longest candidate window, so every candidate
starts the day with its window full."""
_ENGINE = DynamicMemory()
Costs = Sequence[Sequence[Sequence[float]]]
"""Candidates × days × [GiB × samples, short samples, own resizes], oldest day first. Plain lists:
the operator chooses from 6 × 14 × 3 numbers, and importing numpy for them cost it 11 MiB of
resident memory (benchmarks/footprint.py)."""


@dataclass(frozen=True, slots=True)
class Choice:
    """How a VM's setting is chosen from its candidates' costs."""

    short_gib_samples: float = 800.0
    """λ: one short sample costs as much as this many GiB × samples held."""
    resize_gib_samples: float = 100.0
    """μ: one own resize (a live migration) costs as much as this many GiB × samples."""
    days: int = 14
    """Past days compared."""
    warm: int = 3
    """Days with samples a VM needs before it leaves the policy's own setting."""


@dataclass(frozen=True, slots=True)
class DaySamples:
    """One VM's samples for one day and the window before it, oldest first; bytes and Unix seconds.

    `first` is the index of the day's first sample: those before it only fill the windows. A missing
    sample is left out (or, as in a trace, has usage 0). `floor` and `ceiling` bound the size at
    each sample (the replay's provisioned size moves; the operator's live bounds do not)."""

    ts: Sequence[float]
    usage: Sequence[int]
    floor: Sequence[int]
    ceiling: Sequence[int]
    first: int


def utc_day(t: float) -> int:
    """The UTC day holding `t`, as days since 1970-01-01."""
    return int(t // DAY_S)


def day_of(ts: Sequence[float], usage: Sequence[int], floor: Sequence[int], ceiling: Sequence[int],
           start: float) -> DaySamples | None:
    """The day from `start` (DAY_S long) of one VM's samples, with the window before it; None when
    the VM has no sample in it. The sequences run side by side, oldest first."""
    first, end = bisect_left(ts, start), bisect_left(ts, start + DAY_S)
    if first == end:
        return None
    lo = bisect_left(ts, start - LOOKBACK_S, 0, first)
    return DaySamples(ts[lo:end], usage[lo:end], floor[lo:end], ceiling[lo:end], first - lo)


def candidate_params(params: PolicyParams) -> list[PolicyParams]:
    """The policy's knobs with each candidate's minimum buffer and scale-down window, where the VM
    learns them (`params.learn`): a knob the policy sets stays the policy's in every candidate. Always
    len(CANDIDATES) of them, so that the costs kept on a VM line up whatever its policy sets; the
    first of equal candidates is the one chosen."""
    buffers, windows = Learn.MINIMUM_BUFFER in params.learn, Learn.DOWN_WINDOW in params.learn
    return [replace(params, minimum_buffer=buffer if buffers else params.minimum_buffer,
                    scale_down=replace(params.scale_down, window_s=window if windows else params.scale_down.window_s))
            for buffer, window in CANDIDATES]


def _signals(day: DaySamples, spec: SignalSpec, stale_s: float) -> list[DemandSignal]:
    """What the metrics say at the day's first sample (before it) and at each of the day's samples,
    as the engine would read them with these statistics: a candidate's size does not change them."""
    ts, usage = day.ts, day.usage
    history = DemandHistory(spec, stale_s)
    # a sample older than every window before the day's first only tells when the history began
    # (minHistory): the first of those is pushed, the rest would be dropped unread
    reach = max(spec.up_window_s, spec.down_window_s, stale_s)
    recent = 0 if spec.daily is not None else bisect_left(ts, ts[day.first] - reach, 0, day.first)
    began = next((i for i in range(recent) if usage[i] > 0), None)
    if began is not None:
        history.push(ts[began], usage[began])
    for i in range(recent, day.first):
        if usage[i] > 0:
            history.push(ts[i], usage[i])
    out = []
    for i in range(day.first, len(ts)):
        out.append(history.signal(ts[i]))
        if usage[i] > 0:
            history.push(ts[i], usage[i])
    return out


def costs_of_day(day: DaySamples, candidates: Sequence[PolicyParams], stale_s: float) -> list[tuple[float, int, int]]:
    """(GiB × samples held, short samples, own resizes) of the engine under each candidate over the
    day, scored as the replay scores (sim/replay.py): started steady, at what the candidate sizes
    the VM at from the window before the day (the ceiling with no sample there). Candidates that
    read the same statistics share them (the six read four), and equal ones their costs."""
    if day.first >= len(day.ts):
        return [(0.0, 0, 0) for _ in candidates]
    first, floor, ceiling = day.first, day.floor, day.ceiling
    if all(floor[i] == ceiling[i] for i in range(first, len(floor))):
        held = _held_at_bounds(ceiling[first:])
        return [(held, 0, 0) for _ in candidates]
    shared: dict[SignalSpec, list[DemandSignal]] = {}
    done: dict[PolicyParams, tuple[float, int, int]] = {}  # equal candidates (a knob the policy sets)
    out = []
    for params in candidates:
        cost = done.get(params)
        if cost is None:
            spec = _ENGINE.signal_spec(params)
            signals = shared.get(spec)
            if signals is None:
                signals = shared[spec] = _signals(day, spec, stale_s)
            cost = done[params] = _day_cost(day, signals, params)
        out.append(cost)
    return out


def _held_at_bounds(sizes: Sequence[int]) -> float:
    """GiB × samples of a day whose bounds set the size at every sample (a VM of 1 GiB or less in
    the replay, or one whose live bounds meet): whatever a candidate decides, the size is the bounds',
    it is never short of a size the bounds allow and no resize is its own, so every candidate costs
    the same and none needs its signals or `decide` (a third of the shared month's VM-days)."""
    held = 0.0
    for size in sizes:  # summed in the order `_day_cost` sums, to the same float
        held += size / GIB
    return held


_TAIL = VMState("", "", 0, 0, 0)[9:]
"""A shadow VM's fields after the nine `_day_cost` sets, as VMState defaults them: not blocked, no
change under way, 2 MiB blocks, any node. Built whole, a VMState costs 0.29 µs against 0.42 (timeit),
and a candidate's day builds one at each sample."""


def _day_cost(day: DaySamples, signals: Sequence[DemandSignal], params: PolicyParams) -> tuple[float, int, int]:
    """One candidate's day (see `costs_of_day`), the engine deciding at each sample from `signals`."""
    ts, usage, floor, ceiling, first = day.ts, day.usage, day.floor, day.ceiling, day.first
    start = signals[0]
    base = start.peak if start.peak is not None else start.latest
    lo, hi = floor[first], ceiling[first]
    size = hi if base is None else fit(with_buffer(base, params), lo, hi, params.alignment)
    held, short, own = 0.0, 0, 0
    last_grow: float | None = None
    resizes: list[tuple[float, bool]] = []  # (when, grew) of the last hour's own resizes
    grows = 0
    for i in range(first, len(ts)):
        t, used, lo, hi = ts[i], usage[i], floor[i], ceiling[i]
        if resizes and resizes[0][0] <= t - HOUR_S:
            resizes = [r for r in resizes if r[0] > t - HOUR_S]
            grows = sum(grew for _, grew in resizes)
        vm = from_fields(VMState, ("shadow", "", size, lo, hi, 0, last_grow, grows, len(resizes) - grows, *_TAIL))
        d = decide(vm, signals[i - first], params, t)
        after = hi if d.target >= hi else lo if d.target <= lo else d.target
        if after != size and after == d.target and d.limited is not Limit.BOUNDS:  # not forced by the bounds
            own += 1
            resizes.append((t, after > size))
            if after > size:
                last_grow, grows = t, grows + 1
        size = after
        held += after / GIB
        if used > 0:  # usage above the ceiling is short of any size the bounds allow: not counted
            short += after < used <= hi
    return held, short, own


def own_index(params: PolicyParams, candidates: Sequence[PolicyParams]) -> int:
    """The candidate that is the policy's own setting, or -1 when none is."""
    return next((k for k, c in enumerate(candidates) if c == params), -1)


def setting_words(params: PolicyParams) -> str:
    """A candidate in the policy's words."""
    return (f"minimumBuffer {format_bytes(params.minimum_buffer)}, scaleDown.stabilizationWindow "
            + format_duration(params.scale_down.window_s))


def choose(costs: Costs, own: int, choice: Choice) -> int:
    """The candidate for today from the past days' costs (only the last `choice.days` count): the
    cheapest (the first of equals), or `own` (an index, or -1 for the policy's own setting) while
    fewer than `choice.warm` of those days had samples."""
    per_short, per_resize, days = choice.short_gib_samples, choice.resize_gib_samples, choice.days
    if sum(1 for day in costs[0][-days:] if day[0] > 0) < choice.warm:  # a day with samples holds some memory
        return own
    totals = [sum(held + per_short * short + per_resize * resizes for held, short, resizes in candidate[-days:])
              for candidate in costs]
    return totals.index(min(totals))


def kept_days(kept: Mapping[int, Sequence[Sequence[float]]], today: int, choice: Choice) -> Costs:
    """The costs `choose` reads for `today` from the days kept of one VM (day → each candidate's
    costs); a day not kept counts as one without samples."""
    none = (0.0, 0.0, 0.0)
    days = [kept.get(day) for day in range(today - choice.days, today)]
    return [[none if day is None else day[c] for day in days] for c in range(len(CANDIDATES))]


def days_to_learn(kept: Collection[int], today: int, choice: Choice, born: int | None = None) -> list[int]:
    """The past days `choose` reads for `today` that are not kept yet, oldest first, from `born` on
    (the day the VM was created: none before it can hold its samples; None: not known)."""
    first = today - choice.days if born is None else max(today - choice.days, born)
    return [day for day in range(first, today) if day not in kept]
