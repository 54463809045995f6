"""One pass over every policy: node budgets weigh VMs of different policies against each other."""

from __future__ import annotations

from typing import Any

from dynamic_memory.api import PolicySpec
from dynamic_memory.model import DemandSignal
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.reconcile import PodRequest, metrics_groups, plan_all, pod_request, rooms, running_vms

NOW = 1_800_000_000.0


def spec(app: str, weight: int, **kw: Any) -> PolicySpec:
    return PolicySpec.model_validate({"selector": {"matchLabels": {"app": app}}, "startup": "2Gi",
                                      "maximum": "16Gi", "weight": weight, **kw})


def vm(ns: str, name: str, app: str, guest: str = "2Gi") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "labels": {"app": app}, "resourceVersion": "1"},
            "spec": {"template": {"spec": {"domain": {"memory": {"guest": guest}}}}}}


def vmi(ns: str, name: str, guest: str = "2Gi", node: str = "small") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"domain": {"memory": {"guest": guest, "maxGuest": "16Gi"}}},
            "status": {"phase": "Running", "nodeName": node,
                       "memory": {"guestAtBoot": "2Gi", "guestCurrent": guest, "memoryOverhead": "0"}}}


def test_heavier_policy_is_served_first_on_a_shared_node() -> None:
    policies = {"a/gold": spec("gold", 9000), "b/bronze": spec("bronze", 1000)}
    vms = {"a": {"g": vm("a", "g", "gold")}, "b": {"b": vm("b", "b", "bronze")}}
    vmis = {"a/g": vmi("a", "g"), "b/b": vmi("b", "b")}
    # both short (pressure): each wants 2Gi*1.1 + 1Gi; the node has room for 4Gi + 1.5Gi of guests
    signals = {k: DemandSignal(2 * GIB, 2 * GIB, True, pressure=True) for k in vmis}
    pods = {"small": [PodRequest("a", "g", 2 * GIB), PodRequest("b", "b", 2 * GIB)]}
    passes = plan_all(policies, vms, vmis, signals, {"small": 6 * GIB + 512 * MIB}, pods, GIB, NOW)
    gold, bronze = passes["a/gold"].decisions[0], passes["b/bronze"].decisions[0]
    assert gold.target > bronze.target
    assert gold.target + bronze.target <= 5 * GIB + 512 * MIB  # never past the room
    assert bronze.limited == "room"


def test_a_vm_selected_twice_is_governed_once() -> None:
    policies = {"a/first": spec("db", 5000), "a/second": spec("db", 5000)}
    vms = {"a": {"x": vm("a", "x", "db")}}
    passes = plan_all(policies, vms, {"a/x": vmi("a", "x")}, {}, {}, {}, GIB, NOW)
    assert passes["a/first"].selected == ["a/x"]
    assert passes["a/second"].claimed_elsewhere == {"a/x": "a/first"}


def test_stopped_vms_are_reported_not_decided() -> None:
    passes = plan_all({"a/p": spec("db", 5000)}, {"a": {"x": vm("a", "x", "db")}}, {}, {}, {}, {}, GIB, NOW)
    assert passes["a/p"].stopped == ["a/x"] and passes["a/p"].decisions == []


def test_policies_sharing_settings_share_queries() -> None:
    policies = {"a/p": spec("db", 1), "b/p": spec("web", 2),
                "c/p": spec("x", 3, scaleDown={"stabilizationWindow": "1h"})}
    vms = {ns: {"v": vm(ns, "v", app)} for ns, app in (("a", "db"), ("b", "web"), ("c", "x"))}
    vmis = {f"{ns}/v": vmi(ns, "v") for ns in "abc"}
    groups = metrics_groups(policies, running_vms(policies, vms, vmis))
    assert sorted(sorted(g.namespaces) for g in groups) == [["a", "b"], ["c"]]
    assert sorted(len(v) for v in groups.values()) == [1, 2]


def test_rooms_count_every_pod_but_the_managed_launchers() -> None:
    from dynamic_memory.model import VMState
    from dynamic_memory.policy.engine import Entry

    entry = Entry(VMState("a/g", "n", 2 * GIB, 2 * GIB, 16 * GIB, overhead=300 * MIB), DemandSignal(None, None),
                  spec("gold", 1).params())
    pods = {"n": [PodRequest("a", "g", 2 * GIB + 300 * MIB), PodRequest("kube-system", None, 3 * GIB)]}
    assert rooms(["n", "unknown"], {"a/g": entry}, {"n": 16 * GIB}, pods, GIB) == \
        {"n": 16 * GIB - GIB - 3 * GIB - 300 * MIB, "unknown": None}


def test_pod_requests_skip_finished_and_unscheduled_pods() -> None:
    def pod(phase: str, node: str | None) -> dict[str, Any]:
        return {"metadata": {"namespace": "a", "labels": {"vm.kubevirt.io/name": "g"}},
                "spec": {"nodeName": node, "containers": [{"resources": {"requests": {"memory": "1Gi"}}},
                                                          {"resources": {}}]},
                "status": {"phase": phase}}
    assert pod_request(pod("Running", "n")) == ("n", PodRequest("a", "g", GIB))
    assert pod_request(pod("Succeeded", "n")) is None
    assert pod_request(pod("Pending", None)) is None


def test_each_pass_reports_the_rooms_of_its_nodes() -> None:
    policies = {"a/gold": spec("gold", 9000)}
    passes = plan_all(policies, {"a": {"g": vm("a", "g", "gold")}}, {"a/g": vmi("a", "g")}, {},
                      {"small": 8 * GIB}, {"small": [PodRequest("a", "g", 2 * GIB)]}, GIB, NOW)
    # 8Gi - 1Gi reserve - its launcher overhead at maxGuest (0 now + (16Gi - 2Gi)/512 of page tables)
    assert passes["a/gold"].rooms == {"small": 7 * GIB - 14 * GIB // 512}
