"""The command line, as a user runs it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_replay import write_trace

ROOT = Path(__file__).resolve().parents[2]
POLICY = (ROOT / "deploy" / "examples" / "policy.yaml").read_text()


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


def test_replay_of_some_days_starts_every_vm_over(tmp_path: Path) -> None:
    # VM 1 runs the first day only, VM 2 both days; 288 samples a day, 5 minutes apart
    rows = [(1, t * 300, 8, 2) for t in range(288)] + [(2, t * 300, 8, 1 + t // 288 * 4) for t in range(576)]
    trace = write_trace(tmp_path / "t.csv", rows)
    second = json.loads(run("replay", str(trace), "--days", "1:", "--policy", "static", "--json").stdout)
    assert (second["vms"], second["samples"]) == (1, 288)
    first = json.loads(run("replay", str(trace), "--days", "0:1", "--policy", "static", "--json").stdout)
    assert (first["vms"], first["samples"]) == (2, 576)
    table = run("replay", str(trace), "--days", "1:2")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("days 1 to 2 of 2.0, every VM starting over; 1 VMs"), table.stdout
    optimum = json.loads(run("replay", str(trace), "--days", "1:", "--policy", "optimum", "--budget", "1",
                             "--json").stdout)
    # the second day alone: 5 GiB used of 8, and one change allowed, made at the start (8 → 5)
    assert optimum["memory_ratio"] == pytest.approx(5 / 8, abs=0.01)


def replayed_with(trace: Path, knob: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The example policy with one more spec line (`knob`), written beside the trace, and the trace
    replayed (JSON) by the default policy and by that one."""
    policy = trace.with_name("knob.yaml")
    policy.write_text(POLICY.replace("  bufferPercent: 20\n", f"  bufferPercent: 20\n  {knob}\n"))
    plain = json.loads(run("replay", str(trace), "--json").stdout)
    out = run("replay", str(trace), "--policy-file", str(policy), "--json")
    assert out.returncode == 0, out.stderr
    return policy, plain, json.loads(out.stdout)


