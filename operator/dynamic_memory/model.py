"""Plain data the engine works on: bytes, seconds and names, no Kubernetes or Prometheus types.

Sources fill these in (from Prometheus and watches, or from the simulator); the policy reads them
and returns Decisions; actuators turn Decisions into patches. Keeping them frozen makes every
decision a pure function of its inputs, which is what lets the simulator and the operator share it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, Flag, StrEnum, auto
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


class Limit(StrEnum):
    """What held a decision's target back."""

    ROOM = "room"
    """No other node has room for the new size (every resize is a migration to another node)."""
    LANDING = "landing"
    """No other node the VM may run on at all (pinned, or its placement allows one node)."""
    MIGRATIONS = "migrations"
    """KubeVirt's parallel migration limits (or the operator's own) are used up: next pass."""
    RATE = "rate"
    BLOCKED = "blocked"
    BOUNDS = "bounds"


class Blocker(Enum):
    """Why KubeVirt cannot take a memory change for a VM: a code for Events and metrics, words, and
    whether it lasts while the VM runs (those are never patched: a patch would earn a 422 or a
    RestartRequired, and a retry every pass)."""

    RESTART_REQUIRED = ("RestartRequired", "KubeVirt waits for a restart", False)
    HOTPLUG_IN_PROGRESS = ("HotplugInProgress", "memory hotplug in progress (HotMemoryChange)", False)
    HOTPLUG_RETRYING = ("HotplugRetrying", "memory hotplug waiting: its live migration failed and KubeVirt "
                        "retries it", False)
    CHANGE_PENDING = ("ChangePending", "memory change not yet taken up by KubeVirt", False)
    MIGRATING = ("Migrating", "a live migration is pending or running", False)
    NOT_MIGRATABLE = ("NotMigratable", "not live-migratable (LiveMigratable is not True)", False)
    INSTANCETYPE = ("Instancetype", "its memory comes from an instancetype, which owns memory.guest", True)
    MEMORY_REQUESTS = ("MemoryRequests", "it sets resources.requests/limits.memory, which a hotplug does not "
                       "carry over to its next pod", True)
    NO_MAX_GUEST = ("NoMaxGuest", "its VMI has no maxGuest: KubeVirt disabled memory hotplug for it", True)
    UNSUPPORTED = ("HotplugUnsupported", "KubeVirt cannot hotplug memory for this VM's shape", True)

    def __init__(self, code: str, words: str, lasting: bool) -> None:
        self.code = code
        self.words = words
        self.lasting = lasting


class Learn(Flag):
    """Which knobs each VM learns from its own past days (learnPerVM): those its policy leaves unset,
    so that a value an administrator wrote is never overridden."""

    NOTHING = 0
    MINIMUM_BUFFER = auto()
    DOWN_WINDOW = auto()
    BOTH = MINIMUM_BUFFER | DOWN_WINDOW


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
        by_percent = current * self.min_step_percent // 100
        return by_percent if by_percent > self.min_step else self.min_step


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """A DynamicMemoryPolicy spec reduced to numbers (see api.PolicySpec.params())."""

    startup: int
    minimum: int
    maximum: int
    buffer_percent: int = 20
    minimum_buffer: int = GIB
    time_of_day: bool = False
    """Also size for the guest's time of day (policy.engine.DailyPattern)."""
    weight: int = 5000
    scale_up: ScaleRules = field(default_factory=lambda: ScaleRules(0.0, 768 * MIB, 10, 4))
    scale_down: ScaleRules = field(default_factory=lambda: ScaleRules(8 * 3600.0, GIB, 10, 1))
    min_history_s: float = 2 * 3600.0
    """A VM is first shrunk once its metrics span this long (or the whole scale-down window if shorter)."""
    alignment: int = KUBEVIRT_BLOCK
    mode: Mode = Mode.AUTO
    settle_s: float = 60.0
    """After a resize completes, a guest's metrics take up to a scrape interval to show its new size:
    pressure sampled in that time is from before the resize (half of metrics.staleAfter, which is
    at least twice the scrape interval)."""
    learn: Learn = Learn.BOTH
    """What each VM learns (policy/learner.py); the rest of its knobs are the policy's for every VM.
    The engine's `decide` never reads it."""


class Toleration(NamedTuple):
    """A pod toleration (core/v1), as the scheduler matches it against node taints."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


class Taint(NamedTuple):
    """A node taint; only NoSchedule and NoExecute keep pods off."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


class Requirement(NamedTuple):
    """One matchExpressions entry of a required node affinity term (matchFields on metadata.name
    are turned into one on the key `metadata.name`)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a VM's pods may be scheduled: its virt-launcher pod's nodeSelector, required node
    affinity (terms ORed, requirements ANDed) and tolerations. A migration target pod carries
    the same, plus a required anti-affinity against the VM's current node."""

    node_selector: tuple[tuple[str, str], ...] = ()
    terms: tuple[tuple[Requirement, ...], ...] = ()
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeState:
    """A node as the scheduler sees it, for placing migration target pods."""

    name: str
    allocatable: int
    free: int
    """allocatable − the operator's reserve − memory requests of every pod bound to it (launcher
    pods and migration target pods included)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    schedulable: bool = True
    outbound: int = 0
    """Migrations under way out of this node."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """The nodes and KubeVirt's migration limits, for the cluster plan."""

    nodes: Mapping[str, NodeState]
    migrations_left: int = 5
    """Migrations that may start now: parallelMigrationsPerCluster (and the operator's own cap)
    minus those under way."""
    outbound_per_node: int = 2
    """parallelOutboundMigrationsPerNode."""


