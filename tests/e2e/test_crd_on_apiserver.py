"""Our CRD on a real API server: the README's policy applies, kubectl shows the columns, and
invalid policies are refused by the API server with a message that names the problem."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.controlplane.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "examples" / "policy.yaml"


def test_readme_shows_the_example_policy_file() -> None:
    block = re.search(r"## A policy\n\n```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None and block.group(1) == EXAMPLE.read_text()


def test_example_policy_applies_and_kubectl_shows_the_columns(control_plane: Cluster) -> None:
    control_plane.ensure_namespace("prod")
    applied = control_plane.kubectl("apply", "-f", str(EXAMPLE))
    assert "dynamicmemorypolicy.dynamicmemory.io/databases created" in applied.stdout
    table = control_plane.kubectl("get", "dmp", "-n", "prod").stdout.splitlines()
    assert table[0].split() == ["NAME", "MODE", "VMS", "ASSIGNED", "DEMAND", "READY", "AGE"]
    assert table[1].split()[:2] == ["databases", "Auto"]
    stored = json.loads(control_plane.kubectl("get", "dmp", "databases", "-n", "prod", "-o", "json").stdout)
    spec = stored["spec"]  # the API server filled in the defaults, nested ones too
    assert (spec["learnPerVM"], spec["interval"], spec["scaleUp"]["minStep"], spec["scaleDown"]["minHistory"],
            spec["metrics"]["staleAfter"]) == (True, "30s", "768Mi", "2h", "2m")
    # but not the two knobs each VM learns: stored, they would read as an administrator's choice
    assert "minimumBuffer" not in spec and "stabilizationWindow" not in spec["scaleDown"], spec


def _policy(name: str, **spec: object) -> str:
    body = {"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "startup": "2Gi", "maximum": "8Gi", **spec}}
    return yaml.safe_dump(body)


# (name, spec change, field both must name, words of the API server's message)
INVALID: list[tuple[str, dict[str, object], str, str]] = [
    ("min-above-startup", {"minimum": "4Gi"}, "spec.minimum", "minimum must not be larger than startup"),
    ("startup-above-max", {"startup": "16Gi"}, "spec.startup", "startup must not be larger than maximum"),
    ("min-above-max", {"minimum": "4Gi", "startup": "4Gi", "maximum": "2Gi"}, "spec.maximum",
     "maximum must not be smaller than minimum"),
    ("buffer-3000", {"bufferPercent": 3000}, "spec.bufferPercent", "spec.bufferPercent: Invalid value: 3000"),
    ("buffer-string", {"bufferPercent": "20"}, "spec.bufferPercent", 'spec.bufferPercent: Invalid value: "string"'),
    ("bad-quantity", {"maximum": "two gigs"}, "spec.maximum", "spec.maximum"),
    ("below-hotplug-floor", {"minimum": "512Mi", "startup": "1Gi"}, "spec.minimum", "minimum must be at least 1Gi"),
    ("unaligned", {"maximum": "8G"}, "spec.maximum", "maximum must be a multiple of 2Mi"),
    ("weight-too-big", {"weight": 20000}, "spec.weight", "spec.weight"),
    ("bad-mode", {"mode": "Aggressive"}, "spec.mode", 'Unsupported value: "Aggressive"'),
    ("in-without-values", {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.selector.matchExpressions", "operators In and NotIn need at least one value"),
    ("promql-injection", {"metrics": {"matchers": 'job="a"} or vector(1) or x{a="b"'}}, "spec.metrics.matchers",
     "must be comma-separated PromQL label matchers"),
    ("stale-zero", {"metrics": {"staleAfter": "0s"}}, "spec.metrics.staleAfter", "staleAfter must be at least 10s"),
    ("interval-zero", {"interval": "0s"}, "spec.interval", "interval must be at least 1s"),
    ("typo", {"wieght": 3}, "spec.wieght", 'unknown field "spec.wieght"'),
]


@pytest.mark.parametrize(("name", "spec", "field", "words"), INVALID, ids=[case[0] for case in INVALID])
def test_invalid_policies_are_refused_by_the_api_server_and_by_check(
        control_plane: Cluster, tmp_path: Path, name: str, spec: dict[str, object], field: str, words: str) -> None:
    body = _policy(name, **spec)
    out = control_plane.kubectl("apply", "-f", "-", stdin=body, check=False)
    assert out.returncode != 0
    assert words in out.stderr and field in out.stderr, out.stderr
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    checked = subprocess.run([sys.executable, "-m", "dynamic_memory", "check", str(path)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 1
    assert re.search(rf"^{re.escape(str(path))}:\d+: {re.escape(field)}[.:]", checked.stdout, re.M), checked.stdout


@pytest.mark.parametrize("spec", [
    {}, {"metrics": {"matchers": 'job="kubevirt", cluster=~"eu-.*"', "staleAfter": "10s"}},
    {"minimum": "2Gi", "interval": "1s", "bufferPercent": 2000}])
def test_valid_policies_pass_both(control_plane: Cluster, tmp_path: Path, spec: dict[str, object]) -> None:
    body = _policy(f"valid-{len(str(spec))}", **spec)
    applied = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", stdin=body, check=False)
    assert applied.returncode == 0, applied.stderr
    path = tmp_path / "p.yaml"
    path.write_text(body)
    checked = subprocess.run([sys.executable, "-m", "dynamic_memory", "check", str(path)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout
