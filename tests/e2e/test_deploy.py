"""Install it like a real operator: the chart lints, deploy/manifests is exactly what the chart
renders, both apply to the real API server, and the operator's pod passes `restricted` admission."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.controlplane.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kubevirt-dynamic-memory"
NS = "kubevirt-dynamic-memory"


def helm(cp: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(cp.bin / "helm"), *args], capture_output=True, text=True, timeout=60, check=False)


def test_helm_lint_is_clean(control_plane: Cluster) -> None:
    out = helm(control_plane, "lint", "--strict", str(CHART))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


def test_manifests_are_what_the_chart_renders(control_plane: Cluster) -> None:
    out = helm(control_plane, "template", "kubevirt-dynamic-memory", str(CHART), "--namespace", NS,
               "--kube-version", "v1.34.4")
    assert out.returncode == 0, out.stderr
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    committed = [d for d in yaml.safe_load_all((ROOT / "deploy" / "manifests" / "operator.yaml").read_text()) if d]
    assert rendered == committed, "deploy/manifests drifted from the chart: run deploy/render.sh"


def test_chart_and_manifests_apply_server_side(control_plane: Cluster) -> None:
    applied = control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-k",
                                    str(ROOT / "deploy" / "manifests"))
    assert "deployment.apps/kubevirt-dynamic-memory serverside-applied" in applied.stdout
    dry = helm(control_plane, "template", "kubevirt-dynamic-memory", str(CHART), "--namespace", NS,
               "--kube-version", "v1.34.4")
    again = control_plane.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", stdin=dry.stdout)
    assert "serverside-applied (server dry run)" in again.stdout


def _operator_pod(cp: Cluster) -> dict[str, Any]:
    deployment = json.loads(cp.kubectl("get", "deployment", "kubevirt-dynamic-memory", "-n", NS, "-o",
                                       "json").stdout)
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-probe", "namespace": NS,
                                                           "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


def test_the_operator_pod_passes_restricted_and_a_weaker_one_does_not(control_plane: Cluster) -> None:
    control_plane.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(ROOT / "deploy" / "manifests"))
    labels = json.loads(control_plane.kubectl("get", "namespace", NS, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = _operator_pod(control_plane)
    admitted = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(pod))
    assert "pod/operator-probe created (server dry run)" in admitted.stdout
    weaker = json.loads(json.dumps(pod))
    weaker["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del weaker["spec"]["securityContext"]["seccompProfile"]
    refused = control_plane.kubectl("create", "--dry-run=server", "-f", "-", stdin=json.dumps(weaker), check=False)
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in refused.stderr
    assert "allowPrivilegeEscalation != false" in refused.stderr and "seccompProfile" in refused.stderr


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
