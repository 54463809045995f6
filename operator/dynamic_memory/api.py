"""The DynamicMemoryPolicy API (dynamicmemory.io/v1alpha1) as pydantic models.

These models are the single source of truth: `dynamic-memory crd` generates crds/ from them
(schema, defaults, CEL rules), the operator validates what it reads with them, and a test fails
when the two drift. Field names are the API's own (camelCase), so there is nothing to map.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.config import JsonDict

from dynamic_memory.model import KUBEVIRT_BLOCK, KUBEVIRT_MIN_GUEST, Learn, Mode, PolicyParams, ScaleRules
from dynamic_memory.quantity import DURATION_PATTERN, QUANTITY_PATTERN, parse_duration, parse_quantity

GROUP = "dynamicmemory.io"
VERSION = "v1alpha1"
KIND = "DynamicMemoryPolicy"
PLURAL = "dynamicmemorypolicies"
SHORT_NAME = "dmp"


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _aligned(field: str) -> JsonDict:
    q = f"quantity(self.{field})"
    return _cel(f"!isQuantity(self.{field}) || ({q}.isInteger() && {q}.asInteger() % {KUBEVIRT_BLOCK} == 0)",
                f"{field} must be a multiple of 2Mi (KubeVirt's memory hotplug block)", f".{field}")


def _not_above(low: str, high: str, *, at: str) -> JsonDict:
    """CEL for low ≤ high, reported at the field `at` (the one to change)."""
    words = f"{low} must not be larger than {high}" if at == low else f"{high} must not be smaller than {low}"
    return _cel(f"!isQuantity(self.{low}) || !isQuantity(self.{high}) || "
                f"quantity(self.{low}).compareTo(quantity(self.{high})) <= 0", words, f".{at}")


_IS_QUANTITY = _cel("isQuantity(self)", "must be a quantity such as 512Mi or 4Gi")
Quantity = Annotated[str, Field(max_length=64, json_schema_extra={"pattern": QUANTITY_PATTERN,
                                                                  "x-kubernetes-validations": [_IS_QUANTITY]})]
Duration = Annotated[str, Field(max_length=32, json_schema_extra={"pattern": DURATION_PATTERN})]
_DEFAULTED: JsonDict = {"default": {}}
"""Schema default for nested objects, so the API server fills in their fields' defaults too."""


class _Strict(BaseModel):
    """Unknown fields are errors: a typo must not silently become a default. Types are strict, as
    the API server's schema is: `bufferPercent: "20"` is a string, not an integer."""

    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True)


class SpecProblems(ValueError):
    """Problems that involve several fields, each reported at the field to change."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


def _quantity(value: str | None) -> str | None:
    if value is not None:
        parse_quantity(value)
    return value


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


DEFAULT_MINIMUM_BUFFER = "1Gi"
DEFAULT_DOWN_WINDOW = "8h"
"""minimumBuffer and scaleDown.stabilizationWindow when a policy leaves them unset and its VMs do
not learn them (learnPerVM: false, or until a VM has learnt 3 days). They are not schema defaults:
the API server would write them into every policy, and the operator could no longer tell a value
an administrator chose (kept for every VM) from one left to learning."""


class LabelSelectorRequirement(_Strict):
    """One matchExpressions entry, as in every Kubernetes label selector."""

    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs at least one value")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _cel("!(self.operator in ['In', 'NotIn']) || size(self.values) > 0",
             "operators In and NotIn need at least one value"),
        _cel("!(self.operator in ['Exists', 'DoesNotExist']) || size(self.values) == 0",
             "operators Exists and DoesNotExist take no values"),
    ]})


class LabelSelector(_Strict):
    """Which VirtualMachines, in the policy's namespace, the policy governs."""

    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[LabelSelectorRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        """True when a VM with these labels is selected (the API server's own semantics)."""
        if any(labels.get(k) != v for k, v in self.matchLabels.items()):
            return False
        for req in self.matchExpressions:
            present = req.key in labels
            value = labels.get(req.key)
            ok = {"In": present and value in req.values,
                  "NotIn": not present or value not in req.values,
                  "Exists": present,
                  "DoesNotExist": not present}[req.operator]
            if not ok:
                return False
        return True


class _ScaleBase(_Strict):
    minStepPercent: int = Field(10, ge=0, le=100,
                                description="Smallest change worth a migration, in percent of the VM's size.")

    _check_step = field_validator("minStep", check_fields=False)(_quantity)
    _check_window = field_validator("stabilizationWindow", check_fields=False)(_duration)


class ScaleUp(_ScaleBase):
    """How readily a VM grows. Every resize is a live migration in KubeVirt."""

    stabilizationWindow: Duration = Field("0s", description=(
        "Demand must stay high this long before a VM grows (0s: grow at once)."))
    minStep: Quantity = Field("768Mi", description=(
        "Smallest growth worth a migration when the guest is within its buffer; "
        "a guest short of memory grows at once."))
    maxPerHour: int = Field(4, ge=1, le=60, description="Most grows per VM in any hour.")


class ScaleDown(_ScaleBase):
    """How cautiously a VM shrinks."""

    stabilizationWindow: Duration | None = Field(None, description=(
        "The peak demand of this window is kept, and a VM shrinks no sooner than this after it last grew. "
        f"Unset: learnt per VM with learnPerVM, else {DEFAULT_DOWN_WINDOW}; set: kept for every VM."))
    minStep: Quantity = Field("1Gi", description="Smallest shrink worth a migration.")
    minHistory: Duration = Field("2h", description=(
        "A VM whose metrics span less than this (new, or metrics just started) is never shrunk; "
        "after it, the peak of what has been seen counts until the window fills."))

    _check_history = field_validator("minHistory")(_duration)
    maxPerHour: int = Field(1, ge=1, le=60, description="Most shrinks per VM in any hour.")


MATCHER = r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=|!=|=~|!~)\s*"([^"\\]|\\.)*"\s*'
MATCHERS_PATTERN = rf"^({MATCHER}(,{MATCHER})*)?$"
"""Extra label matchers a policy may add: `label="value"` pairs, comma-separated, nothing else
(the text is pasted into every PromQL selector, so nothing else may get through)."""

