"""Named scenarios for `dynamic-memory simulate`: small clusters whose demand tells a story.

Demand is deterministic (seeded) so that runs, reports and tests repeat exactly.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from dynamic_memory.model import PolicyParams
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.sim.cluster import DemandFn, SimNode, SimVM
from dynamic_memory.sim.traces import TraceError, VMTrace, load_traces

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True)
class Scenario:
    """Nodes, VMs and how long to run them."""

    name: str
    description: str
    nodes: list[SimNode]
    vms: list[SimVM]
    duration_s: float
    step_s: float
    """Decisions and metric samples this often."""
    stale_s: float = 120.0
    """A sample older than this is missing (the operator's staleAfter); follows the sampling interval."""

    def with_policy(self, params: PolicyParams, *, keep_sizes: bool) -> Scenario:
        """Every VM under one policy (a user's --policy-file). With keep_sizes, each VM keeps its
        startup, minimum and maximum (a trace's provisioned sizes), and takes the policy's knobs."""
        def knobs(vm: SimVM) -> PolicyParams:
            if not keep_sizes:
                return params
            return replace(params, startup=vm.params.startup, minimum=vm.params.minimum, maximum=vm.params.maximum)
        return replace(self, vms=[replace(vm, params=knobs(vm)) for vm in self.vms])


def _params(startup_gib: float, maximum_gib: float, weight: int = 5000) -> PolicyParams:
    return PolicyParams(startup=int(startup_gib * GIB), minimum=GIB, maximum=int(maximum_gib * GIB), weight=weight)


def _flat(level_gib: float) -> Callable[[float], float]:
    return lambda t: level_gib


def _noisy(base: Callable[[float], float], seed: int, noise: float = 0.04, period_s: float = 300) -> DemandFn:
    """base(t) in GiB, with ±noise relative jitter that changes every period_s (a guest's churn)."""
    def demand(t: float) -> int:
        rnd = random.Random(seed * 1_000_003 + int(t // period_s))
        return max(64 * MIB, int(base(t) * (1 + noise * (2 * rnd.random() - 1)) * GIB))
    return demand


def steady() -> Scenario:
    """Six VMs with flat demand: the engine should size each once and then leave it alone."""
    nodes = [SimNode("node-a", 64 * GIB), SimNode("node-b", 64 * GIB)]
    levels = [1.5, 2.5, 3.0, 4.5, 6.0, 9.0]
    vms = [SimVM(f"vm-{i}", nodes[i % 2].name, _params(2, 16), _noisy(_flat(g), i), 16 * GIB)
           for i, g in enumerate(levels)]
    return Scenario("steady", "flat demand on six VMs", nodes, vms, 1 * DAY, 60)


def diurnal() -> Scenario:
    """Office hours: demand peaks by day and falls at night, three days long."""
    nodes = [SimNode("node-a", 96 * GIB), SimNode("node-b", 96 * GIB)]

    def wave(base: float, amp: float, phase: float) -> Callable[[float], float]:
        return lambda t: base + amp * max(0.0, math.sin(2 * math.pi * (t / DAY - phase)))

    vms = [SimVM(f"vm-{i}", nodes[i % 2].name, _params(2, 24), _noisy(wave(1.5 + i, 3 + 2 * i, 0.1 * i), i),
                 24 * GIB) for i in range(6)]
    return Scenario("diurnal", "daily peaks and quiet nights, three days", nodes, vms, 3 * DAY, 60)


def burst() -> Scenario:
    """An application opens on vm-0 (2 → 12 GiB in ten minutes) at 2 h and closes at 5 h. Every
    resize migrates the VM, so there are two nodes."""
    nodes = [SimNode("node-a", 64 * GIB), SimNode("node-b", 64 * GIB)]

    def app(t: float) -> float:
        ramp = min(1.0, max(0.0, (t - 2 * HOUR) / 600))
        return 2.0 + 10.0 * ramp if t < 5 * HOUR else 2.0

    vms = [SimVM("vm-0", "node-a", _params(2, 16), _noisy(app, 0), 16 * GIB)]
    vms += [SimVM(f"vm-{i}", "node-a", _params(2, 8), _noisy(_flat(2.0), i), 8 * GIB) for i in (1, 2)]
    return Scenario("burst", "an application opens and closes on one VM", nodes, vms, 16 * HOUR, 30)


def small_node() -> Scenario:
    """Three nodes too small for what their six VMs want at peak: weights decide who is served.

    Every resize migrates the VM to another node, so the pool's free room is what counts; two
    VMs of each weight, all busy at the same hours."""
    nodes = [SimNode(f"node-{x}", 24 * GIB, reserve=GIB, others=2 * GIB) for x in "abc"]
    weights = {"vm-gold": 9000, "vm-silver": 5000, "vm-bronze": 1000}

    def busy(start: float) -> Callable[[float], float]:
        return lambda t: 2.0 + (7.0 if start <= t % (8 * HOUR) < start + 5 * HOUR else 0.0)

    vms = [SimVM(f"{name}-{j}", nodes[(i + j) % 3].name, _params(2, 16, weight=w),
                 _noisy(busy(HOUR), 2 * i + j), 12 * GIB)
           for i, (name, w) in enumerate(weights.items()) for j in (1, 2)]
    return Scenario("small-node", "a pool too small for its VMs at peak: heavier weights first",
                    nodes, vms, 1 * DAY, 60)


@dataclass(frozen=True)
class TraceDemand:
    """A traced VM's usage as a demand function (time from its first sample); missing samples
    repeat the last known one."""

    trace: VMTrace

    def __call__(self, t: float) -> int:
        ts, usage = self.trace.ts, self.trace.usage
        j = max(0, bisect_right(ts, ts[0] + t) - 1)
        while j > 0 and usage[j] == 0:
            j -= 1
        return max(usage[j], 64 * MIB)


STALE_SAMPLES = 3
"""A sample counts as missing once this many sampling intervals passed without a newer one."""


def from_trace(path: str | Path, vms: int = 24, days: float = 3.0, node_gib: int = 256) -> Scenario:
    """Real demand: the first `vms` VMs of a trace file in the shared format, packed onto nodes to
    70 % of their provisioned sizes, plus a spare node (every resize migrates a VM to another node).
    Steps follow the trace's own sampling interval, and so does staleness (three missed samples)."""
    loaded = load_traces(path)
    traces = [t for t in loaded if max(t.provisioned) >= 2 * GIB][:vms]
    if not traces:
        raise TraceError(f"{path}: none of its {len(loaded)} VMs has 2 GiB or more provisioned; the simulator "
                         "needs room to resize (dynamic-memory replay scores VMs of any size)")
    gaps = sorted(t.sample_s for t in traces if t.sample_s > 0)
    step_s = gaps[len(gaps) // 2] if gaps else 300.0
    out, nodes, used = [], [SimNode("node-0", node_gib * GIB)], 0
    for _i, tr in enumerate(traces):
        prov = max(tr.provisioned) // (2 * MIB) * (2 * MIB)
        if used + prov > node_gib * GIB * 0.7:
            nodes.append(SimNode(f"node-{len(nodes)}", node_gib * GIB))
            used = 0
        used += prov
        params = replace(_params(1, 1), maximum=max(prov, GIB))
        out.append(SimVM(f"vm-{tr.vm}", nodes[-1].name, params, TraceDemand(tr), max(prov, GIB)))
    nodes.append(SimNode(f"node-{len(nodes)}", node_gib * GIB))  # a spare: every resize migrates the VM
    return Scenario("trace", f"{len(out)} VMs of {Path(path).name}, sampled every {step_s:.0f}s", nodes, out,
                    days * DAY, step_s, stale_s=STALE_SAMPLES * step_s)


SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "steady": steady, "diurnal": diurnal, "burst": burst, "small-node": small_node,
}
