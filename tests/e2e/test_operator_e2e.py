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
from tests.e2e.controlplane.cluster import ControlPlane
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


def setup_namespace(cp: ControlPlane, ns: str, interval: str = "5s", **spec: Any) -> None:
    cp.kubectl("create", "namespace", ns)
    policy = {"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPolicy",
              "metadata": {"name": "dmp", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "db"}}, "startup": "2Gi", "maximum": "16Gi",
                       "interval": interval, **spec}}
    cp.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(policy))


def create_vm(api: client.ApiClient, ns: str, name: str, guest: str = "2Gi") -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(*KV, ns, "virtualmachines", {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "db"}},
        "spec": {"running": True, "template": {"spec": {"domain": {
            "memory": {"guest": guest, "maxGuest": "16Gi"}, "devices": {}}}}}})


def vm(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(*KV, ns, "virtualmachines", name))


def vmi(api: client.ApiClient, ns: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(*KV, ns, "virtualmachineinstances",
                                                                              name))
    except client.exceptions.ApiException:
        return None


def guest(obj: dict[str, Any]) -> int:
    return parse_quantity(obj["spec"]["template"]["spec"]["domain"]["memory"]["guest"])


def policy_status(api: client.ApiClient, ns: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object("dynamicmemory.io", "v1alpha1", ns,
                                                                    "dynamicmemorypolicies", "dmp")
    return dict(obj.get("status") or {})


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def test_demand_spike_grows_the_vm_within_two_intervals(control_plane: ControlPlane, admin_api: client.ApiClient,
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
    events = client.CoreV1Api(admin_api).list_namespaced_event(ns, field_selector="involvedObject.name=db").items
    assert any(e.reason == "Resized" and "Grow" in e.message for e in events), [e.message for e in events]
    status = policy_status(admin_api, ns)
    assert status["vms"] == 1 and status["running"] == 1 and status["pressured"][0]["name"] == "db"


def test_the_operator_cannot_do_what_its_role_does_not_allow(control_plane: ControlPlane,
                                                             operator_kubeconfig: Any) -> None:
    refused = control_plane.kubectl("delete", "virtualmachines", "--all", "-A", kubeconfig=operator_kubeconfig,
                                    check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr
    secrets = control_plane.kubectl("get", "secrets", "-A", kubeconfig=operator_kubeconfig, check=False)
    assert secrets.returncode != 0 and "forbidden" in secrets.stderr
    allowed = control_plane.kubectl("auth", "can-i", "patch", "virtualmachines.kubevirt.io", "-A",
                                    kubeconfig=operator_kubeconfig, check=False)
    assert allowed.stdout.strip() == "yes"
