"""Fixtures of the real-KubeVirt e2e tier: a control plane of its own (KubeVirt's CRDs own the
kubevirt.io resources there, so it cannot share the stand-in's), KubeVirt v1.8.0's virt-api and
virt-controller, kube-scheduler, kwok's nodes, our virt-handler, and the operator."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import yaml
from kubernetes import client, config

from tests.e2e.conftest import EXISTING, ROOT, Operator, operator_identity
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.kubevirt.handler import VirtHandler
from tests.e2e.kubevirt.rig import KubeVirtRig
from tests.e2e.prometheus import Prometheus

NODES = ("kv-node-1", "kv-node-2", "kv-node-3")
NODE_MEMORY = "16Gi"
T = TypeVar("T")


# Module scope: the cluster, KubeVirt and the operator end with the tests that use them, so that
# the stand-in tier's counts (API requests, PromQL queries on the shared Prometheus) see only its own.
@pytest.fixture(scope="module")
def kv_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd and kube-apiserver of their own, with our CRD."""
    if EXISTING:
        pytest.skip("runs KubeVirt's controllers on a control plane of its own")
    cp = ControlPlane(tmp_path_factory.mktemp("kv-cp"))
    try:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="module")
def kv_rig(kv_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeVirtRig]:
    """KubeVirt's own controllers, the scheduler and kwok, with three nodes."""
    rig = KubeVirtRig(kv_cluster, tmp_path_factory.mktemp("kubevirt"))
    try:
        for node in NODES:
            rig.add_node(node, NODE_MEMORY)
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def kv_admin(kv_cluster: ControlPlane) -> client.ApiClient:
    api = config.new_client_from_config(config_file=str(kv_cluster.kubeconfig))  # type: ignore[no-untyped-call]
    return cast(client.ApiClient, api)


@pytest.fixture(scope="module")
def virt_handler(kv_rig: KubeVirtRig, kv_admin: client.ApiClient, guest_metrics: GuestMetrics) -> Iterator[VirtHandler]:
    handler = VirtHandler(kv_admin, kv_rig.handler_kubeconfig, guest_metrics)
    yield handler
    handler.stop()
    assert not handler.errors, handler.errors[:5]


@pytest.fixture(scope="module")
def kv_operator(kv_cluster: ControlPlane, virt_handler: VirtHandler, prometheus: Prometheus,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator on the real-KubeVirt cluster, under exactly deploy/'s RBAC."""
    kubeconfig = operator_identity(kv_cluster, tmp_path_factory.mktemp("kv-operator") / "kubeconfig")
    op = Operator(kubeconfig, prometheus.url, tmp_path_factory.mktemp("kv-operator-log") / "operator.log")
    yield op
    op.stop()


def namespace(cp: ControlPlane, name: str) -> str:
    """A namespace with its default ServiceAccount (no controller-manager makes it here)."""
    cp.ensure_namespace(name)
    cp.kubectl("create", "serviceaccount", "default", "-n", name, check=False)
    return name


def vm_manifest(name: str, ns: str, *, guest: str = "2Gi", max_guest: str | None = "8Gi",
                labels: dict[str, str] | None = None, extra_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """A VirtualMachine that KubeVirt can hotplug: no disks (kwok reports no image digests, which a
    containerDisk's migration needs), guest and maxGuest set."""
    memory = {"guest": guest, **({"maxGuest": max_guest} if max_guest else {})}
    labels = labels or {}
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": labels},
                "spec": {"domain": {"memory": memory, "cpu": {"cores": 1}, "devices": {}, **(extra_spec or {})},
                         "terminationGracePeriodSeconds": 0}}}}


def apply(cp: ControlPlane, obj: dict[str, Any], check: bool = True) -> Any:
    return cp.kubectl("apply", "-f", "-", stdin=json.dumps(obj), check=check)


def get(cp: ControlPlane, kind: str, name: str, ns: str) -> dict[str, Any]:
    out = cp.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return cast(dict[str, Any], json.loads(out.stdout)) if out.returncode == 0 else {}


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 60, every_s: float = 0.5,
             detail: Callable[[], object] | None = None) -> T:
    """The first truthy answer of `probe`, or a TimeoutError that says what did not happen (and
    what `detail` shows then)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(every_s)
    raise TimeoutError(f"waited {timeout_s:.0f}s for {what}" + (f": {detail()}" if detail else ""))


def running_vmi(cp: ControlPlane, name: str, ns: str, timeout_s: float = 90) -> dict[str, Any]:
    """The VMI once our virt-handler reported it Running."""
    def probe() -> dict[str, Any] | None:
        vmi = get(cp, "vmi", name, ns)
        return vmi if (vmi.get("status") or {}).get("phase") == "Running" else None
    return wait_for(f"VMI {ns}/{name} Running", probe, timeout_s)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def write_file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def vm_story(cp: ControlPlane, name: str, ns: str) -> str:
    """What a VM, its VMI, its migrations and pods look like now: the detail of a failed wait."""
    vm, vmi = get(cp, "vm", name, ns), get(cp, "vmi", name, ns)
    annotations = {k.removeprefix("dynamicmemory.io/"): v for k, v in (vm.get("metadata", {}).get("annotations")
                                                                       or {}).items() if "dynamicmemory" in k}
    status = vmi.get("status") or {}
    policies = [(p["metadata"]["name"], [(c["type"], c["status"], c.get("reason"), c.get("message", "")[:200])
                                         for c in (p.get("status") or {}).get("conditions", [])])
                for p in json.loads(cp.kubectl("get", "dmp", "-n", ns, "-o", "json").stdout)["items"]]
    migrations = [(m["metadata"]["name"], (m.get("status") or {}).get("phase"))
                  for m in json.loads(cp.kubectl("get", "vmim", "-n", ns, "-o", "json").stdout)["items"]]
    return "\n".join([
        f"VM spec guest {vm.get('spec', {}).get('template', {}).get('spec', {}).get('domain', {}).get('memory')}, "
        f"conditions {[(c['type'], c['status']) for c in vm.get('status', {}).get('conditions', [])]}",
        f"VM annotations {annotations}",
        f"VMI {status.get('phase')} on {status.get('nodeName')}, memory {status.get('memory')}, "
        f"conditions {[(c['type'], c['status']) for c in status.get('conditions', [])]}, "
        f"migrationState {status.get('migrationState')}",
        f"migrations {migrations}",
        f"policies {policies}",
        cp.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout])


def policy(cp: ControlPlane, ns: str, app: str, **spec: object) -> None:
    body = {"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPolicy",
            "metadata": {"name": app, "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": app}}, "startup": "2Gi", "maximum": "8Gi", "interval": "2s",
                     **spec}}
    cp.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))


def spec_guest(cp: ControlPlane, name: str, ns: str) -> str:
    return str(get(cp, "vm", name, ns)["spec"]["template"]["spec"]["domain"]["memory"]["guest"])


def operator_patches(cp: ControlPlane, ns: str, name: str, *, resizes: bool = False) -> list[dict[str, Any]]:
    """The operator's PATCH requests on one VM, from the API server's audit log (with `resizes`,
    only those that change the VM's spec: its annotations alone do not count)."""
    assert cp.audit_log is not None
    out = []
    for line in cp.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if (event.get("verb") == "patch" and ref.get("resource") == "virtualmachines" and ref.get("name") == name
                and ref.get("namespace") == ns and event.get("stage") == "ResponseComplete"
                and "kubevirt-dynamic-memory" in event.get("user", {}).get("username", "")
                and (not resizes or "spec" in (event.get("requestObject") or {}))):
            out.append(event)
    return out
