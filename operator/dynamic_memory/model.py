"""Plain data the engine works on: bytes, seconds and names, no Kubernetes or Prometheus types.

Sources fill these in (from Prometheus and watches, or from the simulator); the policy reads them
and returns Decisions; actuators turn Decisions into patches. Keeping them frozen makes every
decision a pure function of its inputs, which is what lets the simulator and the operator share it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import NamedTuple

from dynamic_memory.quantity import GIB, MIB, format_bytes

KUBEVIRT_BLOCK = 2 * MIB
"""virtio-mem block size: KubeVirt refuses a guest size that is not a multiple of it."""

KUBEVIRT_MIN_GUEST = GIB
"""KubeVirt refuses memory hotplug for guests smaller than 1 GiB."""


class Mode(StrEnum):
    """What the operator does with its decisions."""

    AUTO = "Auto"
    RECOMMEND = "Recommend"
    OFF = "Off"


class Action(StrEnum):
    """What a decision does to a VM's memory."""

    GROW = "Grow"
    SHRINK = "Shrink"
    HOLD = "Hold"


@dataclass(frozen=True, slots=True)
class ScaleRules:
    """One direction's damping: every resize is a live migration in KubeVirt, so few and large wins."""

    window_s: float
    """Up: demand must stay high this long. Down: the peak of this window is kept, and a VM is
    not shrunk until this long after it last grew."""
    min_step: int
    """Smallest change worth a migration, in bytes."""
    min_step_percent: int
    """Smallest change worth a migration, in percent of the current size; the larger of the two wins."""
    max_per_hour: int
    """Most resizes in this direction per VM in any hour."""

    def step(self, current: int) -> int:
        """Smallest change in bytes that this direction acts on for a VM of `current` bytes."""
        return max(self.min_step, current * self.min_step_percent // 100)


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """A DynamicMemoryPolicy spec reduced to numbers (see api.PolicySpec.params())."""

    startup: int
    minimum: int
    maximum: int
    buffer_percent: int = 20
    minimum_buffer: int = GIB
    weight: int = 5000
    scale_up: ScaleRules = field(default_factory=lambda: ScaleRules(0.0, 768 * MIB, 10, 4))
    scale_down: ScaleRules = field(default_factory=lambda: ScaleRules(8 * 3600.0, GIB, 10, 1))
    min_history_s: float = 2 * 3600.0
    """A VM is first shrunk once its metrics span this long (or the whole scale-down window if shorter)."""
    alignment: int = KUBEVIRT_BLOCK
    mode: Mode = Mode.AUTO


@dataclass(frozen=True, slots=True)
class VMState:
    """One running VM as the engine sees it (KubeVirt's VMI status.memory plus our own history)."""

    key: str
    """namespace/name"""
    node: str
    assigned: int
    """Guest memory now (VMI status.memory.guestCurrent, or the requested size while it settles)."""
    guest_at_boot: int
    """Live floor: KubeVirt cannot unplug below the size the VM booted with."""
    max_guest: int
    """Live ceiling: spec.domain.memory.maxGuest, fixed while the VM runs."""
    overhead: int = 0
    """virt-launcher overhead on top of the guest in the pod's request (status.memory.memoryOverhead)."""
    last_grow: float | None = None
    """When we last grew this VM; shrinking waits a whole scale-down window after it. (Shrinks need
    no cooldown of their own: the window's peak already holds them up, and maxPerHour paces them.)"""
    grows_last_hour: int = 0
    shrinks_last_hour: int = 0
    blocked: str | None = None
    """Why KubeVirt cannot resize it now (migrating, hotplug in progress, not migratable, ...)."""


@dataclass(frozen=True, slots=True)
class VMHistory:
    """One VM's past as Prometheus keeps it (for `recommend`): demand samples, oldest first."""

    node: str
    demand: tuple[tuple[float, int], ...]
    """(Unix seconds, bytes of demand)."""
    size: int
    """Guest memory now (the domain's current memory)."""


@dataclass(frozen=True, slots=True)
class DemandSignal:
    """What the metrics say of one guest's demand at decision time (all in bytes).

    `None` means unknown: no samples, or the newest is stale. Unknown demand never shrinks a VM.
    """

    latest: int | None
    """Demand over the scale-up window, taken at its lowest, so growth follows sustained demand
    (with a zero window: the newest sample)."""
    peak: int | None
    """Highest demand over the scale-down window."""
    enough_history: bool = True
    """The samples span scaleDown.minHistory (or the whole window); until then the VM is never shrunk."""
    pressure: bool = False
    """The guest is short now: major page faults or swap-in. Demand is then at least what it has."""


class _ReasonFormatter(string.Formatter):
    """str.format, plus `{x:B}`: an int of bytes as a memory size ('3.75Gi')."""

    def format_field(self, value: object, format_spec: str) -> str:
        if format_spec == "B" and isinstance(value, int):
            return format_bytes(value)
        return str(super().format_field(value, format_spec))


_REASON = _ReasonFormatter()


class Why(NamedTuple):
    """A reason: a CamelCase code for Events and metric labels, and words formatted on demand
    (a replay makes millions of decisions and reads none of their words). A NamedTuple, like
    Decision: immutable, and three times cheaper to build than a frozen dataclass."""

    code: str
    template: str
    values: Mapping[str, object] = MappingProxyType({})
    """The template's fields (never changed after the Why is built)."""

    def text(self) -> str:
        """The reason in words."""
        return _REASON.vformat(self.template, (), self.values)


class Decision(NamedTuple):
    """What the engine wants for one VM, and why, in words an administrator can check.

    A NamedTuple: one is built per VM per pass, and a frozen dataclass's __init__ cost a fifth of
    the engine's time at 10,000 VMs (benchmarks/engine_scale.py)."""

    key: str
    node: str
    current: int
    target: int
    action: Action
    why: Why
    demand: int | None = None
    wanted: int | None = None
    """Target before the node budget (equal to target unless the node is short)."""
    limited: str | None = None
    """What held the target back: 'room', 'rate', 'blocked', 'bounds' or None."""
    notes: tuple[Why, ...] = ()
    """Later steps' words (the node budget's cut)."""

    @property
    def reason(self) -> str:
        """Why, in words: the decision's own reason, then what later steps did to it."""
        return "; ".join([self.why.text(), *(n.text() for n in self.notes)])

    @property
    def changes(self) -> bool:
        """True when applying this decision changes the VM."""
        return self.target != self.current