MIN_STALE_AFTER = "10s"
"""staleAfter's floor. A sample arrives once per scrape interval; a staleAfter below it makes every
VM's demand unknown between scrapes (so nothing is ever shrunk). 10s is twice the fastest scrape
interval in common use; set it to at least twice your own."""


class MetricsSettings(_Strict):
    """How to find KubeVirt's guest memory metrics where a Prometheus setup differs from the default."""

    nameLabel: str = Field("name", min_length=1, description="Label holding the VMI name.")
    namespaceLabel: str = Field("namespace", min_length=1, description="Label holding the VMI namespace.")
    matchers: str = Field("", max_length=1024, description=(
        'Extra PromQL label matchers added to every query, comma-separated label="value" pairs (=, !=, =~, !~), '
        'e.g. job="kubevirt-prometheus-metrics".'), json_schema_extra={"x-kubernetes-validations": [
            _cel(f"self.matches(r'{MATCHERS_PATTERN}')",
                 'must be comma-separated PromQL label matchers such as job="kubevirt", nothing else')]})
    staleAfter: Annotated[Duration, Field(json_schema_extra={"x-kubernetes-validations": [
        _cel(f"duration(self) >= duration('{MIN_STALE_AFTER}')",
             f"staleAfter must be at least {MIN_STALE_AFTER} (and at least twice the scrape interval)")]})] = Field(
        "2m", description=(f"Older samples count as missing: the VM is then never shrunk. At least {MIN_STALE_AFTER} "
                           "and at least twice Prometheus' scrape interval."))

    @field_validator("matchers")
    @classmethod
    def _check_matchers(cls, value: str) -> str:
        if not re.fullmatch(MATCHERS_PATTERN, value):
            raise ValueError(f'{value!r} is not a list of PromQL label matchers; write comma-separated '
                             'label="value" pairs (=, !=, =~ or !~), e.g. job="kubevirt"')
        return value

    @field_validator("staleAfter")
    @classmethod
    def _check_stale(cls, value: str) -> str:
        if parse_duration(value) < parse_duration(MIN_STALE_AFTER):
            raise ValueError(f"{value} is shorter than {MIN_STALE_AFTER}: samples arrive once per scrape, so "
                             "demand would be unknown between scrapes (use at least twice the scrape interval)")
        return value


