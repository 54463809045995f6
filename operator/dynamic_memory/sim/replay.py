"""Replay a VM memory trace through a policy and score it (the figures of issue #3).

Rules, exactly:
- each VM starts at its provisioned memory; the decision at a sample sees only earlier samples;
- a policy sees each earlier sample's whole usage, even above what it assigned (a real guest shows
  at most its size, and pages: this flatters every policy's pressure; the README has a measure);
- a sample with usage 0 is missing: assigned is kept and it is not counted for pressure;
- bounds at each sample are [min(1 GiB, provisioned), provisioned];
- memory_ratio = Σ assigned / Σ provisioned over all samples;
- pressure_fraction = share of non-missing samples with usage > assigned, among those whose usage
  is within the provisioned memory (no policy within bounds can serve the rest);
- resizes_per_vm_day = changes of assigned / VM-days covered. Changes forced by the bounds moving
  (a VM of 1 GiB or less follows its provisioned size) count too, and are also shown apart;
  own_resizes_per_vm_day are the rest: the policy's own choices, what it answers for;
- migrated_gib_per_vm_day = the memory its own changes copy: each is a live migration of the whole
  guest, at its size before the change;
- slack = Σ (assigned − usage) / Σ assigned over the non-missing samples served (usage ≤ assigned):
  how much of what is assigned goes unused.
"""

from __future__ import annotations

import gc
import multiprocessing
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from dynamic_memory.history import DemandHistory
from dynamic_memory.model import Action, Limit, PolicyParams, VMState
from dynamic_memory.policy.engine import Entry, Policy, SignalSpec
from dynamic_memory.policy.learner import DAY_S
from dynamic_memory.quantity import GIB
from dynamic_memory.sim.traces import VMTrace

SLOT_S = 300
"""Trace sampling interval: VMs are stepped together in slots of this length."""
STALE_S = 900.0
"""A demand sample older than this is stale (three missed scrapes of the 5-minute trace)."""
NODE = "replay"
_GROW = Action.GROW
"""Looked up once: the replay reads it for millions of samples (0.25 µs a read in Python 3.11)."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The scores of one policy on one trace."""

    policy: str
    memory_ratio: float
    pressure_fraction: float
    resizes_per_vm_day: float
    forced_resizes_per_vm_day: float
    own_resizes_per_vm_day: float
    migrated_gib_per_vm_day: float
    slack: float
    vms: int
    vm_days: float
    samples: int
    missing_samples: int
    seconds: float
    resizes_by_reason: dict[str, int]
    """Changes by the decision's reason code (Forced: the trace moved the bounds)."""

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready, with the three headline keys at the top level."""
        return asdict(self)


def replay_params(base: PolicyParams) -> PolicyParams:
    """The policy's knobs with the replay's bounds: the trace, not the policy, sets min and max."""
    return replace(base, startup=0, minimum=0, maximum=2**62)


class _Score:
    __slots__ = ("assigned", "by_reason", "changes", "forced", "migrated", "missing", "nonmissing", "pressured",
                 "provisioned", "samples", "served", "unused")

    def __init__(self) -> None:
        self.assigned = self.provisioned = self.migrated = self.served = self.unused = 0
        self.samples = self.missing = self.nonmissing = self.pressured = 0
        self.changes = self.forced = 0
        self.by_reason: dict[str, int] = {}

    @staticmethod
    def total(parts: Sequence[_Score]) -> _Score:
        """The score of all the parts' samples together."""
        out = _Score()
        for part in parts:
            for name in _Score.__slots__:
                if name != "by_reason":
                    setattr(out, name, getattr(out, name) + getattr(part, name))
            for code, n in part.by_reason.items():
                out.by_reason[code] = out.by_reason.get(code, 0) + n
        return out

    def count(self, before: int, after: int, prov: int, usage: int, forced: bool, code: str = "") -> None:
        """Score one sample."""
        self.samples += 1
        self.assigned += after
        self.provisioned += prov
        if after != before:
            self.changes += 1
            self.forced += forced
            if not forced:
                self.migrated += before
            code = "Forced" if forced else code
            self.by_reason[code] = self.by_reason.get(code, 0) + 1
        if usage <= 0:
            self.missing += 1
            return
        if usage <= prov:
            self.nonmissing += 1
            self.pressured += usage > after
        if usage <= after:
            self.served += after
            self.unused += after - usage

    def result(self, name: str, traces: Sequence[VMTrace], seconds: float) -> ReplayResult:
        vm_days = sum(t.days for t in traces) or 1.0
        return ReplayResult(
            policy=name,
            memory_ratio=self.assigned / self.provisioned if self.provisioned else 0.0,
            pressure_fraction=self.pressured / self.nonmissing if self.nonmissing else 0.0,
            resizes_per_vm_day=self.changes / vm_days,
            forced_resizes_per_vm_day=self.forced / vm_days,
            own_resizes_per_vm_day=(self.changes - self.forced) / vm_days,
            migrated_gib_per_vm_day=self.migrated / GIB / vm_days,
            slack=self.unused / self.served if self.served else 0.0,
            vms=len(traces), vm_days=round(vm_days, 3), samples=self.samples,
            missing_samples=self.missing, seconds=round(seconds, 2),
            resizes_by_reason=dict(sorted(self.by_reason.items(), key=lambda kv: -kv[1])))


