"""Each VM's setting chosen daily from its own past: a prototype of issue 13's learner, replay only.

Six candidate settings (minimum buffer × scale-down window) run beside each other on every VM,
as shadows: each one's own replay, continuous from the start. Each day, a VM takes the candidate
that cost least over its previous `days` days, cost = GiB × samples assigned + λ × short samples
+ μ × own resizes (the policy's own setting until it has `warm` days). The engine is the same;
only its knobs differ per VM and day. It is not in the operator: the shadows are six passes of
`decide` per VM, which the operator would have to run once a day over the day's samples.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from dynamic_memory.model import PolicyParams
from dynamic_memory.policy.engine import DynamicMemory
from dynamic_memory.quantity import GIB, MIB
from dynamic_memory.sim.replay import ReplayResult, replay, replay_days
from dynamic_memory.sim.traces import VMTrace

HOUR_S = 3600.0
CANDIDATES: tuple[tuple[int, float], ...] = (
    (128 * MIB, 2 * HOUR_S), (128 * MIB, 24 * HOUR_S), (GIB, 2 * HOUR_S), (GIB, 8 * HOUR_S),
    (2 * GIB, 4 * HOUR_S), (4 * GIB, 4 * HOUR_S))
"""(minimumBuffer, scaleDown.window): the six that a 30-setting grid used most on the shared month."""
NAME = "per-vm-setting"


@dataclass(frozen=True, slots=True)
class Choice:
    """How a VM's setting is chosen from its candidates' costs."""

    short_gib_samples: float = 800.0
    """λ: one short sample costs as much as this many GiB × samples held."""
    resize_gib_samples: float = 100.0
    """μ: one own resize (a live migration) costs as much as this many GiB × samples."""
    days: int = 14
    """Past days compared."""
    warm: int = 3
    """Days with samples a VM needs before it leaves the policy's own setting."""


def candidate_params(params: PolicyParams) -> list[PolicyParams]:
    """The policy's knobs with each candidate's minimum buffer and scale-down window."""
    return [replace(params, minimum_buffer=buffer, scale_down=replace(params.scale_down, window_s=window))
            for buffer, window in CANDIDATES]


def picks(costs: npt.NDArray[np.float64], default: int, choice: Choice) -> npt.NDArray[np.int64]:
    """Each VM's candidate for each day (VMs × days), from the candidates' costs per VM and day
    (candidates × VMs × days × [GiB × samples, short samples, own resizes]); `default` (an index,
    or -1 for the policy's own setting) while a VM has fewer than `warm` days in the last `days`."""
    cost = costs[..., 0] + choice.short_gib_samples * costs[..., 1] + choice.resize_gib_samples * costs[..., 2]
    seen = (costs[0, :, :, 0] > 0).astype(np.int64)  # a VM with samples on a day holds some memory
    total = np.concatenate([np.zeros((*cost.shape[:2], 1)), np.cumsum(cost, axis=2)], axis=2)
    counted = np.concatenate([np.zeros((seen.shape[0], 1), dtype=np.int64), np.cumsum(seen, axis=1)], axis=1)
    out = np.full(seen.shape, default, dtype=np.int64)
    for day in range(seen.shape[1]):
        first = max(0, day - choice.days)
        ready = counted[:, day] - counted[:, first] >= choice.warm
        out[ready, day] = np.argmin(total[:, ready, day] - total[:, ready, first], axis=0)
    return out


def replay_per_vm_setting(traces: Sequence[VMTrace], params: PolicyParams, choice: Choice = Choice(), *,
                          progress: bool = False) -> ReplayResult:
    """The shadows' replays, then the replay with each VM's setting switched daily by their costs
    (its seconds are all of them)."""
    started = time.perf_counter()
    engine = DynamicMemory()
    settings = candidate_params(params)
    costs = np.zeros((len(settings), len(traces), replay_days(traces), 3))
    for k, setting in enumerate(settings):
        replay(traces, engine, setting, progress=progress, day_costs=costs[k])
    own = next((k for k, s in enumerate(settings) if s == params), -1)
    chosen = picks(costs, own, choice)
    result = replay(traces, engine, params, progress=progress,
                    setting_of=lambda j, day: params if chosen[j, day] < 0 else settings[chosen[j, day]])
    return replace(result, policy=NAME, seconds=round(time.perf_counter() - started, 2))
