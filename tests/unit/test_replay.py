"""Replay rules of issue #3 on traces small enough to check by hand."""

from __future__ import annotations

import gc
import gzip
from collections.abc import Sequence
from pathlib import Path

import pytest

from dynamic_memory.model import PolicyParams
from dynamic_memory.policy.baselines import Proxmox, Static
from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.sim.replay import SLOT_S, replay, replay_oracle
from dynamic_memory.sim.traces import TraceError, load_traces

KIB_PER_GIB = 1024 * 1024
PARAMS = PolicyParams(0, 0, 2**62)
HEADER = "vm,timestamp_s,memory_provisioned_kib,memory_usage_kib\n"


def write_trace(path: Path, rows: Sequence[tuple[int, int, float, float]], gz: bool = False) -> Path:
    """rows: (vm, t, provisioned GiB, usage GiB)."""
    text = "vm,timestamp_s,memory_provisioned_kib,memory_usage_kib,cpu_cores\n" + "".join(
        f"{vm},{t},{int(p * KIB_PER_GIB)},{int(u * KIB_PER_GIB)},2\n" for vm, t, p, u in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_static_keeps_provisioned_memory(tmp_path: Path) -> None:
    rows = [(1, t * 300, 8, 1 + (t % 3)) for t in range(50)]
    r = replay(load_traces(write_trace(tmp_path / "t.csv", rows)), Static(), PARAMS)
    assert (r.memory_ratio, r.pressure_fraction, r.resizes_per_vm_day) == (1.0, 0.0, 0.0)
    # usage 1, 2, 3 GiB in turn (17, 17 and 16 samples) under 8 GiB: three quarters go unused
    assert r.slack == pytest.approx(1 - (17 * 1 + 17 * 2 + 16 * 3) / (50 * 8))


def test_missing_samples_keep_assigned_and_do_not_count(tmp_path: Path) -> None:
    # demand 2 GiB for 12 h, then all samples missing: the VM shrinks once and never again
    rows = [(1, t * 300, 16, 2 if t < 144 else 0) for t in range(288)]
    r = replay(load_traces(write_trace(tmp_path / "t.csv", rows)), DynamicMemory(), PARAMS)
    assert r.missing_samples == 144
    assert r.pressure_fraction == 0.0
    days = 287 * 300 / 86400
    assert r.resizes_per_vm_day == pytest.approx(1 / days)  # one shrink, 16 → 3 GiB
    assert r.own_resizes_per_vm_day == pytest.approx(1 / days)
    assert r.migrated_gib_per_vm_day == pytest.approx(16 / days)  # the whole 16 GiB guest migrated once


def test_decisions_use_only_earlier_samples(tmp_path: Path) -> None:
    # a step from 2 to 6 GiB after the VM has shrunk: the first 6 GiB sample is pressure, then it grows
    rows = [(1, t * 300, 16, 2 if t < 100 else 6) for t in range(120)]
    r = replay(load_traces(write_trace(tmp_path / "t.csv", rows)), DynamicMemory(), PARAMS)
    assert r.pressure_fraction == pytest.approx(1 / 120)


def test_usage_above_provisioned_is_not_counted_as_pressure(tmp_path: Path) -> None:
    rows = [(1, t * 300, 2, 3) for t in range(10)]
    r = replay(load_traces(write_trace(tmp_path / "t.csv", rows)), Static(), PARAMS)
    assert r.pressure_fraction == 0.0


def test_bounds_follow_the_provisioned_size(tmp_path: Path) -> None:
    # a 0.5 GiB VM whose provisioned size changes: assigned must follow (forced), counted apart
    rows = [(1, t * 300, 0.5 if t % 2 else 0.75, 0.1) for t in range(20)]
    r = replay(load_traces(write_trace(tmp_path / "t.csv", rows, gz=True)), DynamicMemory(), PARAMS)
    assert r.resizes_per_vm_day == r.forced_resizes_per_vm_day > 0
    assert (r.own_resizes_per_vm_day, r.migrated_gib_per_vm_day) == (0, 0)  # the trace's doing, not ours


def test_oracle_is_the_floor_of_memory(tmp_path: Path) -> None:
    rows = [(1, t * 300, 16, 2 + (t % 5)) for t in range(300)]
    traces = load_traces(write_trace(tmp_path / "t.csv", rows))
    oracle, ours = replay_oracle(traces), replay(traces, DynamicMemory(), PARAMS)
    assert oracle.pressure_fraction == 0.0
    assert oracle.memory_ratio < ours.memory_ratio < 1.0


def test_unsorted_rows_are_sorted_per_vm(tmp_path: Path) -> None:
    rows = [(2, 600, 4, 1), (1, 300, 4, 1), (2, 0, 4, 2), (1, 0, 4, 2)]
    traces = sorted(load_traces(write_trace(tmp_path / "t.csv", rows)), key=lambda t: t.vm)
    assert [list(t.ts) for t in traces] == [[0, 300], [0, 600]]
    assert list(traces[1].usage) == [2 * 1024**3, 1024**3]


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty file"),
    ("vm,timestamp_s\n1,2\n", "missing column(s) memory_provisioned_kib, memory_usage_kib"),
    (HEADER + "1,x,2,3\n", ":2: timestamp_s, memory_provisioned_kib"),
    (HEADER, "no samples"),
    (HEADER + "1,0,4,2\n1,300,4,-1\n", ":3: memory_usage_kib -1 is negative"),
    (HEADER + "1,0,-4,2\n", ":2: memory_provisioned_kib -4 is negative"),
    (HEADER + "1,0,4,2\n1,300,4\n", ":3: 3 columns, the header has more"),
    (HEADER + "1,0,4,2\n ,300,4,2\n", ":3: the vm column is empty"),
    (HEADER + "1,0,4,2\n1,300,99999999999999999999,2\n",
     ":3: memory_provisioned_kib 99999999999999999999 is too large"),
    (HEADER + "1,0,4,9007199254740992\n", ":2: memory_usage_kib 9007199254740992 is too large"),
])
def test_bad_trace_files_say_what_is_wrong(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_traces(path)


def test_names_are_read_as_the_csv_module_reads_them(tmp_path: Path) -> None:
    # quoted names with commas, a '#' (not a comment), spaces around a name, blank lines, one VM in two runs
    path = tmp_path / "t.csv"
    path.write_text(HEADER + '"db,1",300,1024,10\n\n a#b ,0,2048,20\n"db,1",0,1024,30\na#b,300,2048,40\n')
    traces = {t.vm: t for t in load_traces(path)}
    assert sorted(traces) == ["a#b", "db,1"]
    assert (list(traces["db,1"].ts), list(traces["db,1"].usage)) == ([0, 300], [30 * 1024, 10 * 1024])
    assert (list(traces["a#b"].ts), list(traces["a#b"].provisioned)) == ([0, 300], [2048 * 1024] * 2)



def test_vms_shared_out_over_processes_score_what_one_process_scores(tmp_path: Path) -> None:
    """A round decides at its earliest sample among all VMs. VM 2 samples 250 s into each slot,
    after VM 1, so its shrink a window after its grow waits one sample more than by its own clock;
    shared out over two processes, VMs 2 and 4 (both late) in one, it must still wait."""
    offsets = {1: 0, 2: 250, 3: 100, 4: 250}
    rows = [(vm, t * 300 + offset, 16, 6 if t == 30 else 2) for vm, offset in offsets.items() for t in range(300)]

    def run(vms: set[int], workers: int = 1) -> dict[str, float | int | str]:
        path = write_trace(tmp_path / f"{sorted(vms)}.csv", [r for r in rows if r[0] in vms])
        result = replay(load_traces(path), DynamicMemory(), PARAMS, workers=workers).as_dict()
        return {k: v for k, v in result.items() if k != "seconds"}

    ratio = {vms: float(run(set(vms))["memory_ratio"]) for vms in ((1,), (2,), (1, 2))}
    assert 2 * ratio[1, 2] > ratio[1,] + ratio[2,]  # VM 2 beside VM 1 holds 6 GiB a sample longer
    assert run({1, 2, 3, 4}, workers=2) == run({1, 2, 3, 4})


def test_a_policy_that_balances_the_host_is_replayed_on_one_host_whatever_the_workers(tmp_path: Path) -> None:
    """Proxmox steers the host's use to 80 %, and the replay's VMs share one host: shared out over
    two processes, each half would be a host of its own. VM 1 idles at 1 of 32 GiB, VM 2 uses 7 of 8."""
    rows = [(vm, t * 300, prov, use) for vm, prov, use in ((1, 32, 1), (2, 8, 7)) for t in range(200)]
    traces = load_traces(write_trace(tmp_path / "t.csv", rows))
    one, two = (replay(traces, Proxmox(SLOT_S), PARAMS, workers=w).as_dict() for w in (1, 2))
    figures = ("memory_ratio", "pressure_fraction", "resizes_per_vm_day")
    assert [one[f] for f in figures] == [two[f] for f in figures]
    # on one host of 40 GiB, VM 2 keeps more than the 80 % of its own 8 GiB a host of its own would give it
    assert one["pressure_fraction"] == 0


def test_a_replay_in_this_process_leaves_nothing_frozen(tmp_path: Path) -> None:
    """The replay freezes what it built (the cyclic GC would rescan it every step); a caller's
    process gets its collector back as it was, and the engine's pass its way with young objects."""
    rows = [(1, t * 300, 8, 1 + (t % 3)) for t in range(50)]
    assert gc.get_freeze_count() == 0
    replay(load_traces(write_trace(tmp_path / "t.csv", rows)), DynamicMemory(), PARAMS)
    assert gc.get_freeze_count() == 0
