"""Read VM memory traces in the shared format (vm, timestamp_s, memory_provisioned_kib,
memory_usage_kib, cpu_cores), gzip'd or plain.

numpy parses the columns in one pass over the text (the shared month in 3.4 s; row by row in
Python, 12.3 s in the same minute). A file numpy cannot read, or one with a value out of range,
is read again row by row, which names the line that is wrong."""

from __future__ import annotations

import csv
import gzip
import io
import warnings
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from dynamic_memory.errors import UserError

REQUIRED = ("vm", "timestamp_s", "memory_provisioned_kib", "memory_usage_kib")
LARGEST = 2**53
"""Values at or above this are refused: KiB times 1024 must fit the 64-bit arrays a trace is kept in."""


@dataclass(frozen=True, slots=True)
class VMTrace:
    """One VM's samples, oldest first; bytes, and Unix seconds. Usage 0 means the sample is missing."""

    vm: str
    ts: array[int]
    provisioned: array[int]
    usage: array[int]

    @property
    def sample_s(self) -> float:
        """Its sampling interval: the median gap between samples (0 with fewer than two)."""
        gaps = sorted(b - a for a, b in zip(self.ts, self.ts[1:], strict=False))
        return float(gaps[len(gaps) // 2]) if gaps else 0.0

    @property
    def days(self) -> float:
        """Days from the first sample to the last."""
        return (self.ts[-1] - self.ts[0]) / 86400 if len(self.ts) > 1 else 0.0


class TraceError(UserError):
    """The file is not a trace in the shared format; the message names the file and line."""


FORMAT = "a CSV file (plain or gzip) with the columns " + ", ".join(REQUIRED)


def _open(path: Path) -> io.TextIOBase:
    try:
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a folder, not a trace file") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read it ({exc.strerror})") from None
    if gz:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _row(path: Path, line: int, row: list[str], idx: tuple[int, int, int, int]) -> tuple[str, int, int, int]:
    """One sample, checked: a trace with negative or impossible values is refused, not guessed at."""
    iv, it, ip, iu = idx
    try:
        vm, t, prov, use = row[iv].strip(), int(row[it]), int(row[ip]), int(row[iu])
    except IndexError:
        raise TraceError(f"{path}:{line}: {len(row)} columns, the header has more") from None
    except ValueError:
        raise TraceError(f"{path}:{line}: timestamp_s, memory_provisioned_kib and memory_usage_kib must be "
                         f"whole numbers: {row!r}") from None
    if not vm:
        raise TraceError(f"{path}:{line}: the vm column is empty")
    if t < 0:
        raise TraceError(f"{path}:{line}: timestamp_s {t} is negative")
    if prov < 0:
        raise TraceError(f"{path}:{line}: memory_provisioned_kib {prov} is negative (0 marks a VM that is not there)")
    if use < 0:
        raise TraceError(f"{path}:{line}: memory_usage_kib {use} is negative (0 marks a missing sample)")
    for name, value in (("timestamp_s", t), ("memory_provisioned_kib", prov), ("memory_usage_kib", use)):
        if value >= LARGEST:
            raise TraceError(f"{path}:{line}: {name} {value} is too large (at most {LARGEST - 1})")
    return vm, t, prov * 1024, use * 1024


def _index(path: Path, reader: Iterator[list[str]]) -> tuple[int, int, int, int]:
    """The positions of the columns we read, from the header (the reader's first row)."""
    header = next(reader, None)
    if header is None:
        raise TraceError(f"{path}: empty file; a trace is {FORMAT}")
    cols = [h.strip() for h in header]
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise TraceError(f"{path}:1: missing column(s) {', '.join(missing)}; a trace is {FORMAT}")
    return cols.index(REQUIRED[0]), cols.index(REQUIRED[1]), cols.index(REQUIRED[2]), cols.index(REQUIRED[3])


def _rows(path: Path) -> Iterator[tuple[str, int, int, int]]:
    line = 0  # the last line read whole (text is decoded in blocks: a bad byte is somewhere after it)
    try:
        with _open(path) as handle:
            reader = csv.reader(handle)
            idx = _index(path, reader)
            line = 1
            for row in reader:
                line = reader.line_num
                if row:
                    yield _row(path, line, row, idx)
    except UnicodeDecodeError:
        after = f" after line {line}" if line else ""
        raise TraceError(f"{path}: not text (bytes that are not UTF-8{after}); a trace is {FORMAT}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise TraceError(f"{path}: the gzip data is damaged or cut short after line {line} ({exc}); "
                         "download or copy it again") from None
    except csv.Error as exc:
        raise TraceError(f"{path}:{line + 1}: not CSV ({exc}); a trace is {FORMAT}") from None


def load_traces(path: str | Path) -> list[VMTrace]:
    """All VMs of a trace file, each sorted by time (the file need not be sorted)."""
    path = Path(path)
    parsed = _parse_columns(path)
    if parsed is None:  # the checked reader names what is wrong, or reads what numpy could not
        return _checked(path)
    names, numbers = parsed
    segments = np.flatnonzero(names[1:] != names[:-1]) + 1  # a file sorted by VM: one segment each
    rows: dict[str, list[npt.NDArray[np.int64]]] = {}
    for part_names, part in zip(np.split(names, segments), np.split(numbers, segments), strict=True):
        rows.setdefault(str(part_names[0]).strip(), []).append(part)
    if "" in rows:
        return _checked(path)
    out = []
    for vm, parts in rows.items():
        cols = np.concatenate(parts) if len(parts) > 1 else parts[0]
        cols = cols[np.argsort(cols[:, 0], kind="stable")]
        out.append(VMTrace(vm, _array(cols[:, 0]), _array(cols[:, 1] * 1024), _array(cols[:, 2] * 1024)))
    return out


_ROW = np.dtype([(REQUIRED[0], object)] + [(c, np.int64) for c in REQUIRED[1:]])
"""A row as numpy reads it: the name, then the three numbers."""


def _parse_columns(path: Path) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.int64]] | None:
    """(vm names, rows of timestamp_s, provisioned KiB, usage KiB) as numpy reads them, or None
    when it cannot, or when a value is out of range (the checked reader then says where)."""
    try:
        with _open(path) as handle:
            idx = _index(path, csv.reader(handle))
        with warnings.catch_warnings(), _open(path) as handle:  # a header with no rows: the checked reader says so
            warnings.simplefilter("ignore")
            # one pass over the text, the columns in the order of `idx`; quotes as the csv module reads them
            rows = np.loadtxt(handle, dtype=_ROW, delimiter=",", skiprows=1, comments=None, quotechar='"',
                              usecols=idx, ndmin=1)
    except (ValueError, OverflowError, OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error):
        return None
    names: npt.NDArray[np.object_] = rows["vm"]
    numbers = np.stack([rows[c] for c in REQUIRED[1:]], axis=1)
    if not len(names) or (numbers < 0).any() or (numbers >= LARGEST).any():
        return None
    return names, numbers


