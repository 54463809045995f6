"""crds/ is generated from the models: it must not drift, and it must be a structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dynamic_memory.crd import crd, crd_yaml

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "dynamicmemorypolicies.yaml"


def test_crds_folder_matches_the_models() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), "crds/ drifted from api.py: run `dynamic-memory crd -o " \
                                               "crds/dynamicmemorypolicies.yaml`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in node.items():
            out += _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _walk(v, f"{path}[{i}]")
    return out


def test_schema_is_structural() -> None:
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        if "properties" in node and not path.endswith(".properties"):
            assert "additionalProperties" not in node, path
            assert node.get("type") == "object", path


def test_crd_has_what_kubectl_users_see() -> None:
    doc = yaml.safe_load(CRD_FILE.read_text())
    version = doc["spec"]["versions"][0]
    assert doc["spec"]["names"]["shortNames"] == ["dmp"]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Mode", "VMs", "Assigned", "Demand",
                                                                         "Ready", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    messages = [r["message"] for r in spec["x-kubernetes-validations"]]
    assert "minimum must not be larger than startup" in messages
    assert "startup must not be larger than maximum" in messages
    assert spec["properties"]["bufferPercent"] == {
        "default": 20, "description": spec["properties"]["bufferPercent"]["description"],
        "maximum": 2000, "minimum": 5, "type": "integer"}
    for nested in ("scaleUp", "scaleDown", "metrics"):
        assert spec["properties"][nested]["default"] == {}, nested


def test_the_charts_crd_is_the_generated_one() -> None:
    for copy in ("deploy/helm/kubevirt-dynamic-memory/crds/dynamicmemorypolicies.yaml", "deploy/manifests/crd.yaml"):
        assert (CRD_FILE.parents[1] / copy).read_text() == crd_yaml(), f"{copy} drifted: run deploy/render.sh"


def test_dashboard_queries_only_metrics_that_exist() -> None:
    import json
    import re

    from dynamic_memory import metrics
    from dynamic_memory.sources import prometheus

    ours = {m.name for m in metrics.REGISTRY.collect()}
    kubevirt = {prometheus.AVAILABLE, prometheus.USABLE, prometheus.MAJOR_FAULTS, prometheus.SWAP_IN}
    dashboard = json.loads((CRD_FILE.parents[1] / "deploy" / "grafana" / "kubevirt-dynamic-memory.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b((?:dynamic_memory|kubevirt_vmi)_[a-z_]+)", e)}
    known = {n for n in names if n in kubevirt or any(n.removesuffix(s) in ours for s in ("_bucket", "_total", ""))}
    assert names - known == set(), f"the dashboard queries metrics nobody exports: {names - known}"
    assert len(dashboard["panels"]) >= 6