def test_replay_with_time_of_day_grows_before_a_nightly_peak(tmp_path: Path) -> None:
    # five days of 1 GiB used, 6 GiB from 02:00 to 03:00 every night, 8 GiB provisioned
    rows = [(1, t * 300, 8, 6 if (t * 300) % 86400 // 3600 == 2 else 1) for t in range(5 * 288)]
    trace = write_trace(tmp_path / "t.csv", rows)
    policy, plain, daily = replayed_with(trace, "timeOfDay: true")
    # the engine shrinks after each night's peak and is short when the next one starts; knowing the
    # nights before, it grows before the third one and later ones
    assert plain["pressure_fraction"] > 0
    assert daily["pressure_fraction"] < plain["pressure_fraction"]
    assert daily["resizes_by_reason"].get("PeakAhead", 0) >= 2
    assert "sized for the time of day" in run("replay", str(trace), "--policy-file", str(policy)).stdout


def test_the_replay_learns_what_a_policy_leaves_unset_and_the_simulator_says_it_does_not(tmp_path: Path) -> None:
    # 2 GiB with an hour at 6 GiB every day, for eight days: a VM that learns takes a short window
    day = 288
    rows = [(1, t * 300, 16, 6 if t % day in range(100, 112) else 2) for t in range(8 * day)]
    trace = write_trace(tmp_path / "t.csv", rows)
    policy, learns, fixed = replayed_with(trace, "learnPerVM: false")
    assert learns["policy"] == fixed["policy"] == "dynamic-memory"
    assert learns["memory_ratio"] < fixed["memory_ratio"]
    # both knobs set to the values a VM starts from: nothing is left to learn, every VM keeps them
    _, _, pinned = replayed_with(trace, "minimumBuffer: 1Gi\n  scaleDown: {stabilizationWindow: 8h}")
    figures = ("memory_ratio", "pressure_fraction", "resizes_per_vm_day")
    assert [pinned[f] for f in figures] == [fixed[f] for f in figures]
    table = run("replay", str(trace), "--policy-file", str(policy), "--policy", "all").stdout
    assert f"policy databases from {policy}, minimum buffer 1Gi, scale-down window 8h\n" in table, table
    assert "dynamic-memory learns" not in table, table
    window_only = policy.with_name("window.yaml")
    window_only.write_text(POLICY.replace("  bufferPercent: 20\n",
                                          "  bufferPercent: 20\n  scaleDown: {stabilizationWindow: 3h}\n"))
    table = run("replay", str(trace), "--policy-file", str(window_only)).stdout
    assert "minimum buffer learnt per VM, scale-down window 3h" in table, table
    assert "dynamic-memory learns each VM's minimum buffer daily from six candidates" in table, table
    out = run("simulate", "--scenario", "burst", "--policy-file", str(window_only), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert ("learnPerVM is not simulated: every VM keeps minimumBuffer 1Gi and scaleDown.stabilizationWindow 3h, "
            "as the operator does until a VM has learnt 3 days") in out.stdout, out.stdout


@pytest.mark.parametrize(("args", "words"), [
    (("replay", "/nonexistent.csv"), "error: /nonexistent.csv: no such file"),
    (("replay", "/nonexistent.csv", "--days", "5:3"), "'5:3': give FROM:TO in days after the trace's first sample"),
    (("replay", "/nonexistent.csv", "--days", "5"), "'5': give FROM:TO in days"),
    (("replay", "/nonexistent.csv", "--buffer", "3000"), "3000 is out of range: a whole percent from 5 to 2000"),
    (("replay", "/nonexistent.csv", "--buffer", "3"), "3 is out of range: a whole percent from 5 to 2000"),
    (("simulate", "--scenario", "nope"), "invalid choice"),
    (("simulate", "--scenario", "trace"), "error: --scenario trace needs --trace FILE"),
    (("simulate", "--scenario", "trace", "--trace", "x.csv", "--vms", "0"), "0 is out of range: a whole number of VMs"),
    (("simulate", "--scenario", "trace", "--trace", "x.csv", "--days", "-1"), "-1 is out of range: a number of days"),
    (("simulate", "--scenario", "burst", "--out", "/proc/no/such"), "error: --out /proc/no/such: cannot write there"),
    (("run", "--node-reserve", "banana"), "error: --node-reserve (DM_NODE_RESERVE) is 'banana': must be a memory"),
    (("run", "--max-in-flight", "0"), "error: --max-in-flight (DM_MAX_IN_FLIGHT) is '0': must be from 1 to 1000"),
    (("run", "--prometheus-url", "prometheus:9090"), "must be an http:// or https:// URL"),
    (("recommend", "--prometheus", "http://127.0.0.1:9", "--selector", "app in"), "--selector: 'app in' is not"),
])
def test_bad_input_gets_a_clear_error(args: tuple[str, ...], words: str) -> None:
    out = run(*args)
    assert out.returncode == 2, out.stderr
    assert words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.splitlines()) <= 8, out.stderr


def test_run_without_a_cluster_stops_at_once(tmp_path: Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    out = subprocess.run([sys.executable, "-m", "dynamic_memory", "run"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("error: no cluster to talk to"), out.stderr
    assert "Traceback" not in out.stderr


def _trace_file(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


HEADER = b"vm,timestamp_s,memory_provisioned_kib,memory_usage_kib\n"


@pytest.mark.parametrize(("name", "body", "words"), [
    ("empty.csv", b"", "empty.csv: empty file"),
    ("header.csv", HEADER, "header.csv: a header but no samples"),
    ("cols.csv", b"a,b\n1,2\n", "cols.csv:1: missing column(s) vm, timestamp_s"),
    ("random.bin", bytes(range(256)) * 8, "random.bin: not text (bytes that are not UTF-8)"),
    ("cut.csv.gz", gzip.compress(HEADER + b"1,0,4194304,1048576\n" * 5000)[:300],
     "the gzip data is damaged or cut short"),
    ("negprov.csv", HEADER + b"1,0,4194304,1048576\n1,300,-4,1\n",
     "negprov.csv:3: memory_provisioned_kib -4 is negative"),
    ("neguse.csv", HEADER + b"1,0,4194304,-1\n", "neguse.csv:2: memory_usage_kib -1 is negative"),
    ("text.csv", HEADER + b"1,soon,4194304,1\n", "text.csv:2: timestamp_s, memory_provisioned_kib and"),
    ("short.csv", HEADER + b"1,0\n", "short.csv:2: 2 columns"),
])
@pytest.mark.parametrize("command", ["replay", "simulate"])
def test_bad_traces_are_refused_with_file_and_line(tmp_path: Path, name: str, body: bytes, words: str,
                                                   command: str) -> None:
    trace = str(_trace_file(tmp_path / name, body))
    args = ("replay", trace) if command == "replay" else ("simulate", "--scenario", "trace", "--trace", trace,
                                                          "--out", str(tmp_path))
    out = run(*args)
    assert out.returncode == 2, out.stdout
    assert out.stderr.startswith("error: ") and words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_policy_file_runs_the_users_policy(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [(1, t * 300, 16, 2 + (t // 50) % 3) for t in range(600)])
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY.replace("bufferPercent: 20", "bufferPercent: 300"))
    big = json.loads(run("replay", str(trace), "--policy-file", str(policy), "--json").stdout)
    small = json.loads(run("replay", str(trace), "--json").stdout)
    assert big["memory_ratio"] > small["memory_ratio"]  # a 300 % buffer keeps more memory than 20 %
    out = run("simulate", "--scenario", "burst", "--policy-file", str(policy), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"policy: databases from {policy}, for every VM" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("bufferPercent: 20", "bufferPercent: 3"))
    out = run("replay", str(trace), "--policy-file", str(bad))
    assert out.returncode == 2
    assert f"{bad}:13: spec.bufferPercent: must be at least 5, not 3" in out.stderr, out.stderr


def test_simulate_writes_plot_and_report(tmp_path: Path) -> None:
    out = run("simulate", "--scenario", "burst", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "burst.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "burst.json").read_text())
    assert [row["policy"] for row in report["policies"]] == ["dynamic-memory", "static", "hyperv", "proxmox", "vpa"]
    assert "| dynamic-memory" in out.stdout
    assert "by weight" not in out.stdout  # one weight: nothing to tell apart


def test_simulate_of_a_short_pool_tells_the_shortage_by_weight(tmp_path: Path) -> None:
    out = run("simulate", "--scenario", "small-node", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    at = lines.index("short of memory, by weight (the share of the time each weight's VMs were short):")
    assert lines[at + 1].split("|")[1:-1] == [" policy         ", " weight 9000 ", " weight 5000 ", " weight 1000 "]
    static = next(line for line in lines[at:] if line.startswith("| static"))
    assert static.split("|")[2:-1] == ["      0.0000 ", "      0.0000 ", "      0.0000 "]
    report = json.loads((tmp_path / "small-node.json").read_text())
    ours = report["policies"][0]
    row = next(line for line in lines[at:] if line.startswith("| dynamic-memory"))
    assert [float(cell) for cell in row.split("|")[2:-1]] == pytest.approx(list(ours["short_by_weight"].values()),
                                                                         abs=5e-5)


def test_replay_of_days_the_trace_does_not_hold_says_what_it_spans(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [(1, t * 300, 8, 2) for t in range(577)])
    out = run("replay", str(trace), "--days", "3:")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "days 3: hold no VM with two samples; the trace spans 2.0 days" in out.stderr, out.stderr


def test_simulate_from_a_trace_file(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "t.csv", [(v, t * 300, 8, 1 + (t + v) % 4) for v in (1, 2, 3) for t in range(600)])
    out = run("simulate", "--scenario", "trace", "--trace", str(trace), "--days", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "trace.json").read_text())["vms"] == 3


def test_run_without_the_operator_packages_says_what_to_install() -> None:
    code = ("import sys; sys.modules['kopf'] = None; from dynamic_memory.cli import main; "
            "raise SystemExit(main(['run']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "needs the operator's packages: pip install 'kubevirt-dynamic-memory[operator]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_the_parser_offers_every_scenario_of_the_simulator() -> None:
    from dynamic_memory.cli import SCENARIO_NAMES
    from dynamic_memory.sim.scenarios import SCENARIOS
    assert tuple(SCENARIOS) == SCENARIO_NAMES


def test_the_operator_loads_neither_the_simulator_nor_numpy() -> None:
    # what `dynamic-memory run` imports before Kopf starts: its parser, its config, its handlers
    code = ("import sys; from dynamic_memory import cli; cli.parser().parse_args(['run']); "
            "import dynamic_memory.config, dynamic_memory.handlers; "
            "print(sorted(m for m in sys.modules if m == 'numpy' or m.startswith('dynamic_memory.sim')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_reader_that_goes_away_gets_no_traceback(tmp_path: Path) -> None:
    """`dynamic-memory simulate … | head`: here the reader is gone before the first line."""
    with subprocess.Popen([sys.executable, "-m", "dynamic_memory", "simulate", "--scenario", "burst", "--out",
                           str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=300) == 141
    assert "Traceback" not in err and "Exception ignored" not in err, err