Round = tuple[int, int]
"""A round's place in time: (slot, depth), depth counting a VM's samples that share one slot."""


def _slots(ts: array[int], t0: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Each sample's round (slot, depth): its slot of time, and how many of the VM's samples before
    it share that slot (a VM joins a round with at most one sample)."""
    slot = (np.frombuffer(ts, dtype=np.int64) - t0) // SLOT_S
    index = np.arange(len(slot))
    starts = np.ones(len(slot), dtype=bool)
    starts[1:] = slot[1:] != slot[:-1]
    return slot, index - np.maximum.accumulate(np.where(starts, index, 0))


def _rounds(traces: Sequence[VMTrace], t0: int) -> dict[Round, list[tuple[int, int]]]:
    """(vm index, sample index) grouped into rounds: one slot of time, at most one sample per VM."""
    rounds: dict[Round, list[tuple[int, int]]] = {}
    for j, tr in enumerate(traces):
        slot, depth = _slots(tr.ts, t0)
        for i, key in enumerate(zip(slot.tolist(), depth.tolist(), strict=True)):
            rounds.setdefault(key, []).append((j, i))
    return rounds


def _round_times(traces: Sequence[VMTrace], t0: int) -> dict[Round, int]:
    """Each round's time: its earliest sample among all the VMs (the rounds' members are not needed:
    the parts of a replay over several processes each group their own)."""
    slots, depths = zip(*(_slots(tr.ts, t0) for tr in traces), strict=True)
    slot, depth = np.concatenate(slots), np.concatenate(depths)
    ts = np.concatenate([np.frombuffer(tr.ts, dtype=np.int64) for tr in traces])
    order = np.lexsort((ts, depth, slot))  # by round, earliest first
    slot, depth, ts = slot[order], depth[order], ts[order]
    first = np.flatnonzero(np.concatenate(([True], (slot[1:] != slot[:-1]) | (depth[1:] != depth[:-1]))))
    return dict(zip(zip(slot[first].tolist(), depth[first].tolist(), strict=True), ts[first].tolist(), strict=True))


SettingOf = Callable[[int, int], PolicyParams]
"""The knobs of VM `j` (its index in the traces) on day `k` of the replay (DAY_S long, counted from
the replay's first sample)."""


def replay(traces: Sequence[VMTrace], policy: Policy, params: PolicyParams, *, progress: bool = False,
           setting_of: SettingOf | None = None, workers: int = 1) -> ReplayResult:
    """Run `policy` over every VM of the trace, stepping all VMs together in time.

    `setting_of`: each VM's knobs by day, instead of `params` for all (their bounds are the
    trace's all the same). `workers` > 1 shares the VMs out over that many processes: with no
    cluster each VM is on its own, and each round still decides at the time of its earliest
    sample among all VMs, so the figures are those of one process; except for a policy that
    balances a host, whose host is every VM of the trace: it runs in one."""
    started = time.perf_counter()
    t0 = _first_sample(traces)
    nows = _round_times(traces, t0)
    workers = 1 if policy.balances_a_host else max(1, min(workers, len(traces)))
    if workers == 1:
        score = _replay_part(_Part(traces, range(len(traces)), policy, params, setting_of, t0, nows, progress))
    else:
        parts = [_Part(traces[w::workers], range(w, len(traces), workers), policy, params, setting_of, t0, nows,
                       progress and w == 0) for w in range(workers)]
        global _parts
        _parts = parts  # the workers are forked: they find their part here instead of receiving a copy
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                scores = list(pool.map(_replay_nth, range(workers)))
        finally:
            _parts = []
        score = _Score.total(scores)
    return score.result(policy.name, traces, time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class _Part:
    """Some of the replay's VMs, with what every part shares: the replay's start and its rounds' times."""

    traces: Sequence[VMTrace]
    indexes: Sequence[int]
    """Each VM's index among all the replay's (what `setting_of` is asked with)."""
    policy: Policy
    params: PolicyParams
    setting_of: SettingOf | None
    t0: int
    nows: Mapping[Round, int]
    progress: bool


_parts: list[_Part] = []


def _replay_nth(n: int) -> _Score:
    return _replay_part(_parts[n])


@contextmanager
def _frozen() -> Iterator[None]:
    """The objects made so far kept out of the cyclic GC's scans (`gc.freeze`), and the process
    left as it was after: a caller that replays in its own process (a test, a notebook) would
    otherwise keep them frozen for good, and the engine's pass would pause the collector plainly."""
    first = gc.get_freeze_count() == 0
    gc.freeze()
    try:
        yield
    finally:
        if first:
            gc.unfreeze()


def _replay_part(part: _Part) -> _Score:
    """The replay of the part's VMs (see `replay`)."""
    traces, policy, setting_of, t0 = part.traces, part.policy, part.setting_of, part.t0
    params = replay_params(part.params)
    history = [DemandHistory(policy.signal_spec(params), STALE_S) for _ in traces] if setting_of is None else []
    # with `setting_of`: each VM's histories, one per statistics its settings ask, each fed every sample
    by_spec: list[dict[SignalSpec, DemandHistory]] = [{} for _ in traces] if setting_of is not None else []
    # with `setting_of`: each VM's day, setting and history in use
    today: list[tuple[int, PolicyParams, DemandHistory] | None] = [None] * len(traces)
    assigned = [tr.provisioned[0] for tr in traces]
    last_grow: list[float | None] = [None] * len(traces)
    resizes: list[deque[tuple[int, Action]]] = [deque() for _ in traces]
    keys = [tr.vm for tr in traces]
    score = _Score()
    rounds = _rounds(traces, t0)
    with _frozen():  # millions of long-lived tuples: keep the cyclic GC from rescanning them every step
        for k in tqdm(sorted(rounds), desc=f"replay {policy.name}", unit="step", disable=not part.progress,
                      mininterval=1.0):
            members = rounds[k]
            entries = []
            for j, i in members:
                tr = traces[j]
                t, prov = tr.ts[i], tr.provisioned[i]
                log = resizes[j]
                while log and log[0][0] <= t - 3600:
                    log.popleft()
                grows = sum(1 for _, a in log if a is _GROW) if log else 0  # most VMs: none this hour
                vm = VMState(keys[j], NODE, assigned[j], GIB if prov > GIB else prov, prov, 0, last_grow[j],
                             grows, len(log) - grows)
                if setting_of is None:
                    entries.append(Entry(vm, history[j].signal(t), params))
                else:
                    day, in_use = int((t - t0) // DAY_S), today[j]
                    if in_use is None or in_use[0] != day:  # a VM's setting changes only from one day to the next
                        p = replay_params(setting_of(part.indexes[j], day))
                        spec = policy.signal_spec(p)
                        kept = by_spec[j]
                        if spec not in kept:
                            kept[spec] = _replayed_history(spec, traces[j], i)
                        in_use = today[j] = (day, p, kept[spec])
                    entries.append(Entry(vm, in_use[2].signal(t), in_use[1]))
            decisions = policy.plan(entries, None, part.nows[k])  # single VMs: no cluster limits
            for (j, i), d in zip(members, decisions, strict=True):
                tr = traces[j]
                t, prov, usage = tr.ts[i], tr.provisioned[i], tr.usage[i]
                before = assigned[j]
                lo = GIB if prov > GIB else prov
                after = prov if d.target >= prov else lo if d.target <= lo else d.target
                forced = d.limited is Limit.BOUNDS or after != d.target
                score.count(before, after, prov, usage, forced, d.why_code)
                assigned[j] = after
                own = after != before and not forced  # the trace moving its bounds is not our decision
                if own:
                    if after > before:
                        last_grow[j] = t
                    resizes[j].append((t, _GROW if after > before else Action.SHRINK))
                if usage > 0:
                    if setting_of is None:
                        history[j].push(t, usage)
                    else:
                        for h in by_spec[j].values():
                            h.push(t, usage)
    return score


def _replayed_history(spec: SignalSpec, trace: VMTrace, upto: int) -> DemandHistory:
    """A history of these statistics holding the trace's samples before sample `upto`: what it
    would hold had it been kept from the start (a VM switching to a new window keeps its past)."""
    history = DemandHistory(spec, STALE_S)
    for t, usage in zip(trace.ts[:upto], trace.usage[:upto], strict=True):
        if usage > 0:
            history.push(t, usage)
    return history


def _first_sample(traces: Sequence[VMTrace]) -> int:
    return min(t.ts[0] for t in traces)


def replay_days(traces: Sequence[VMTrace]) -> int:
    """Days of the replay (from its first sample): the second axis of `day_costs`."""
    return int((max(t.ts[-1] for t in traces) - _first_sample(traces)) // DAY_S) + 1


def replay_oracle(traces: Sequence[VMTrace]) -> ReplayResult:
    """The physical limit: a policy that knows each sample's usage before it happens."""
    started = time.perf_counter()
    score = _Score()
    for tr in traces:
        a = tr.provisioned[0]
        for prov, usage in zip(tr.provisioned, tr.usage, strict=True):
            lo = min(GIB, prov)
            after = min(max(usage if usage > 0 else a, lo), prov)
            score.count(a, after, prov, usage, forced=False)
            a = after
    return score.result("oracle", traces, time.perf_counter() - started)
