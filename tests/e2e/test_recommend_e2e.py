"""`dynamic-memory recommend` against a real Prometheus scraping virt-handler's metrics (the
stand-in's, with KubeVirt's names and VMI labels): what a policy would do to running VMs, read-only.

Expected sizes are worked out by hand from the policy below: target = peak demand + the larger of
20 % and 1Gi, never below the 1Gi floor; a grow must be worth scaleUp.minStep (768Mi)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.prometheus import Prometheus, free_port
from tests.e2e.units import GIB

POLICY = textwrap.dedent("""\
    apiVersion: dynamicmemory.io/v1alpha1
    kind: DynamicMemoryPolicy
    metadata:
      name: databases
      namespace: rec
    spec:
      selector:
        matchLabels:
          app: db
      startup: 1Gi
      maximum: 16Gi
      scaleDown:
        stabilizationWindow: 30s
        minHistory: 10s
      metrics:
        staleAfter: 10s
    """)


def recommend(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynamic_memory", "recommend", *args], capture_output=True,
                          text=True, timeout=120, check=False)


def test_recommend_sizes_each_selected_vm_by_its_history(prometheus: Prometheus, guest_metrics: GuestMetrics,
                                                         tmp_path: Path) -> None:
    guest_metrics.set("rec", "idle", available=8 * GIB, demand=GIB, vmi_labels={"app": "db"})
    guest_metrics.set("rec", "busy", available=4 * GIB, demand=4 * GIB, vmi_labels={"app": "db"})
    guest_metrics.set("rec", "web", available=8 * GIB, demand=GIB, vmi_labels={"app": "web"})
    # the policy's minHistory: 10 s of samples before a VM may be shrunk
    prometheus.wait_for('count_over_time(kubevirt_vmi_memory_available_bytes{namespace="rec",name="idle"}[1m]) > 15')
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)

    out = recommend("--prometheus", prometheus.url, "--policy-file", str(policy), "--days", "0.01", "--json")
    assert out.returncode == 0, out.stderr
    got = {r["vm"]: (r["size"], r["recommended"], r["action"]) for r in json.loads(out.stdout)}
    assert got == {"rec/idle": (8 * GIB, 2 * GIB, "Shrink"), "rec/busy": (4 * GIB, 5 * GIB, "Grow")}

    table = recommend("--prometheus", prometheus.url, "--policy-file", str(policy), "--days", "0.01")
    assert table.returncode == 0, table.stderr
    assert "total: 12Gi now → 7Gi: 5Gi freed (42%)" in table.stdout, table.stdout
    assert "rec/idle: peak demand 1Gi" in table.stdout, table.stdout
    # the policy sets its window and leaves the buffer to learning: recommend sizes with what a VM
    # starts from, and says so, in the policy's own units
    assert ("(learnPerVM: with minimum buffer 1Gi, scale-down window 30s; the operator sizes a VM that has 3 "
            "days of metrics with the minimum buffer it learnt") in table.stdout, table.stdout

    # a kubectl-style selector instead of the policy's: only the web VM
    web = recommend("--prometheus", prometheus.url, "--namespace", "rec", "--selector", "app in (web)",
                    "--days", "0.01", "--json")
    assert web.returncode == 0, web.stderr
    assert [r["vm"] for r in json.loads(web.stdout)] == ["rec/web"]


def test_recommend_without_prometheus_is_a_clear_error() -> None:
    out = recommend("--prometheus", f"http://127.0.0.1:{free_port()}", "--days", "0.01")
    assert out.returncode == 2
    assert out.stderr.startswith("error: --prometheus http://127.0.0.1:"), out.stderr
    assert "Traceback" not in out.stderr


def test_recommend_with_no_matching_vm_says_so(prometheus: Prometheus) -> None:
    out = recommend("--prometheus", prometheus.url, "--namespace", "nobody-here", "--days", "0.01")
    assert out.returncode == 1
    assert "no VM found in namespace nobody-here" in out.stdout
