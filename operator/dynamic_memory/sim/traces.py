"""Read VM memory traces in the shared format (vm, timestamp_s, memory_provisioned_kib,
memory_usage_kib, cpu_cores), gzip'd or plain, with the standard library only."""

from __future__ import annotations

import csv
import gzip
import io
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("vm", "timestamp_s", "memory_provisioned_kib", "memory_usage_kib")


@dataclass(frozen=True, slots=True)
class VMTrace:
    """One VM's samples, oldest first; bytes, and Unix seconds. Usage 0 means the sample is missing."""

    vm: str
    ts: array[int]
    provisioned: array[int]
    usage: array[int]

    @property
    def days(self) -> float:
        """Days from the first sample to the last."""
        return (self.ts[-1] - self.ts[0]) / 86400 if len(self.ts) > 1 else 0.0


class TraceError(ValueError):
    """The file is not a trace in the shared format."""


def _open(path: Path) -> io.TextIOBase:
    with path.open("rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _rows(path: Path) -> Iterator[tuple[str, int, int, int]]:
    with _open(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise TraceError(f"{path}: empty file")
        cols = [h.strip() for h in header]
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise TraceError(f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED)}")
        iv, it, ip, iu = (cols.index(c) for c in REQUIRED)
        for line, row in enumerate(reader, start=2):
            try:
                yield row[iv], int(row[it]), int(row[ip]) * 1024, int(row[iu]) * 1024
            except (ValueError, IndexError) as exc:
                raise TraceError(f"{path}:{line}: bad row {row!r} ({exc})") from exc


def load_traces(path: str | Path) -> list[VMTrace]:
    """All VMs of a trace file, each sorted by time (the file need not be sorted)."""
    per_vm: dict[str, tuple[array[int], array[int], array[int]]] = {}
    for vm, t, prov, use in _rows(Path(path)):
        cols = per_vm.get(vm)
        if cols is None:
            cols = per_vm[vm] = (array("q"), array("q"), array("q"))
        cols[0].append(t)
        cols[1].append(prov)
        cols[2].append(use)
    out = []
    for vm, cols in per_vm.items():
        ts = cols[0]
        if any(ts[i] > ts[i + 1] for i in range(len(ts) - 1)):
            order = sorted(range(len(ts)), key=ts.__getitem__)
            cols = (array("q", (ts[i] for i in order)), array("q", (cols[1][i] for i in order)),
                    array("q", (cols[2][i] for i in order)))
        out.append(VMTrace(vm, *cols))
    if not out:
        raise TraceError(f"{path}: no samples")
    return out
