"""Our CRD on a real API server: the README's policy applies, kubectl shows the columns, and
invalid policies are refused by the API server with a message that names the problem."""

from __future__ import annotations

import json
import re
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
    assert (spec["minimumBuffer"], spec["interval"], spec["scaleDown"]["stabilizationWindow"],
            spec["scaleUp"]["minStep"], spec["metrics"]["staleAfter"]) == ("1Gi", "30s", "8h", "768Mi", "2m")


def _policy(name: str, **spec: object) -> str:
    body = {"apiVersion": "dynamicmemory.io/v1alpha1", "kind": "DynamicMemoryPolicy",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "x"}}, "startup": "2Gi", "maximum": "8Gi", **spec}}
    return yaml.safe_dump(body)


@pytest.mark.parametrize(("name", "spec", "words"), [
    ("min-above-startup", {"minimum": "4Gi"}, "minimum must not be larger than startup"),
    ("startup-above-max", {"startup": "16Gi"}, "startup must not be larger than maximum"),
    ("buffer-3000", {"bufferPercent": 3000}, "spec.bufferPercent: Invalid value: 3000"),
    ("bad-quantity", {"maximum": "two gigs"}, "spec.maximum"),
    ("below-hotplug-floor", {"minimum": "512Mi", "startup": "1Gi"}, "minimum must be at least 1Gi"),
    ("unaligned", {"maximum": "8G"}, "maximum must be a multiple of 2Mi"),
    ("weight-too-big", {"weight": 20000}, "spec.weight"),
    ("bad-mode", {"mode": "Aggressive"}, 'Unsupported value: "Aggressive"'),
    ("in-without-values", {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "operators In and NotIn need at least one value"),
])
def test_invalid_policies_are_refused_with_a_clear_message(control_plane: Cluster, name: str,
                                                           spec: dict[str, object], words: str) -> None:
    out = control_plane.kubectl("apply", "-f", "-", stdin=_policy(name, **spec), check=False)
    assert out.returncode != 0
    assert words in out.stderr, out.stderr
