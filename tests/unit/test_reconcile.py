"""One pass over every policy, from KubeVirt's objects: every change is a migration to another node,
so the plan weighs VMs of different policies against each other over the pool."""

from __future__ import annotations

from typing import Any

from dynamic_memory.api import PolicySpec
from dynamic_memory.model import Blocker, DemandSignal, Limit
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.reconcile import Snapshot, metrics_groups, plan_all, running_vms
from dynamic_memory.sources.cluster import node_state, pod_info

NOW = 1_800_000_000.0


def spec(app: str, weight: int, **kw: Any) -> PolicySpec:
    return PolicySpec.model_validate({"selector": {"matchLabels": {"app": app}}, "startup": "2Gi",
                                      "maximum": "16Gi", "weight": weight, **kw})


def vm(ns: str, name: str, app: str, guest: str = "2Gi", status: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {"name": name, "namespace": ns, "labels": {"app": app},
                                        "resourceVersion": "1"},
                           "spec": {"runStrategy": "Manual",
                                    "template": {"spec": {"domain": {"memory": {"guest": guest}}}}}}
    if status:
        out["status"] = {"printableStatus": status}
    return out


def vmi(ns: str, name: str, guest: str = "2Gi", node: str = "a") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}"},
            "spec": {"domain": {"memory": {"guest": guest, "maxGuest": "16Gi"}}},
            "status": {"phase": "Running", "nodeName": node,
                       "conditions": [{"type": "LiveMigratable", "status": "True"}],
                       "memory": {"guestAtBoot": "2Gi", "guestCurrent": guest, "guestRequested": guest}}}


def node(name: str, memory: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **labels}},
            "status": {"allocatable": {"memory": memory}}}


def pod(ns: str, name: str, node_name: str | None, memory: str, vmi_uid: str | None = None,
        phase: str = "Running", hostname: str | None = None) -> dict[str, Any]:
    labels = {"kubevirt.io/created-by": vmi_uid} if vmi_uid else {}
    if hostname:
        labels["vm.kubevirt.io/name"] = hostname
    return {"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"nodeName": node_name, "containers": [{"resources": {"requests": {"memory": memory}}},
                                                           {"resources": {}}]},
            "status": {"phase": phase}}


def snapshot(policies: dict[str, PolicySpec], vms: list[dict[str, Any]], vmis: list[dict[str, Any]],
             nodes: list[dict[str, Any]], pods: list[dict[str, Any]], **kw: Any) -> Snapshot:
    by_ns: dict[str, dict[str, Any]] = {}
    for v in vms:
        by_ns.setdefault(v["metadata"]["namespace"], {})[v["metadata"]["name"]] = v
    infos = [p for p in map(pod_info, pods) if p is not None]
    states = [n for n in map(node_state, nodes) if n is not None]
    return Snapshot(policies, by_ns, {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in vmis},
                    states, infos, **kw)


SHORT = DemandSignal(2 * GIB, 2 * GIB, True, pressure=True)
"""Short of memory (paging): each wants 2Gi × 1.1 + the 1Gi buffer doubled = 4.2Gi, aligned."""


def test_heavier_policy_is_served_first_across_the_pool() -> None:
    policies = {"p/gold": spec("gold", 9000), "q/bronze": spec("bronze", 1000)}
    vms = [vm("p", "g", "gold"), vm("q", "b", "bronze")]
    vmis = [vmi("p", "g"), vmi("q", "b")]
    pods = [pod("p", "virt-launcher-g", "a", "2304Mi", "uid-p-g"),
            pod("q", "virt-launcher-b", "a", "2304Mi", "uid-q-b")]
    # node b has room (5Gi after the reserve) for one new pod of 4.2Gi + 256Mi overhead, not two
    nodes = [node("a", "16Gi"), node("b", "6Gi")]
    plan = plan_all(snapshot(policies, vms, vmis, nodes, pods, reserve=GIB), {"p/g": SHORT, "q/b": SHORT}, NOW)
    gold, bronze = plan.passes["p/gold"].decisions[0], plan.passes["q/bronze"].decisions[0]
    assert gold.landing == "b" and gold.target > gold.current and gold.limited is None, gold.reason
    assert bronze.target == bronze.current and bronze.limited is Limit.ROOM
    assert bronze.notes[-1].code == "NoRoom"


