"""The operator as its own process under deploy/'s RBAC, on a real API server, with a real
Prometheus and the KubeVirt stand-in."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client

from dynamic_memory.quantity import GIB, parse_quantity
from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import Cluster
from tests.e2e.kube import add_node, core, custom
from tests.e2e.prometheus import Prometheus
from tests.e2e.standin.controller import KubeVirtStandIn

KV = ("kubevirt.io", "v1")


def wait(check: Callable[[], Any], timeout_s: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}")


def setup_namespace(cp: Cluster, ns: str, interval: str = "5s", **spec: Any) -> None:
    cp.ensure_namespace(ns)
    apply_policy(cp, ns, "dmp", interval=interval, **spec)


def apply_policy(cp: Cluster, ns: str, name: str, app: str = "db", **spec: Any) -> None:
    policy = {"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPolicy",
              "metadata": {"name": name, "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": app}}, "startup": "2Gi", "maximum": "16Gi",
                       "interval": "5s", **spec}}
    cp.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy))


def create_vm(api: client.ApiClient, ns: str, name: str, guest: str = "2Gi", app: str = "db",
              node: str | None = None) -> None:
    template: dict[str, Any] = {"domain": {"memory": {"guest": guest, "maxGuest": "16Gi"}, "devices": {}}}
    if node:
        template["nodeSelector"] = {"kubernetes.io/hostname": node}
    custom(api).create_namespaced_custom_object(*KV, ns, "virtualmachines", {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"running": True, "template": {"spec": template}}})


def vm(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return dict(custom(api).get_namespaced_custom_object(*KV, ns, "virtualmachines", name))


def vmi(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(custom(api).get_namespaced_custom_object(*KV, ns, "virtualmachineinstances",
                                                                              name))
    except client.exceptions.ApiException:
        return None


def guest(obj: dict[str, Any]) -> int:
    return parse_quantity(obj["spec"]["template"]["spec"]["domain"]["memory"]["guest"])


def policy_status(api: client.ApiClient, ns: str, name: str = "dmp") -> dict[str, Any]:
    obj = custom(api).get_namespaced_custom_object("dynamicmemory.io", "v1alpha1", ns,
                                                                    "dynamicmemorypolicies", name)
    return dict(obj.get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def test_demand_spike_grows_the_vm_within_two_intervals(control_plane: Cluster, admin_api: client.ApiClient,
                                                        kubevirt: KubeVirtStandIn, operator: Operator,
                                                        prometheus: Prometheus) -> None:
    ns = "spike"
    setup_namespace(control_plane, ns)
    kubevirt.set_demand(f"{ns}/db", GIB)
    create_vm(admin_api, ns, "db")
    wait(lambda: vmi(admin_api, ns, "db"), what="the stand-in to boot the VM")
    wait(lambda: (condition(policy_status(admin_api, ns), "Ready") or {}).get("reason") == "Reconciled",
         what=f"a first pass; operator log:\n{operator.output()[-3000:]}")
    assert guest(vm(admin_api, ns, "db")) == 2 * GIB  # 1Gi demand + 1Gi buffer fits in 2Gi: no change

    kubevirt.set_demand(f"{ns}/db", 3 * GIB)  # more than it has: the guest pages
    wait(lambda: prometheus.query(f'kubevirt_vmi_memory_usable_bytes{{namespace="{ns}"}} < 100000000'),
         what="Prometheus to have the sample")
    seen = time.monotonic()
    wait(lambda: guest(vm(admin_api, ns, "db")) > 2 * GIB, timeout_s=30, what="the patch")
    reaction = time.monotonic() - seen
    print(f"reaction: patched {reaction:.2f}s after Prometheus had the sample")
    assert reaction <= 2 * 5 + 0.5, f"patched {reaction:.1f}s after Prometheus had the sample"

    grown = guest(vm(admin_api, ns, "db"))
    wait(lambda: parse_quantity((vmi(admin_api, ns, "db") or {})["status"]["memory"]["guestCurrent"]) == grown,
         what="the stand-in's migration")
    annotations = vm(admin_api, ns, "db")["metadata"]["annotations"]
    assert "guest short of memory" in annotations["dynamicmemory.io/reason"]
    events = core(admin_api).list_namespaced_event(ns, field_selector="involvedObject.name=db").items
    assert any(e.reason == "Resized" and "Grow" in e.message for e in events), [e.message for e in events]
    status = wait(lambda: policy_status(admin_api, ns).get("pressured") and policy_status(admin_api, ns),
                  what="the status to list the VM")
    assert status["vms"] == 1 and status["running"] == 1 and status["pressured"][0]["name"] == "db"


def test_the_operator_cannot_do_what_its_role_does_not_allow(control_plane: Cluster,
                                                             operator_kubeconfig: Any) -> None:
    # resources every cluster has (KubeVirt's may not be installed where DM_E2E_KUBECONFIG points)
    refused = control_plane.kubectl("create", "configmap", "probe", "-n", "default", "--from-literal=a=b",
                                    kubeconfig=operator_kubeconfig, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
    secrets = control_plane.kubectl("get", "secrets", "-A", kubeconfig=operator_kubeconfig, check=False)
    assert secrets.returncode != 0 and "forbidden" in secrets.stderr
    for verb, resource in (("patch", "dynamicmemorypolicies.dynamicmemory.io"), ("watch", "nodes")):
        allowed = control_plane.kubectl("auth", "can-i", verb, resource, "-A", kubeconfig=operator_kubeconfig,
                                        check=False)
        assert allowed.stdout.strip() == "yes", (verb, resource)


def resizes(obj: dict[str, Any]) -> list[str]:
    """Our own record of resizes in the last hour, from the VM's annotation."""
    return [i for i in (obj["metadata"].get("annotations") or {}).get("dynamicmemory.io/recent-resizes", "")
            .split(",") if i]