class PolicySpec(_Strict):
    """Hyper-V Dynamic Memory's knobs for a set of KubeVirt VMs."""

    selector: LabelSelector = Field(description="VirtualMachines in this namespace that the policy governs.")
    startup: Quantity = Field(description=(
        "Guest memory a VM boots with. KubeVirt cannot unplug below the boot size, so this is also the "
        "live floor while the VM runs."))
    minimum: Quantity = Field("1Gi", description="Smallest guest memory (at least 1Gi, KubeVirt's hotplug floor).")
    maximum: Quantity = Field(description="Largest guest memory; set as the VM's maxGuest.")
    bufferPercent: int = Field(20, ge=5, le=2000, description=(
        "Memory kept free above demand, in percent of demand (Hyper-V's buffer, 5-2000)."))
    minimumBuffer: Quantity | None = Field(None, description=(
        "The buffer is never smaller than this: guests burst in absolute sizes (a process starting). "
        f"Unset: learnt per VM with learnPerVM, else {DEFAULT_MINIMUM_BUFFER}; set: kept for every VM."))
    timeOfDay: bool = Field(False, description=(
        "Also size each VM for its time of day, from its hourly peaks of the last 3 days (UTC clock hours, "
        "read from Prometheus when the operator starts): never shrink below the peak it reached in the "
        "coming 6 hours on 2 of those days, and grow 15 minutes before an hour that peaked above its size "
        "on 2 of them. Best with a minimumBuffer of 512Mi (see the README's replay)."))
    learnPerVM: bool = Field(True, description=(
        "Size each VM with the minimumBuffer and scaleDown.stabilizationWindow that would have cost it least "
        "on its own past 14 days, of six candidates (cost: memory held, plus 800 GiB x samples for each "
        "5-minute sample short of memory, plus 100 for each resize). Only the ones this policy leaves unset "
        "are learnt: a value set here holds for every VM. The operator works out each VM's "
        "past days from Prometheus, keeps them on the VM (annotation dynamicmemory.io/learned-costs) "
        "and writes the setting in use (dynamicmemory.io/learned-setting); until a VM has 3 days, "
        f"minimumBuffer {DEFAULT_MINIMUM_BUFFER} and stabilizationWindow {DEFAULT_DOWN_WINDOW} apply."))
    weight: int = Field(5000, ge=0, le=10000, description=(
        "Share of a short node's memory, relative to the other VMs there (Hyper-V's weight, 0-10000)."))
    interval: Duration = Field("30s", description=(
        "How often to decide (at least 1s; a pass costs 3 instant PromQL queries per group of policies)."))
    mode: Literal["Auto", "Recommend", "Off"] = Field("Auto", description=(
        "Auto changes VMs; Recommend decides and reports only; Off does nothing."))
    scaleUp: ScaleUp = Field(default_factory=ScaleUp, json_schema_extra=_DEFAULTED)
    scaleDown: ScaleDown = Field(default_factory=ScaleDown, json_schema_extra=_DEFAULTED)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings, json_schema_extra=_DEFAULTED)

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _not_above("minimum", "startup", at="minimum"),
        _not_above("startup", "maximum", at="startup"),
        _not_above("minimum", "maximum", at="maximum"),
        _cel("!isQuantity(self.minimum) || quantity(self.minimum).compareTo(quantity('1Gi')) >= 0",
             "minimum must be at least 1Gi (KubeVirt refuses memory hotplug below 1Gi)", ".minimum"),
        _aligned("minimum"), _aligned("startup"), _aligned("maximum"),
        _cel("duration(self.interval) >= duration('1s')", "interval must be at least 1s", ".interval"),
    ]})

    _check_quantities = field_validator("startup", "minimum", "maximum", "minimumBuffer")(_quantity)
    _check_interval = field_validator("interval")(_duration)

    @model_validator(mode="after")
    def _sizes_are_consistent(self) -> PolicySpec:
        """The CEL rules above, in Python, each reported at the field to change."""
        problems = size_problems(self.minimum, self.startup, self.maximum, self.interval)
        if problems:
            raise SpecProblems(problems)
        return self

    def learns(self) -> Learn:
        """The knobs each VM learns: with learnPerVM, those left unset here."""
        if not self.learnPerVM:
            return Learn.NOTHING
        return ((Learn.MINIMUM_BUFFER if self.minimumBuffer is None else Learn.NOTHING)
                | (Learn.DOWN_WINDOW if self.scaleDown.stabilizationWindow is None else Learn.NOTHING))

    def params(self) -> PolicyParams:
        """The engine's view: bytes and seconds."""
        up, down = self.scaleUp, self.scaleDown
        return PolicyParams(
            startup=parse_quantity(self.startup), minimum=parse_quantity(self.minimum),
            maximum=parse_quantity(self.maximum), buffer_percent=self.bufferPercent,
            minimum_buffer=parse_quantity(self.minimumBuffer or DEFAULT_MINIMUM_BUFFER),
            time_of_day=self.timeOfDay, weight=self.weight,
            scale_up=ScaleRules(parse_duration(up.stabilizationWindow), parse_quantity(up.minStep),
                                up.minStepPercent, up.maxPerHour),
            scale_down=ScaleRules(parse_duration(down.stabilizationWindow or DEFAULT_DOWN_WINDOW),
                                  parse_quantity(down.minStep), down.minStepPercent, down.maxPerHour),
            min_history_s=parse_duration(down.minHistory),
            mode=Mode(self.mode),
            settle_s=parse_duration(self.metrics.staleAfter) / 2,
            learn=self.learns())