class VMState(NamedTuple):
    """One running VM as the engine sees it (KubeVirt's VMI status.memory plus our own history).

    A NamedTuple, like Decision: the sources build one per VM per pass, and as a frozen dataclass
    of 18 fields it took 2.6 µs to build, against 0.7 as a NamedTuple (timeit)."""

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
    """virt-launcher overhead: its pod's memory request minus the guest (KubeVirt reports it in
    status.memory.memoryOverhead only behind an alpha gate). A migration's target pod asks for
    the new guest plus this."""
    last_grow: float | None = None
    """When we last grew this VM; shrinking waits a whole scale-down window after it. (Shrinks need
    no cooldown of their own: the window's peak already holds them up, and maxPerHour paces them.)"""
    grows_last_hour: int = 0
    shrinks_last_hour: int = 0
    blocked: Blocker | None = None
    """Why KubeVirt cannot resize it now (migrating, hotplug in progress, not hotpluggable, ...)."""
    blocked_detail: str = ""
    """KubeVirt's own words for the block, when it gave any."""
    own_change: bool = False
    """The change KubeVirt is busy with is ours (the VM's spec guest is what we last asked for)."""
    alignment: int = KUBEVIRT_BLOCK
    """Hotplug block: 2 MiB, or 1 GiB with 1Gi hugepages (virt-api refuses anything else)."""
    unplug_gap: int = 0
    """guestCurrent above guestRequested: memory the guest did not give back after an unplug
    (KubeVirt does not guarantee a full unplug). Reported; it does not block the next change."""
    plug_gap: int = 0
    """guestCurrent below guestRequested once no change is under way: memory virtio-mem has not
    plugged into the guest (seen in real guests squeezed by a partial unplug). Reported."""
    placement: Placement | None = None
    """Where its pods may run (from its virt-launcher pod); None: any node."""
    unlanded: int = 0
    """A change under way whose target pod is not bound to a node yet: the bytes that pod will ask
    for somewhere (the plan keeps room for it, or two changes would count on the same room)."""
    changed_at: float | None = None
    """When its last migration (its last resize) completed: VMI status.migrationState.endTimestamp."""


@dataclass(frozen=True, slots=True)
class VMHistory:
    """One VM's past as Prometheus keeps it (for `recommend`): demand samples, oldest first."""

    node: str
    demand: tuple[tuple[float, int], ...]
    """(Unix seconds, bytes of demand)."""
    size: int
    """Guest memory now (the domain's current memory)."""


class DemandSignal(NamedTuple):
    """What the metrics say of one guest's demand at decision time (all in bytes).

    `None` means unknown: no samples, or the newest is stale. Unknown demand never shrinks a VM.
    A NamedTuple, like Decision: one is built per VM per pass (per sample in a replay), and a
    frozen dataclass took 1.5 µs to build against 0.5.
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
    recurring: int | None = None
    """Time of day: the highest demand of the hours to come, as the guest reached it at this time
    on enough of its past days (None: no such pattern read, or too little history)."""
    soon: int | None = None
    """Time of day: the highest demand of the hour starting shortly, as on enough of its past days."""


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
    values: Mapping[str, object] | tuple[object, ...] = MappingProxyType({})
    """The template's fields (never changed after the Why is built): by name, or by position for
    the reasons built for every VM on every pass (a tuple is cheaper to build and free)."""

    def text(self) -> str:
        """The reason in words."""
        if isinstance(self.values, tuple):
            return _REASON.vformat(self.template, self.values, {})
        return _REASON.vformat(self.template, (), self.values)


from_fields = tuple.__new__
"""`from_fields(Decision, (every field, in order))`: a Decision (or Why) built the way NamedTuple's own
`_make` builds one, without its generated `__new__`, which binds eleven arguments and their
defaults: 0.26 against 0.55 µs here (timeit), for the Decision every VM gets on every pass. Only for
the engine's hot paths; everything else names its fields."""


class Decision(NamedTuple):
    """What the engine wants for one VM, and why, in words an administrator can check.

    A NamedTuple: one is built per VM per pass, and a frozen dataclass's __init__ cost a fifth of
    the engine's time at 10,000 VMs (benchmarks/engine_scale.py)."""

    key: str
    node: str
    current: int
    target: int
    action: Action
    why_code: str
    """The reason (`why`), held as its three fields rather than as a Why: a pass keeps a Decision for
    every VM until the next, and each object kept is one more for the garbage collector to walk
    (right after a pass of up to 700 VMs, and in every full collection; at 100,000 VMs, before the
    engine moved a large pass's objects past the young collection, it grew 16× for 10× the VMs)."""
    why_template: str
    why_values: Mapping[str, object] | tuple[object, ...]
    demand: int | None = None
    wanted: int | None = None
    """Target before the cluster plan (equal to target unless no node could take it)."""
    limited: Limit | None = None
    """What held the target back, if anything."""
    notes: tuple[Why, ...] = ()
    """Later steps' words (the cluster plan's cut)."""
    landing: str | None = None
    """The node the cluster plan expects the resized VM to migrate to (the scheduler picks)."""

    @property
    def why(self) -> Why:
        """The decision's own reason."""
        return Why(self.why_code, self.why_template, self.why_values)

    @property
    def reason(self) -> str:
        """Why, in words: the decision's own reason, then what later steps did to it."""
        return "; ".join([self.why.text(), *(n.text() for n in self.notes)])

    @property
    def changes(self) -> bool:
        """True when applying this decision changes the VM."""
        return self.target != self.current
