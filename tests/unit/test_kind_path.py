"""The README's "Try it on kind" commands, checked against the files they name, the chart's values,
the CRD and the example policy (by parsing, not by eye)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from dynamic_memory.api import PolicySpec

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kubevirt-dynamic-memory"


def commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Try it on kind\n.*?```sh\n(.*?)```", readme, re.S)
    assert block is not None
    text = block.group(1).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip() and
            not line.strip().startswith("#")]


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def test_every_local_file_named_exists_and_parses() -> None:
    named = [arg for cmd in commands() for i, arg in enumerate(cmd)
             if i and cmd[i - 1] in ("-f", "--config") and not arg.startswith("http")]
    assert "kind-config.yaml" in named and "deploy/examples/demo-vm.yaml" in named
    for path in named:
        assert (ROOT / path).is_file(), path
        if path.endswith(".yaml"):
            assert all(doc is not None for doc in yaml.safe_load_all((ROOT / path).read_text())), path


def test_kind_cluster_has_a_node_to_migrate_to() -> None:
    cfg = load("kind-config.yaml")
    assert cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert sum(n["role"] == "worker" for n in cfg["nodes"]) >= 2
    create = next(c for c in commands() if c[:3] == ["kind", "create", "cluster"])
    load_image = next(c for c in commands() if c[:3] == ["kind", "load", "docker-image"])
    assert load_image[load_image.index("--name") + 1] == cfg["name"]
    assert create[create.index("--config") + 1] == "kind-config.yaml"


def test_kubevirt_is_set_up_for_live_memory_changes() -> None:
    spec = load("deploy/examples/kubevirt-cr.yaml")["spec"]
    assert spec["configuration"]["vmRolloutStrategy"] == "LiveUpdate"
    assert spec["workloadUpdateStrategy"]["workloadUpdateMethods"] == ["LiveMigrate"]
    assert spec["configuration"]["developerConfiguration"]["useEmulation"] is True


def test_helm_sets_only_keys_the_chart_has() -> None:
    values = load(str(CHART.relative_to(ROOT) / "values.yaml"))
    ours = next(c for c in commands() if c[:2] == ["helm", "install"] and "deploy/helm/kubevirt-dynamic-memory" in c)
    sets = [ours[i + 1] for i, a in enumerate(ours) if a == "--set"]
    assert sets
    for item in sets:
        key, _, value = item.partition("=")
        node: Any = values
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"--set {key}: no such value in the chart"
            node = node[part]
        assert value
    image = {s.partition("=")[0]: s.partition("=")[2] for s in sets}
    build = next(c for c in commands() if c[:2] == ["docker", "build"])
    assert build[build.index("-t") + 1] == f"{image['image.repository']}:{image['image.tag']}"
    assert build[build.index("-f") + 1] == "deploy/Dockerfile" and (ROOT / "deploy" / "Dockerfile").is_file()


def test_the_demo_vm_is_governed_by_the_example_policy_over_its_whole_range() -> None:
    policy = load("deploy/examples/policy.yaml")
    spec = PolicySpec.model_validate(policy["spec"])
    vm = load("deploy/examples/demo-vm.yaml")
    assert vm["metadata"]["namespace"] == policy["metadata"]["namespace"]
    assert spec.selector.matches(vm["metadata"]["labels"])
    memory = vm["spec"]["template"]["spec"]["domain"]["memory"]
    assert (memory["guest"], memory["maxGuest"]) == (spec.startup, spec.maximum)  # boots at startup: the live floor
    assert vm["spec"]["template"]["spec"]["domain"]["devices"].get("autoattachMemBalloon", True)
    created = [c for c in commands() if c[:3] == ["kubectl", "create", "namespace"]]
    assert [policy["metadata"]["namespace"]] in [c[3:] for c in created]


def test_the_servicemonitor_selects_kubevirts_metrics_services() -> None:
    sm = load("deploy/examples/kubevirt-servicemonitor.yaml")
    assert sm["spec"]["selector"]["matchLabels"] == {"prometheus.kubevirt.io": "true"}
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
