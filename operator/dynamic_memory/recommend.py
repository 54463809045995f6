"""`dynamic-memory recommend`: what a policy would do to the VMs running now, from their own
Prometheus history, before anything is installed. Read-only.

Pure: the history comes in as numbers (sources/prometheus.py reads it), each VM's demand goes
through the same DemandHistory and the same engine as in the operator, and the engine's decision
at the end of the history is the recommendation. Node room is not known here, so no node budget
applies: the figures are what each VM's own demand asks for.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dynamic_memory.api import LabelSelector
from dynamic_memory.errors import UserError
from dynamic_memory.history import DemandHistory
from dynamic_memory.model import Action, PolicyParams, VMHistory, VMState
from dynamic_memory.policy.engine import DynamicMemory, Entry

LABEL_PREFIX = "kubernetes_vmi_label_"
"""virt-handler copies each VMI label onto its metrics as kubernetes_vmi_label_<key>, with '.', '/'
and '-' turned into '_' (pkg/monitoring/metrics/virt-handler/domainstats/domainstats.go)."""


@dataclass(frozen=True, slots=True)
class Recommendation:
    """What the policy would set one VM to, and why."""

    key: str
    node: str
    size: int
    target: int
    action: Action
    demand_peak: int | None
    reason: str


def label_name(key: str) -> str:
    """The metric label virt-handler writes for a VMI label key."""
    return LABEL_PREFIX + re.sub(r"[./-]", "_", key)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _alternation(values: Sequence[str]) -> str:
    return _quote("|".join(re.escape(v) for v in values))


_REQUIREMENT = re.compile(r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
                          r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)"
                          r"|\s(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?\s*$")


def selector_matchers(selector: str) -> list[str]:
    """A kubectl label selector (`app=db,tier in (a,b),!legacy`) as PromQL label matchers."""
    parts = re.split(r",(?![^()]*\))", selector) if selector.strip() else []
    out = []
    for part in parts:
        m = _REQUIREMENT.match(part)
        if not m or (m["neg"] and (m["op"] or m["set"])):
            raise UserError(f"--selector: {part.strip()!r} is not a label selector requirement "
                            "(key=value, key!=value, key in (a,b), key notin (a,b), key, !key)")
        label = label_name(m["key"])
        if m["neg"]:
            out.append(f'{label}=""')
        elif m["op"] in ("=", "=="):
            out.append(f"{label}={_quote(m['value'])}")
        elif m["op"] == "!=":
            out.append(f"{label}!={_quote(m['value'])}")
        elif m["set"]:
            values = [v.strip() for v in m["values"].split(",") if v.strip()]
            if not values:
                raise UserError(f"--selector: {part.strip()!r} lists no values")
            out.append(f"{label}{'=~' if m['set'] == 'in' else '!~'}{_alternation(values)}")
        else:
            out.append(f'{label}!=""')
    return out


def policy_matchers(selector: LabelSelector) -> list[str]:
    """A policy's label selector as PromQL label matchers over virt-handler's VMI label copies."""
    out = [f"{label_name(k)}={_quote(v)}" for k, v in sorted(selector.matchLabels.items())]
    for req in selector.matchExpressions:
        label = label_name(req.key)
        out.append({"In": f"{label}=~{_alternation(req.values)}" if req.values else "",
                    "NotIn": f"{label}!~{_alternation(req.values)}" if req.values else "",
                    "Exists": f'{label}!=""', "DoesNotExist": f'{label}=""'}[req.operator])
    return [m for m in out if m]


def recommend(series: Mapping[str, VMHistory], params: PolicyParams, now: float,
              stale_s: float) -> list[Recommendation]:
    """Each VM's decision at `now` after its whole history, by the operator's own engine."""
    engine = DynamicMemory()
    spec = engine.signal_spec(params)
    entries = []
    for key in sorted(series):
        s = series[key]
        history = DemandHistory(spec, stale_s)
        for t, demand in s.demand:
            history.push(t, demand)
        floor = max(params.minimum, params.startup)
        vm = VMState(key, s.node, s.size, min(floor, s.size) if s.size else floor, max(params.maximum, s.size))
        entries.append(Entry(vm, history.signal(now), params))
    decisions = engine.plan(entries, None, now)
    return [Recommendation(e.vm.key, e.vm.node, e.vm.assigned, d.target, d.action, e.signal.peak, d.reason)
            for e, d in zip(entries, decisions, strict=True)]