class Condition(BaseModel):
    """metav1.Condition."""

    type: str = Field(max_length=316, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                                              r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field("", max_length=32768)
    lastTransitionTime: str = Field(json_schema_extra={"format": "date-time"})
    observedGeneration: int = Field(0, ge=0)


class PressuredVM(BaseModel):
    """One of the VMs with the least headroom, for `kubectl describe`."""

    name: str
    node: str = ""
    assigned: str
    demand: str
    target: str
    reason: str = Field("", max_length=1024)


class PolicyStatus(BaseModel):
    """What the operator last saw and did. Per-VM detail lives on each VM and in Events."""

    observedGeneration: int = Field(0, ge=0)
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    vms: int = Field(0, ge=0, description="VirtualMachines selected.")
    running: int = Field(0, ge=0, description="Selected VMs that are running.")
    assigned: str = Field("0", description="Guest memory of the running selected VMs, summed.")
    demand: str = Field("0", description="Their demand, summed (VMs with unknown demand count at their size).")
    target: str = Field("0", description="Their targets, summed.")
    lastDecisionTime: str | None = Field(None, json_schema_extra={"format": "date-time"}, description=(
        "The pass that last changed this status. Nothing is written while nothing changes (no heartbeat "
        "writes); dynamic_memory_cycle_seconds on the operator's /metrics shows every pass."))
    pressured: list[PressuredVM] = Field(default_factory=list, max_length=10, description=(
        "The VMs with the least headroom (at most 10)."))


def size_problems(minimum: str, startup: str, maximum: str, interval: str) -> list[tuple[str, str]]:
    """The rules between fields (the CEL rules of PolicySpec), as (field, message) at the field to
    change. Values that do not parse are skipped: their own field reports them."""
    def quantity(text: str) -> int | None:
        try:
            return parse_quantity(text)
        except ValueError:
            return None

    low, start, high = quantity(minimum), quantity(startup), quantity(maximum)
    problems = []
    if low is not None and low < KUBEVIRT_MIN_GUEST:
        problems.append(("minimum", f"{minimum} is below 1Gi (KubeVirt refuses memory hotplug below 1Gi)"))
    for name, text, value in (("minimum", minimum, low), ("startup", startup, start), ("maximum", maximum, high)):
        if value is not None and value % KUBEVIRT_BLOCK:
            problems.append((name, f"{text} is not a multiple of 2Mi (KubeVirt's hotplug block)"))
    if low is not None and start is not None and low > start:
        problems.append(("minimum", f"{minimum} must not be larger than startup {startup}"))
    if start is not None and high is not None and start > high:
        problems.append(("startup", f"{startup} must not be larger than maximum {maximum}"))
    if low is not None and high is not None and low > high:
        problems.append(("maximum", f"{maximum} must not be smaller than minimum {minimum}"))
    try:
        if parse_duration(interval) < 1:
            problems.append(("interval", f"{interval} is shorter than 1s"))
    except ValueError:
        pass
    return problems


def spec_problems(spec: object) -> list[tuple[str, str]]:
    """Every problem with a policy spec as (field path, message), e.g. ("spec.minimum", "..."),
    in the order of the fields; empty when the spec is valid."""
    from pydantic import ValidationError

    if not isinstance(spec, dict):
        return [("spec", f"must be a mapping of fields, not {type(spec).__name__}")]
    try:
        PolicySpec.model_validate(spec)
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            path = ".".join(["spec", *(str(p) for p in err["loc"])])
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, SpecProblems):
                out += [(f"{path}.{field}", message) for field, message in cause.problems]
            else:
                out.append((path, _words(err["type"], err["msg"], err.get("input"), err.get("ctx") or {})))
        if not any(isinstance((e.get("ctx") or {}).get("error"), SpecProblems) for e in exc.errors()):
            # the rules between fields run after the fields' own; the API server reports both at once
            fields = PolicySpec.model_fields
            values = [spec.get(f, fields[f].default) for f in ("minimum", "startup", "maximum", "interval")]
            if all(isinstance(v, str) for v in values):
                out += [(f"spec.{field}", message) for field, message in size_problems(*values)]
        return out
    return []


def _words(kind: str, msg: str, value: object, ctx: dict[str, Any]) -> str:
    """pydantic's message, in the API server's terms where they differ."""
    msg = msg.removeprefix("Value error, ")
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, not {value!r}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, not {value!r}"
    if kind in ("int_type", "string_type", "dict_type", "list_type", "bool_type"):
        wanted = {"int_type": "an integer", "string_type": "a string", "dict_type": "a mapping",
                  "list_type": "a list", "bool_type": "true or false"}[kind]
        return f"must be {wanted}, not {value!r}"
    if kind == "extra_forbidden":
        return "unknown field (check its spelling; unknown fields are refused, not ignored)"
    return msg


def validation_errors(spec: object) -> list[str]:
    """Every problem with a policy spec as one line each, `spec.field: message`; empty when valid."""
    return [f"{path}: {message}" for path, message in spec_problems(spec)]
