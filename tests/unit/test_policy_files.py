"""`dynamic-memory check` and --policy-file: every problem named by file, line and field."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dynamic_memory.errors import UserError
from dynamic_memory.policy_files import load_policy, read_policy_file

ROOT = Path(__file__).resolve().parents[2]
GOOD = textwrap.dedent("""\
    apiVersion: dynamicmemory.io/v1alpha1
    kind: DynamicMemoryPolicy
    metadata:
      name: web
      namespace: prod
    spec:
      selector:
        matchLabels:
          app: web
      startup: 2Gi
      maximum: 8Gi
    """)


def check(*files: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynamic_memory", "check", *files], capture_output=True, text=True,
                          input=stdin, timeout=60, check=False)


def test_a_valid_policy_passes(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    out = check(str(tmp_path / "p.yaml"), str(ROOT / "deploy" / "examples" / "policy.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{tmp_path / 'p.yaml'}:1: DynamicMemoryPolicy prod/web is valid" in out.stdout


def test_each_problem_names_file_line_and_field(tmp_path: Path) -> None:
    bad = GOOD.replace("  maximum: 8Gi\n", "  maximum: 1Gi\n  minimum: 4Gi\n  bufferPercent: \"20\"\n  wieght: 3\n")
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n---\n" + bad)
    out = check(str(path))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    # the policy starts on line 6 of the file, after the Namespace and the separator
    assert f"{path}:15: spec.startup: 2Gi must not be larger than maximum 1Gi" in lines
    assert f"{path}:17: spec.minimum: 4Gi must not be larger than startup 2Gi" in lines
    assert f"{path}:16: spec.maximum: 1Gi must not be smaller than minimum 4Gi" in lines
    assert f"{path}:18: spec.bufferPercent: must be an integer, not '20'" in lines
    assert any(line.startswith(f"{path}:19: spec.wieght: unknown field") for line in lines), lines
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("content", "words"), [
    (b"spec: [\n", ":2: not valid YAML"),
    (b"\x00\xff\xfe binary", "not a text file"),
    (b"- just\n- a list\n", ":1: a document must be a Kubernetes object"),
    (GOOD.replace("dynamicmemory.io/v1alpha1", "dynamicmemory.io/v1").encode(), ":1: apiVersion: must be"),
    (GOOD.replace("  name: web\n", "").encode(), "metadata.name: is required"),
    (GOOD.split("spec:")[0].encode(), "spec: is required"),
    (b"apiVersion: v1\nkind: ConfigMap\n", "holds no DynamicMemoryPolicy (only ConfigMap)"),
])
def test_bad_files_are_reported_not_raised(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    out = check(str(path))
    assert out.returncode == 1
    assert words in out.stdout, out.stdout
    assert "Traceback" not in out.stderr


def test_missing_file_and_standard_input() -> None:
    out = check("/no/such/policy.yaml")
    assert out.returncode == 1 and "/no/such/policy.yaml: no such file" in out.stdout
    assert check("-", stdin=GOOD).returncode == 0


def test_policy_file_takes_exactly_one_valid_policy(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(GOOD)
    doc = load_policy(str(one))
    assert doc.spec is not None and (doc.name, doc.namespace, doc.spec.maximum) == ("web", "prod", "8Gi")
    two = tmp_path / "two.yaml"
    two.write_text(GOOD + "---\n" + GOOD)
    with pytest.raises(UserError, match="holds 2 DynamicMemoryPolicies"):
        load_policy(str(two))
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("2Gi", "3Mi"))
    with pytest.raises(UserError, match=r"bad.yaml:10: spec.startup: 3Mi is not a multiple of 2Mi"):
        load_policy(str(bad))


def test_report_keeps_other_kinds_apart(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n" + GOOD)
    report = read_policy_file(str(path))
    assert report.other_kinds == ("Namespace",) and len(report.policies) == 1 and not report.problems
