"""Demand history of one guest: sliding-window extremes, in the simulator and in the operator.

The simulator's stand-in for Prometheus answers the questions the operator asks Prometheus
(`min_over_time`, `max_over_time`, `quantile_over_time` over a window ending now) from samples
strictly before `now`, in amortised O(1) for min/max and O(window) for quantiles. Missing samples
are simply never pushed. The operator keeps a WindowExtreme per VM between passes, so it asks
Prometheus for the whole scale-down window only once (sources/prometheus.py).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from collections import deque

from dynamic_memory.model import DemandSignal, from_fields
from dynamic_memory.policy.engine import DailyPattern, SignalSpec


class WindowExtreme:
    """Sliding max (or min) over a time window, with a monotonic deque.

    With a `granularity`, time is cut in granules of that length, and a sample less extreme than
    the newest kept one of its granule is folded into it (which then lives until this sample would
    have): at most span/granularity + 1 entries, and the answer errs only towards the extreme, for
    at most one granule. The operator keeps one per VM for hours; a demand falling for the whole
    window would otherwise keep every sample.
    """

    __slots__ = ("dq", "granularity", "sign", "span")

    def __init__(self, span: float, *, largest: bool, granularity: float = 0.0) -> None:
        self.span = span
        self.sign = 1 if largest else -1
        self.granularity = granularity
        self.dq: deque[tuple[float, int]] = deque()

    def push(self, t: float, value: int) -> None:
        key = self.sign * value
        dq = self.dq
        while dq and self.sign * dq[-1][1] <= key:
            dq.pop()
        g = self.granularity
        if g and dq and t // g == dq[-1][0] // g:  # same granule: the kept, more extreme value covers this one
            dq[-1] = (t, dq[-1][1])
            return
        dq.append((t, value))

    def get(self, now: float) -> int | None:
        dq = self.dq
        while dq and dq[0][0] < now - self.span:
            dq.popleft()
        return dq[0][1] if dq else None


class _WindowQuantile:
    """Sliding quantile over a time window, with a sorted list (Prometheus' interpolation-free rank)."""

    __slots__ = ("fifo", "q", "sorted", "span")

    def __init__(self, span: float, q: float) -> None:
        self.span = span
        self.q = q
        self.fifo: deque[tuple[float, int]] = deque()
        self.sorted: list[int] = []

    def push(self, t: float, value: int) -> None:
        self.fifo.append((t, value))
        insort(self.sorted, value)

    def get(self, now: float) -> int | None:
        while self.fifo and self.fifo[0][0] < now - self.span:
            _, old = self.fifo.popleft()
            del self.sorted[bisect_left(self.sorted, old)]
        n = len(self.sorted)
        if not n:
            return None
        return self.sorted[min(n - 1, int(self.q * (n - 1) + 0.5))]


class DailyPeaks:
    """Each clock hour's highest demand over the last days, and what they say of the hours to come.

    A guest that peaks every night at two is expected to peak tonight at two: `recurring` is the
    highest demand of the coming `ahead_h` hours as the guest reached it on at least `agree` of
    its last `days` days, `soon` the same for the one hour holding now + lead_s. Both change only
    when the clock hour does (past hours are done), so they are worked out once an hour. The
    hours are kept in a ring of flat arrays, each slot stamped with the hour it holds: 1.5 KiB a
    VM for 3 days, where a dict of ints took 9.7 KiB (tracemalloc, 1,000 VMs).
    """

    __slots__ = ("days", "hour", "pattern", "peaks", "recurring", "soon", "soon_hour", "stamps")

    def __init__(self, pattern: DailyPattern) -> None:
        self.pattern = pattern
        ring = 24 * (pattern.days + 1)  # every hour a question reaches, the one now included
        self.stamps = array("i", [-1]) * ring
        self.peaks = array("q", [0]) * ring
        self.hour = self.soon_hour = -1
        self.days: list[list[int]] = []
        """Per past day, its peak of each hour from now's hour of the day on (the hour's questions)."""
        self.recurring: int | None = None
        self.soon: int | None = None

    def push(self, t: float, value: int) -> None:
        hour = int(t // 3600)
        slot = hour % len(self.stamps)
        if self.stamps[slot] != hour:
            self.stamps[slot], self.peaks[slot] = hour, value
        elif value > self.peaks[slot]:
            self.peaks[slot] = value

    def _agreed(self, per_day: list[int]) -> int | None:
        """The agree-th highest of the days' values: reached on at least `agree` of them."""
        return sorted(per_day, reverse=True)[self.pattern.agree - 1] or None

    def get(self, now: float) -> tuple[int | None, int | None]:
        """(recurring, soon) at `now`."""
        hour = int(now // 3600)
        p = self.pattern
        if hour != self.hour:  # once an hour: each past day's peaks of the hours the questions ask
            stamps, peaks, ring = self.stamps, self.peaks, len(self.stamps)
            span = max(p.ahead_h, 2)  # soon's hour is this one or the next
            self.days = [[peaks[h % ring] if stamps[h % ring] == h else 0
                          for h in range(hour - 24 * day, hour - 24 * day + span)] for day in range(1, p.days + 1)]
            self.hour, self.soon_hour = hour, -1
            self.recurring = self._agreed([max(row[:p.ahead_h]) for row in self.days])
        soon_hour = int((now + p.lead_s) // 3600)
        if soon_hour != self.soon_hour:
            self.soon_hour = soon_hour
            self.soon = self._agreed([row[soon_hour - hour] for row in self.days])
        return self.recurring, self.soon


class DemandHistory:
    """Everything a policy's SignalSpec needs about one guest, from its past samples."""

    __slots__ = ("daily", "first", "last", "last_t", "low", "needed", "peak", "spec", "stale_s")

    def __init__(self, spec: SignalSpec, stale_s: float) -> None:
        self.spec = spec
        self.stale_s = stale_s
        self.first: float | None = None
        self.last_t: float | None = None
        self.last = 0
        self.low = WindowExtreme(spec.up_window_s, largest=False) if spec.up_window_s > 0 else None
        self.peak: WindowExtreme | _WindowQuantile | None = None
        if spec.down_window_s > 0:
            self.peak = (WindowExtreme(spec.down_window_s, largest=True) if spec.down_quantile >= 1.0
                         else _WindowQuantile(spec.down_window_s, spec.down_quantile))
        self.daily = DailyPeaks(spec.daily) if spec.daily is not None else None
        self.needed = min(spec.min_history_s, spec.down_window_s)
        """How long the samples must span for `enough_history`."""

    def push(self, t: float, demand: int) -> None:
        """Record one sample of guest demand (bytes) taken at time t."""
        if self.first is None:
            self.first = t
        self.last_t, self.last = t, demand
        if self.low is not None:
            self.low.push(t, demand)
        if self.peak is not None:
            self.peak.push(t, demand)
        if self.daily is not None:
            self.daily.push(t, demand)

    def signal(self, now: float, pressure: bool = False) -> DemandSignal:
        """What Prometheus would answer at `now`: unknown when the newest sample is stale."""
        if self.last_t is None or now - self.last_t > self.stale_s:
            return DemandSignal(None, None, False, pressure)
        latest = self.last if self.low is None else self.low.get(now)
        peak = self.last if self.peak is None else self.peak.get(now)
        enough = self.first is not None and now - self.first >= self.needed
        if self.daily is None:  # one per VM per sample of a replay: built as the engine builds its Decisions
            return from_fields(DemandSignal, (latest, peak, enough, pressure, None, None))
        return DemandSignal(latest, peak, enough, pressure, *self.daily.get(now))
