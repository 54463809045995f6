"""The command line, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_replay import write_trace


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dynamic_memory", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, check=False)


def test_crd_prints_the_generated_crd() -> None:
    out = run("crd")
    assert out.returncode == 0
    assert "name: dynamicmemorypolicies.dynamicmemory.io" in out.stdout


def test_replay_json_has_the_three_figures_at_the_top(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [(v, t * 300, 8, 1 + (t + v) % 4) for v in (1, 2) for t in range(300)])
    out = run("replay", str(trace), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"memory_ratio", "pressure_fraction", "resizes_per_vm_day"} <= set(data)
    assert data["policy"] == "dynamic-memory" and data["vms"] == 2


def test_replay_all_policies_prints_a_table(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [(1, t * 300, 8, 1 + t % 4) for t in range(300)])
    out = run("replay", str(trace), "--policy", "all")
    assert out.returncode == 0, out.stderr
    for name in ("dynamic-memory", "static", "hyperv", "proxmox", "vpa", "oracle"):
        assert f"| {name}" in out.stdout


@pytest.mark.parametrize(("args", "words"), [
    (("replay", "/nonexistent.csv"), "no trace file at /nonexistent.csv"),
    (("replay", "/nonexistent.csv", "--buffer", "3000"), "invalid choice"),
    (("simulate", "--scenario", "nope"), "invalid choice"),
    (("simulate", "--scenario", "trace"), "--scenario trace needs --trace FILE"),
])
def test_bad_input_gets_a_clear_error(args: tuple[str, ...], words: str) -> None:
    out = run(*args)
    assert out.returncode != 0
    assert words in out.stderr


def test_simulate_writes_plot_and_report(tmp_path: Path) -> None:
    out = run("simulate", "--scenario", "burst", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "burst.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "burst.json").read_text())
    assert [row["policy"] for row in report["policies"]] == ["dynamic-memory", "static", "hyperv", "proxmox", "vpa"]
    assert "| dynamic-memory" in out.stdout


def test_simulate_from_a_trace_file(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [(v, t * 300, 8, 1 + (t + v) % 4) for v in (1, 2, 3) for t in range(600)])
    out = run("simulate", "--scenario", "trace", "--trace", str(trace), "--days", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "trace.json").read_text())["vms"] == 3
