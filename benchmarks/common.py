"""What every benchmark shares: where results go, timing, percentiles."""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TRACES = ROOT.parent / "shared" / "traces"


def write_json(name: str, data: dict[str, Any]) -> Path:
    """benchmarks/results/<name>.json, pretty and stable."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def read_json(name: str) -> dict[str, Any] | None:
    """A result written before (by this run or an earlier one), or None."""
    path = RESULTS / f"{name}.json"
    return dict(json.loads(path.read_text())) if path.exists() else None


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall seconds of `repeat` calls."""
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def median(values: Sequence[float]) -> float:
    """The median (the benchmarks report medians: one slow run on a shared machine is noise)."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank: an observed value, never an interpolation."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def say(line: str) -> None:
    """Print a figure as it is measured (benchmarks run for minutes)."""
    print(line, flush=True)