def _array(column: npt.NDArray[np.int64]) -> array[int]:
    """A column as the array type VMTrace keeps (the replay indexes it sample by sample)."""
    out = array("q")
    out.frombytes(np.ascontiguousarray(column, dtype=np.int64).tobytes())
    return out


def _checked(path: Path) -> list[VMTrace]:
    """The trace read row by row, every value checked (a bad one is a TraceError naming its line)."""
    per_vm: dict[str, tuple[array[int], array[int], array[int]]] = {}
    for vm, t, prov, use in _rows(path):
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
        raise TraceError(f"{path}: a header but no samples; a trace is {FORMAT}")
    return out


def span_days(traces: list[VMTrace]) -> float:
    """Days from the trace's first sample (any VM) to its last."""
    return (max(t.ts[-1] for t in traces) - min(t.ts[0] for t in traces)) / 86400


def days_of(traces: list[VMTrace], start: float, end: float | None) -> list[VMTrace]:
    """The samples from `start` to `end` days (None: to the last) after the trace's first sample,
    as a trace of its own: a VM with fewer than two samples in it is left out.

    A replay of a part starts over, as a freshly started operator would: every VM at its
    provisioned size, with no history. This is how a policy's knobs are chosen on one part and
    judged on another the policy never saw."""
    t0 = min(t.ts[0] for t in traces)
    lo, hi = t0 + start * 86400, t0 + end * 86400 if end is not None else float("inf")
    out = []
    for tr in traces:  # oldest first (load_traces sorts): the part is one slice of each column
        i, j = bisect_left(tr.ts, lo), bisect_left(tr.ts, hi)
        if j - i > 1:
            out.append(VMTrace(tr.vm, tr.ts[i:j], tr.provisioned[i:j], tr.usage[i:j]))
    if not out:
        raise TraceError(f"days {start:g}:{'' if end is None else f'{end:g}'} hold no VM with two samples; "
                         f"the trace spans {span_days(traces):.1f} days")
    return out
