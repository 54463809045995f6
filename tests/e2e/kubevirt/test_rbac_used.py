"""The operator's ClusterRole holds nothing it does not use: every (group, resource, verb) the chart
grants appears in the API server's audit log as a call by the operator's ServiceAccount.

Runs on KubeVirt's own controllers (so KubeVirt's resources, the KubeVirt CR and migrations among
them, are there to be watched), and drives what it needs on its own: a policy, a VM short of
memory, so a patch, a status write and an Event."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import ControlPlane
from tests.e2e.kubevirt.conftest import apply, namespace, policy, spec_guest, vm_manifest, vm_story, wait_for
from tests.e2e.kubevirt.handler import VirtHandler
from tests.e2e.kubevirt.rig import KubeVirtRig
from tests.e2e.units import GIB

ROOT = Path(__file__).resolve().parents[3]
ACCOUNT = "system:serviceaccount:kubevirt-dynamic-memory:kubevirt-dynamic-memory"


def granted() -> set[tuple[str, str, str]]:
    docs = yaml.safe_load_all((ROOT / "deploy" / "manifests" / "operator.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def used(audit_log: Path) -> set[tuple[str, str, str]]:
    out = set()
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event["user"]["username"] != ACCOUNT or not ref.get("resource") or event["responseStatus"]["code"] >= 400:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        out.add((ref.get("apiGroup", ""), resource, event["verb"]))
    return out


def test_every_granted_permission_is_used(kv_cluster: ControlPlane, kv_rig: KubeVirtRig, virt_handler: VirtHandler,
                                          kv_operator: Operator) -> None:
    assert kv_cluster.audit_log is not None
    ns = namespace(kv_cluster, "rbac")
    policy(kv_cluster, ns, "rbac")
    virt_handler.set_demand(ns, "db", 3 * GIB)
    apply(kv_cluster, vm_manifest("db", ns, labels={"app": "rbac"}))
    wait_for("a resize by the operator", lambda: spec_guest(kv_cluster, "db", ns) != "2Gi", 120,
             detail=lambda: vm_story(kv_cluster, "db", ns))
    time.sleep(2)  # the audit backend writes in batches
    unused = granted() - used(kv_cluster.audit_log)
    assert not unused, f"granted but never used by the operator: {sorted(unused)}"