def test_a_vm_that_can_land_nowhere_else_is_held_with_its_reason() -> None:
    policies = {"p/gold": spec("gold", 9000)}
    plan = plan_all(snapshot(policies, [vm("p", "g", "gold")], [vmi("p", "g")], [node("a", "64Gi")],
                             [pod("p", "virt-launcher-g", "a", "2304Mi", "uid-p-g")]), {"p/g": SHORT}, NOW)
    decision = plan.passes["p/gold"].decisions[0]
    assert decision.limited is Limit.LANDING and not decision.changes
    assert decision.notes[-1].code == "NoLandingNode"


def test_overhead_comes_from_the_launcher_pod_found_by_vmi_uid() -> None:
    policies = {"p/gold": spec("gold", 9000)}
    pods = [pod("p", "virt-launcher-g", "a", "2400Mi", "uid-p-g", hostname="something-else"),
            pod("p", "unrelated", "a", "9Gi", hostname="g")]  # vm.kubevirt.io/name is only the hostname
    plan = plan_all(snapshot(policies, [vm("p", "g", "gold")], [vmi("p", "g")], [node("a", "64Gi")], pods),
                    {}, NOW)
    assert plan.passes["p/gold"].entries[0].vm.overhead == 2400 * MIB - 2 * GIB


def test_node_room_counts_every_bound_pod_with_migration_targets_on_their_node() -> None:
    policies = {"p/gold": spec("gold", 9000)}
    pods = [pod("p", "virt-launcher-g", "a", "2304Mi", "uid-p-g"),
            pod("p", "virt-launcher-g-target", "b", "4352Mi", "uid-p-g"),  # a migration's target pod
            pod("kube-system", "dns", "b", "1Gi"),
            pod("kube-system", "done", "b", "8Gi", phase="Succeeded"),
            pod("kube-system", "pending", None, "8Gi")]
    plan = plan_all(snapshot(policies, [vm("p", "g", "gold")], [vmi("p", "g")],
                             [node("a", "16Gi"), node("b", "16Gi")], pods, reserve=GIB), {}, NOW)
    assert plan.cluster.nodes["b"].free == 16 * GIB - GIB - 4352 * MIB - GIB
    assert plan.cluster.nodes["a"].free == 16 * GIB - GIB - 2304 * MIB


def test_a_pending_migration_makes_the_vm_busy_and_takes_a_migration_slot() -> None:
    policies = {"p/gold": spec("gold", 9000)}
    plan = plan_all(snapshot(policies, [vm("p", "g", "gold")], [vmi("p", "g")],
                             [node("a", "16Gi"), node("b", "16Gi")], [], migrations={"p/g": True}, limits=(5, 2)),
                    {"p/g": SHORT}, NOW)
    entry, decision = plan.passes["p/gold"].entries[0], plan.passes["p/gold"].decisions[0]
    assert entry.vm.blocked is Blocker.MIGRATING and not decision.changes
    assert plan.cluster.migrations_left == 4 and plan.cluster.nodes["a"].outbound == 1


def test_kubevirt_migration_limits_cap_the_changes_of_a_pass() -> None:
    policies = {"p/all": spec("x", 5000)}
    names = [f"v{i}" for i in range(5)]
    plan = plan_all(snapshot(policies, [vm("p", n, "x") for n in names], [vmi("p", n) for n in names],
                             [node("a", "64Gi"), node("b", "64Gi"), node("c", "64Gi")], [], limits=(3, 2)),
                    {f"p/{n}": SHORT for n in names}, NOW)
    decisions = plan.passes["p/all"].decisions
    assert sum(d.changes for d in decisions) == 2  # all five leave node a: two outbound at most
    assert {d.limited for d in decisions if not d.changes} == {Limit.MIGRATIONS}


