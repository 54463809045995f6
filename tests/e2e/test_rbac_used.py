"""The operator's ClusterRole holds nothing it does not use: every (group, resource, verb) the chart
grants appears in the API server's audit log as a call by the operator's ServiceAccount.

The operator tests before this file exercise it; this test also drives what it needs on its own
(a policy, a VM short of memory, so a patch, a status write and an Event)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from dynamic_memory.quantity import GIB
from tests.e2e.conftest import Operator
from tests.e2e.controlplane.cluster import Cluster
from tests.e2e.standin.controller import KubeVirtStandIn
from tests.e2e.test_operator_e2e import create_vm, guest, setup_namespace, vm, wait

ROOT = Path(__file__).resolve().parents[2]
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


def test_every_granted_permission_is_used(control_plane: Cluster, admin_api: client.ApiClient,
                                          kubevirt: KubeVirtStandIn, operator: Operator) -> None:
    if control_plane.audit_log is None:
        pytest.skip("needs the API server's audit log (our control plane keeps one)")
    ns = "rbac"
    setup_namespace(control_plane, ns)
    kubevirt.set_demand(f"{ns}/db", 3 * GIB)
    create_vm(admin_api, ns, "db")
    wait(lambda: guest(vm(admin_api, ns, "db")) > 2 * GIB, what="a resize by the operator")
    time.sleep(2)  # the audit backend writes in batches
    unused = granted() - used(control_plane.audit_log)
    assert not unused, f"granted but never used by the operator: {sorted(unused)}"