def test_falling_demand_shrinks_only_after_the_window_and_never_below_boot(
        control_plane: Cluster, admin_api: client.ApiClient, kubevirt: KubeVirtStandIn,
        operator: Operator) -> None:
    ns = "fall"
    # two shrinks an hour: the first one may keep the peak the guest showed while it paged during
    # its last grow's migration (still in the 30 s window), the second one reaches the floor
    setup_namespace(control_plane, ns, scaleDown={"stabilizationWindow": "30s", "minHistory": "5s",
                                                  "maxPerHour": 2})
    kubevirt.set_demand(f"{ns}/db", 5 * GIB)  # pages at 2Gi: grows, and grows again while it pages
    create_vm(admin_api, ns, "db")
    wait(lambda: guest(vm(admin_api, ns, "db")) >= 5 * GIB, timeout_s=90, what="growth past the demand")
    wait(lambda: not kubevirt.migrations, what="migrations to finish")
    kubevirt.set_demand(f"{ns}/db", GIB // 2)
    wait(lambda: guest(vm(admin_api, ns, "db")) == 2 * GIB, timeout_s=150, what="shrinks to the boot size")
    annotations = vm(admin_api, ns, "db")["metadata"]["annotations"]
    grows = [float(i.split(":")[0]) for i in resizes(vm(admin_api, ns, "db")) if i.endswith("Grow")]
    shrink_at = [float(i.split(":")[0]) for i in resizes(vm(admin_api, ns, "db")) if i.endswith("Shrink")]
    assert 1 <= len(shrink_at) <= 2 and min(shrink_at) - max(grows) >= 30, (grows, shrink_at)
    assert "peak demand" in annotations["dynamicmemory.io/reason"]  # demand + 1Gi is 1.5Gi: the boot size wins
    time.sleep(12)  # two more intervals: nothing left to shrink, and never below the boot size
    assert len([i for i in resizes(vm(admin_api, ns, "db")) if i.endswith("Shrink")]) == len(shrink_at)
    assert guest(vm(admin_api, ns, "db")) == 2 * GIB


def test_a_node_too_small_serves_the_heavier_policy_first(
        control_plane: Cluster, admin_api: client.ApiClient, kubevirt: KubeVirtStandIn,
        operator: Operator) -> None:
    ns = "weights"
    add_node(admin_api, "tiny", "12Gi")
    control_plane.ensure_namespace(ns)
    apply_policy(control_plane, ns, "gold", app="gold", weight=9000)
    apply_policy(control_plane, ns, "bronze", app="bronze", weight=1000)
    for name in ("gold", "bronze"):
        kubevirt.set_demand(f"{ns}/{name}", 8 * GIB)  # together far more than the node holds
        create_vm(admin_api, ns, name, app=name, node="tiny")
    room = 12 * GIB - GIB  # allocatable - the operator's node reserve
    worst = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pods = core(admin_api).list_pod_for_all_namespaces(field_selector="spec.nodeName=tiny").items
        held = sum(parse_quantity(c.resources.requests["memory"]) for p in pods for c in p.spec.containers)
        worst = max(worst, held)
        status = policy_status(admin_api, ns, "bronze")
        if (condition(status, "CapacityLimited") or {}).get("status") == "True" and not kubevirt.migrations:
            break
        time.sleep(0.2)
    assert worst <= room, f"{worst / GIB:.2f}Gi requested on a node with {room / GIB:.2f}Gi of room"
    gold_guest, bronze_guest = guest(vm(admin_api, ns, "gold")), guest(vm(admin_api, ns, "bronze"))
    assert gold_guest > bronze_guest, (gold_guest / GIB, bronze_guest / GIB)
    assert "capped by node room" in policy_status(admin_api, ns, "bronze")["pressured"][0]["reason"] or \
        gold_guest > 2 * GIB


def test_recommend_mode_changes_nothing_and_says_what_it_would_do(
        control_plane: Cluster, admin_api: client.ApiClient, kubevirt: KubeVirtStandIn,
        operator: Operator) -> None:
    ns = "recommend"
    setup_namespace(control_plane, ns, mode="Recommend")
    kubevirt.set_demand(f"{ns}/db", 4 * GIB)
    create_vm(admin_api, ns, "db")
    wait(lambda: "dynamicmemory.io/recommendation" in (vm(admin_api, ns, "db")["metadata"].get("annotations") or {}),
         what="a recommendation")
    time.sleep(6)
    current = vm(admin_api, ns, "db")
    assert guest(current) == 2 * GIB
    assert parse_quantity(current["metadata"]["annotations"]["dynamicmemory.io/recommendation"]) > 2 * GIB
    events = core(admin_api).list_namespaced_event(ns, field_selector="involvedObject.name=db").items
    assert any(e.reason == "Recommended" for e in events)
    assert all(e.reason != "Resized" for e in events)
