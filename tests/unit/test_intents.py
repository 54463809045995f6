"""From a pass's plan to typed patch intents: what is written to which VM."""

from __future__ import annotations

from typing import Any

from dynamic_memory.actuators.intents import Kind, intents
from dynamic_memory.api import PolicySpec
from dynamic_memory.model import DemandSignal
from dynamic_memory.quantity import GIB
from dynamic_memory.reconcile import Snapshot, plan_all
from dynamic_memory.sources.cluster import node_state, pod_info
from tests.unit.test_reconcile import node, pod, vm, vmi

NOW = 1_800_000_000.0
SHORT = DemandSignal(2 * GIB, 2 * GIB, True, pressure=True)


def spec(app: str, **kw: Any) -> PolicySpec:
    return PolicySpec.model_validate({"selector": {"matchLabels": {"app": app}}, "startup": "2Gi",
                                      "maximum": "16Gi", **kw})


def snapshot(policies: dict[str, PolicySpec], vms: list[dict[str, Any]], vmis: list[dict[str, Any]],
             pods: list[dict[str, Any]]) -> Snapshot:
    by_ns: dict[str, dict[str, Any]] = {}
    for v in vms:
        by_ns.setdefault(v["metadata"]["namespace"], {})[v["metadata"]["name"]] = v
    nodes = [n for n in (node_state(node("a", "64Gi")), node_state(node("b", "64Gi"))) if n]
    return Snapshot(policies, by_ns, {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in vmis},
                    nodes, [p for p in map(pod_info, pods) if p])


def test_auto_resizes_first_then_holds_and_boot_sizes() -> None:
    pinned = vm("p", "pinned", "db")
    free = vm("p", "free", "db")
    stopped = vm("p", "off", "db", guest="8Gi", status="Stopped")
    pods = [pod("p", "virt-launcher-free", "a", "2304Mi", "uid-p-free"),
            pod("p", "virt-launcher-pinned", "a", "2304Mi", "uid-p-pinned")]
    pods[1]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": "a"}
    snap = snapshot({"p/db": spec("db")}, [pinned, free, stopped], [vmi("p", "pinned"), vmi("p", "free")], pods)
    plan = plan_all(snap, {"p/pinned": SHORT, "p/free": SHORT}, NOW)
    todo = intents(plan, snap, NOW)
    assert [(i.kind, i.key) for i in todo] == [(Kind.RESIZE, "p/free"), (Kind.HOLD, "p/pinned"),
                                               (Kind.BOOT_SIZE, "p/off")]
    assert todo[0].body["spec"]["template"]["spec"]["domain"]["memory"]["guest"] != "2Gi"
    assert "no other node it may run on" in todo[1].body["metadata"]["annotations"]["dynamicmemory.io/held"]
    assert todo[2].body["spec"]["template"]["spec"]["domain"]["memory"] == {"guest": "2Gi", "maxGuest": "16Gi"}


def test_recommend_only_records_what_auto_would_do() -> None:
    vms = [vm("p", "x", "db"), vm("p", "off", "db", status="Stopped")]
    snap = snapshot({"p/db": spec("db", mode="Recommend")}, vms, [vmi("p", "x")],
                    [pod("p", "virt-launcher-x", "a", "2304Mi", "uid-p-x")])
    todo = intents(plan_all(snap, {"p/x": SHORT}, NOW), snap, NOW)
    assert [(i.kind, i.key) for i in todo] == [(Kind.RECOMMEND, "p/x")]
    assert "spec" not in todo[0].body
