"""Peer algorithms, implemented from their published descriptions, to compare ours against.

Each follows ../shared/reference/peers.md; where a peer's rule needs a host, the node's room
is its host. They share our bounds and alignment so that only the algorithm differs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from dynamic_memory.model import Action, Cluster, Decision, Limit, PolicyParams, Why
from dynamic_memory.policy.engine import Entry, SignalSpec
from dynamic_memory.policy.landing import land
from dynamic_memory.policy.target import fit, live_bounds
from dynamic_memory.quantity import MIB


def water_fill(caps: Mapping[str, int], weights: Mapping[str, int], budget: int) -> dict[str, int]:
    """Share `budget` in proportion to weight, nobody beyond its cap; weight-0 items get leftovers only.

    Water-filling in one pass over the items sorted by cap per weight (O(n log n)): an item whose
    share would exceed its cap takes its cap, and the rest share what is left; rounding crumbs go
    to the heaviest items that still have room."""
    given = dict.fromkeys(caps, 0)
    for pool in ([k for k in caps if weights[k] > 0], [k for k in caps if weights[k] <= 0]):
        weight = {k: weights[k] if weights[k] > 0 else 1 for k in pool if caps[k] > 0}
        left_weight = sum(weight.values())
        for k in sorted(weight, key=lambda k: caps[k] / weight[k]):
            if budget <= 0:
                break
            take = min(caps[k], budget * weight[k] // left_weight)
            given[k] = take
            budget -= take
            left_weight -= weight[k]
        for k in sorted(weight, key=lambda k: -weight[k]):  # the crumbs of rounding down
            if budget <= 0:
                break
            extra = min(budget, caps[k] - given[k])
            given[k] += extra
            budget -= extra
    return given


def _set(entry: Entry, target: int, reason: str, demand: int | None = None) -> Decision:
    vm = entry.vm
    action = Action.GROW if target > vm.assigned else Action.SHRINK if target < vm.assigned else Action.HOLD
    return Decision(vm.key, vm.node, vm.assigned, target, action, *Why("Baseline", reason), demand=demand,
                    wanted=target)


class Static:
    """No dynamic memory: every VM has its provisioned memory, its ceiling (maxGuest, or the
    trace's provisioned size); a change only ever follows that size moving."""

    name = "static"
    follows_demand = False
    balances_a_host = False

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """Reads nothing."""
        return SignalSpec()

    def plan(self, entries: Sequence[Entry], cluster: Cluster | None, now: float) -> list[Decision]:
        """Every VM at its provisioned size."""
        out = []
        for e in entries:
            ceiling = live_bounds(e.vm, e.params)[1]
            d = _set(e, ceiling, "static allocation")
            out.append(d._replace(limited=Limit.BOUNDS) if d.changes else d)
        return out


class HyperV:
    """Hyper-V's balancer: assigned = current demand + buffer at every step, no hysteresis; under
    shortage memory goes by weight (buffers first to give way)."""

    name = "hyperv"
    follows_demand = True
    balances_a_host = False

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """Newest demand only."""
        return SignalSpec()

    def plan(self, entries: Sequence[Entry], cluster: Cluster | None, now: float) -> list[Decision]:
        """Demand × (1 + buffer), every time."""
        out = []
        for e in entries:
            floor, ceiling = live_bounds(e.vm, e.params)
            demand = e.signal.latest
            if demand is None:
                out.append(_set(e, e.vm.assigned, "no demand: hold"))
                continue
            target = fit(demand + demand * e.params.buffer_percent // 100, floor, ceiling, e.params.alignment)
            out.append(_set(e, target, "demand + buffer", demand))
        return land(entries, out, cluster)


class Proxmox:
    """Proxmox VE auto-ballooning (pvestatd/AutoBalloon.pm): steer host use to 80 % of its memory,
    sharing by `shares` (1000 each) above each VM's minimum, at most 100 MiB per VM per 10 s round.

    The host's used memory is the sum of its VMs' memory (a guest's RAM is resident on the host)."""

    name = "proxmox"
    follows_demand = True
    balances_a_host = True
    target_percent = 80
    deadband = 10 * MIB
    change_per_s = 10 * MIB  # 100 MiB per 10 s round
    shares = 1000

    def __init__(self, step_s: float = 10.0) -> None:
        self.max_change = int(self.change_per_s * step_s)

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """Reads no guest demand: it steers by host use."""
        return SignalSpec()

    def plan(self, entries: Sequence[Entry], cluster: Cluster | None, now: float) -> list[Decision]:
        """One auto-balloon round per node."""
        by_node: dict[str, list[Entry]] = defaultdict(list)
        for e in entries:
            by_node[e.vm.node].append(e)
        targets: dict[str, int] = {}
        for node, group in by_node.items():
            known = cluster.nodes.get(node) if cluster is not None else None
            # the host's memory for VMs: what is free plus what its VMs' pods hold now
            host = (known.free + sum(e.vm.assigned + e.vm.overhead for e in group) if known is not None
                    else sum(live_bounds(e.vm, e.params)[1] for e in group))
            used = sum(e.vm.assigned for e in group)
            goal = host * self.target_percent // 100 - used
            if abs(goal) <= self.deadband:
                continue
            bounds = {e.vm.key: live_bounds(e.vm, e.params) for e in group}
            total = max(0, used + goal - sum(lo for lo, _ in bounds.values()))
            extra = water_fill({k: hi - lo for k, (lo, hi) in bounds.items()},
                               dict.fromkeys(bounds, self.shares), total)
            for e in group:
                lo, hi = bounds[e.vm.key]
                desired = lo + extra[e.vm.key]
                step = max(-self.max_change, min(self.max_change, desired - e.vm.assigned))
                targets[e.vm.key] = fit(e.vm.assigned + step, lo, hi, e.params.alignment)
        return land(entries, [_set(e, targets.get(e.vm.key, e.vm.assigned), "auto-balloon toward 80% host use")
                              for e in entries], cluster)


class VPA:
    """Kubernetes VPA recommender applied in place: P90 of the last 24 h of demand + 15 % safety
    margin, applied when the current size is more than 10 % away from it."""

    name = "vpa"
    follows_demand = True
    balances_a_host = False
    window_s = 24 * 3600.0
    quantile = 0.9
    margin_percent = 15
    tolerance_percent = 10

    def signal_spec(self, params: PolicyParams) -> SignalSpec:
        """P90 over 24 h."""
        return SignalSpec(0.0, self.window_s, self.quantile)

    def plan(self, entries: Sequence[Entry], cluster: Cluster | None, now: float) -> list[Decision]:
        """Recommend, then update only outside the tolerance."""
        out = []
        for e in entries:
            floor, ceiling = live_bounds(e.vm, e.params)
            p90 = e.signal.peak
            if p90 is None or e.signal.latest is None:
                out.append(_set(e, e.vm.assigned, "no history: hold"))
                continue
            target = fit(p90 + p90 * self.margin_percent // 100, floor, ceiling, e.params.alignment)
            if abs(target - e.vm.assigned) * 100 <= e.vm.assigned * self.tolerance_percent:
                target = e.vm.assigned
            out.append(_set(e, target, "P90 of 24 h + 15%", p90))
        return land(entries, out, cluster)