def test_a_vm_selected_twice_is_governed_once() -> None:
    policies = {"a/first": spec("db", 5000), "a/second": spec("db", 5000)}
    plan = plan_all(snapshot(policies, [vm("a", "x", "db")], [vmi("a", "x")], [], []), {}, NOW)
    assert plan.passes["a/first"].selected == ["a/x"]
    assert plan.passes["a/second"].claimed_elsewhere == {"a/x": "a/first"}


def test_only_a_vm_kubevirt_reports_stopped_is_stopped() -> None:
    policies = {"a/p": spec("db", 5000)}
    vms = [vm("a", "off", "db", status="Stopped"), vm("a", "starting", "db", status="Starting"),
           vm("a", "new", "db")]
    plan = plan_all(snapshot(policies, vms, [], [], []), {}, NOW)
    assert plan.passes["a/p"].stopped == ["a/off"] and plan.passes["a/p"].decisions == []


def test_a_vm_that_booted_above_the_startup_size_is_reported() -> None:
    policies = {"a/p": spec("db", 5000)}
    booted = vmi("a", "x", guest="6Gi")
    booted["status"]["memory"]["guestAtBoot"] = "6Gi"
    plan = plan_all(snapshot(policies, [vm("a", "x", "db", guest="6Gi")], [booted], [], []), {}, NOW)
    assert plan.passes["a/p"].raised_floor == ["a/x"]


def test_policies_sharing_settings_share_queries() -> None:
    policies = {"a/p": spec("db", 1), "b/p": spec("web", 2),
                "c/p": spec("x", 3, scaleDown={"stabilizationWindow": "1h"})}
    vms = {ns: {"v": vm(ns, "v", app)} for ns, app in (("a", "db"), ("b", "web"), ("c", "x"))}
    vmis = {f"{ns}/v": vmi(ns, "v") for ns in "abc"}
    groups, of_policy = metrics_groups(policies, running_vms(policies, vms, vmis))
    assert sorted(sorted(g.namespaces) for g in groups) == [["a", "b"], ["c"]]
    assert sorted(len(v) for v in groups.values()) == [1, 2]
    assert of_policy["a/p"] == of_policy["b/p"] != of_policy["c/p"]


def test_a_change_whose_target_pod_is_not_placed_yet_keeps_its_room() -> None:
    policies = {"p/gold": spec("gold", 9000), "q/bronze": spec("bronze", 1000)}
    moving = vmi("p", "g")
    moving["status"]["conditions"].append({"type": "HotMemoryChange", "status": "True"})
    vms = [vm("p", "g", "gold", guest="3278Mi"), vm("q", "b", "bronze")]
    pods = [pod("p", "virt-launcher-g", "a", "2304Mi", "uid-p-g"),
            pod("p", "virt-launcher-g-target", None, "3534Mi", "uid-p-g"),  # waiting for the scheduler
            pod("q", "virt-launcher-b", "a", "2304Mi", "uid-q-b")]
    # node b: room for one grown pod; gold's, still unplaced, will take it
    plan = plan_all(snapshot(policies, vms, [moving, vmi("q", "b")], [node("a", "16Gi"), node("b", "5Gi")], pods,
                             reserve=GIB), {"q/b": SHORT}, NOW)
    assert plan.passes["p/gold"].entries[0].vm.unlanded == 3278 * MIB + 256 * MIB
    bronze = plan.passes["q/bronze"].decisions[0]
    assert not bronze.changes and bronze.limited is Limit.ROOM
    # once the scheduler has bound gold's target pod, node b's room counts it as a pod like any other
    pods[1]["spec"]["nodeName"] = "b"
    plan = plan_all(snapshot(policies, vms, [moving, vmi("q", "b")], [node("a", "16Gi"), node("b", "5Gi")], pods,
                             reserve=GIB), {"q/b": SHORT}, NOW)
    assert plan.passes["p/gold"].entries[0].vm.unlanded == 0
    assert plan.cluster.nodes["b"].free == 5 * GIB - GIB - 3534 * MIB
