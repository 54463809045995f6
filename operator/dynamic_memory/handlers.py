"""Kopf handlers: the only module that imports kopf. Run with `dynamic-memory run` or
`kopf run -m dynamic_memory.handlers`.

- create/update/resume of a DynamicMemoryPolicy: validate, set conditions, post an Event on bad input;
- indexes of policies, VirtualMachines, VMIs, Nodes and Pods: the watch caches every pass reads
  (no LIST per pass);
- one timer per policy: when its interval is due and no pass ran within it, a pass over *all*
  policies (a node's budget must weigh every managed VM on it, and weights differ only between
  policies), under one lock: Prometheus, the engine, the patches; then the policy's own status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from dynamic_memory import metrics
from dynamic_memory.actuators.kubevirt import boot_patch, held_patch, recommend_patch, resize_patch
from dynamic_memory.api import GROUP, PLURAL, VERSION, PolicySpec, validation_errors
from dynamic_memory.config import OperatorConfig
from dynamic_memory.errors import UserError
from dynamic_memory.model import Decision, DemandSignal, Mode
from dynamic_memory.quantity import format_bytes, parse_duration
from dynamic_memory.reconcile import (
    PolicyPass,
    metrics_groups,
    node_allocatable,
    plan_all,
    pod_request,
    running_vms,
)
from dynamic_memory.sources.prometheus import PrometheusError, PrometheusSettings, PrometheusSource
from dynamic_memory.status import (
    BALLOON_ATTACHED,
    CAPACITY_LIMITED,
    METRICS_AVAILABLE,
    READY,
    set_condition,
    summary,
)

KUBEVIRT = ("kubevirt.io", "v1")


@dataclass
class PassState:
    """The last pass over all policies. One object, shared: Kopf gives every policy a *shallow copy*
    of the operator's memo, so state assigned to `memo` itself would be per policy."""

    last: float = 0.0
    time: float = 0.0
    passes: dict[str, PolicyPass] = field(default_factory=dict)
    metrics: tuple[bool, str] = (False, "no pass yet")
    statuses: dict[str, tuple[float, int, dict[str, Any]]] = field(default_factory=dict)
    """Policy → (pass time, generation, status) as last built: timers tick each second, passes are
    rarer, so a tick between passes reuses it instead of building it again."""


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Settings, clients and the metrics endpoint, once."""
    from kubernetes import client, config
    from prometheus_client import start_http_server

    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.persistence.finalizer = "dynamicmemory.io/finalizer"
    try:
        cfg = OperatorConfig.from_env()
    except UserError as exc:  # a configuration error: no retry can fix it, so stop at once
        raise kopf.PermanentError(str(exc)) from None
    memo.config = cfg
    memo.prometheus = PrometheusSource(PrometheusSettings(cfg.prometheus_url, cfg.prometheus_token_file,
                                                          cfg.prometheus_ca_file, cfg.prometheus_insecure))
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        memo.kube = client.CustomObjectsApi()
    except config.ConfigException:
        api = config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        memo.kube = client.CustomObjectsApi(api)
    memo.lock = asyncio.Lock()
    memo.state = PassState()
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, registry=metrics.REGISTRY)
    problem = await asyncio.to_thread(memo.prometheus.ping)
    if problem:  # may be transient (Prometheus restarting): warn, and let every pass try again
        logger.warning(f"Prometheus at {cfg.prometheus_url} does not answer ({problem}); until it does, every "
                       "VM's demand is unknown (nothing is shrunk) and policies show MetricsAvailable=False")
    logger.info(f"dynamic-memory operator started; Prometheus at {cfg.prometheus_url}")


# --- watch caches ---------------------------------------------------------------------------

def _cached(body: kopf.Body) -> dict[str, Any]:
    """The object as the watch cache keeps it: without metadata.managedFields, which nothing here
    reads and which is often the largest part (controller-runtime's TransformStripManagedFields)."""
    out = dict(body)
    out["metadata"] = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    return out


@kopf.index(*KUBEVIRT, "virtualmachines")
def vm_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """namespace → (name, VM)."""
    return {namespace or "": (name, _cached(body))}


@kopf.index(*KUBEVIRT, "virtualmachineinstances")
def vmi_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace/name → VMI."""
    return {f"{namespace}/{name}": _cached(body)}


@kopf.index("", "v1", "nodes")
def node_index(name: str, body: kopf.Body, **_: Any) -> dict[str, int] | None:
    """node → allocatable memory."""
    allocatable = node_allocatable(body)
    return None if allocatable is None else {name: allocatable}


@kopf.index("", "v1", "pods")
def pod_index(body: kopf.Body, **_: Any) -> dict[str, Any] | None:
    """node → memory requests of its running pods."""
    found = pod_request(body)
    return None if found is None else {found[0]: found[1]}


# --- policies -------------------------------------------------------------------------------

def _conditions(body: kopf.Body) -> list[dict[str, Any]]:
    return list((body.get("status") or {}).get("conditions") or [])


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
def validate(spec: kopf.Spec, body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, logger: kopf.Logger,
             **_: Any) -> None:
    """Mark a policy that slipped past the CRD's rules as not Ready, with an Event; never crash."""
    generation = int(meta.get("generation") or 0)
    errors = validation_errors(dict(spec))
    now = time.time()
    if errors:
        message = "; ".join(errors)
        patch.status["conditions"] = set_condition(_conditions(body), READY, False, "InvalidSpec", message,
                                                   generation, now)
        kopf.warn(body, reason="InvalidSpec", message=message)
        logger.error(f"invalid policy: {message}")
    else:
        patch.status["conditions"] = set_condition(_conditions(body), READY, None, "Reconciling",
                                                   "waiting for the first pass", generation, now)
    patch.status["observedGeneration"] = generation


def _store(index: kopf.Index[Any, Any], key: Any) -> list[Any]:
    return list(index.get(key, []))


@kopf.index(GROUP, VERSION, PLURAL)
def policy_index(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace/name → spec: every pass plans all policies together."""
    return {f"{namespace}/{name}": dict(spec)}


@kopf.timer(GROUP, VERSION, PLURAL, interval=float(os.environ.get("DM_TICK_SECONDS", "1")), initial_delay=1.0)
async def reconcile(spec: kopf.Spec, body: kopf.Body, meta: kopf.Meta, name: str, namespace: str | None,
                    patch: kopf.Patch, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Run a pass over all policies when this policy's interval is due; write this policy's status."""
    if validation_errors(dict(spec)):
        return
    policy = PolicySpec.model_validate(dict(spec))
    policy = policy.model_copy(update={"mode": memo.config.effective_mode(policy.mode)})
    key = f"{namespace}/{name}"
    generation = int(meta.get("generation") or 0)
    now = time.time()
    conditions = _conditions(body)
    if policy.mode == Mode.OFF.value:
        _write_changed(patch, body, {"conditions": set_condition(conditions, READY, True, "Off",
                                                                 "mode Off: nothing is done", generation, now)})
        return
    interval = parse_duration(policy.interval) - 0.5
    state: PassState = memo.state
    if now - state.last >= interval:
        async with memo.lock:
            if time.time() - state.last >= interval:  # another policy's timer may have run it meanwhile
                state.passes, state.metrics = await _global_pass(memo, logger, kwargs)
                state.last = time.time()
                state.statuses.clear()  # built for the previous pass
    result = state.passes.get(key)
    if result is None:
        return
    built = state.statuses.get(key)
    if built is None or built[:2] != (state.time, generation):
        built = state.time, generation, _status(result, state, conditions, generation, now)
        state.statuses[key] = built
    _write_changed(patch, body, built[2])


def _write_changed(patch: kopf.Patch, body: kopf.Body, status: Mapping[str, Any]) -> None:
    """Patch only the status fields that differ from the object's: no heartbeat writes (API
    conventions), so a steady fleet costs the API server nothing. lastDecisionTime goes along."""
    current = body.get("status") or {}
    changed = {k: v for k, v in status.items() if current.get(k) != v and k != "lastDecisionTime"}
    if changed and "lastDecisionTime" in status:
        changed["lastDecisionTime"] = status["lastDecisionTime"]
    for field_name, value in changed.items():
        patch.status[field_name] = value


def _status(result: PolicyPass, state: PassState, conditions: list[dict[str, Any]], generation: int,
            now: float) -> dict[str, Any]:
    """A policy's status after a pass: conditions and the summary of its VMs."""
    ok, message = state.metrics
    conditions = set_condition(conditions, METRICS_AVAILABLE, ok, "Queried" if ok else "PrometheusUnreachable",
                               message, generation, now)
    limited = [d for d in result.decisions if d.limited == "room"]
    conditions = set_condition(conditions, CAPACITY_LIMITED, bool(limited), "NodeRoom" if limited else "Fits",
                               ", ".join(d.key for d in limited[:10]) or "every VM fits its node", generation, now)
    conditions = set_condition(conditions, BALLOON_ATTACHED, not result.balloon_off,
                               "BalloonOff" if result.balloon_off else "Attached",
                               ("autoattachMemBalloon is false on " + ", ".join(result.balloon_off[:10])
                                + ": no guest statistics, so these VMs are never resized")
                               if result.balloon_off else "guest statistics available", generation, now)
    overlap = "; ".join(f"{vm} is governed by {other}" for vm, other in list(result.claimed_elsewhere.items())[:10])
    conditions = set_condition(conditions, READY, True, "Reconciled",
                               f"{len(result.decisions)} running of {len(result.selected)} selected VMs decided"
                               + (f"; {overlap}" if overlap else ""), generation, now)
    return {"conditions": conditions, "observedGeneration": generation,
            **summary(len(result.selected), result.decisions, state.time)}


async def _global_pass(memo: kopf.Memo, logger: kopf.Logger,
                       indexes: Mapping[str, Any]) -> tuple[dict[str, PolicyPass], tuple[bool, str]]:
    """Prometheus, the engine over every policy's VMs, and the patches."""
    now = memo.state.time = time.time()
    started = time.perf_counter()
    policy_idx: kopf.Index[str, dict[str, Any]] = indexes["policy_index"]
    vm_idx: kopf.Index[str, tuple[str, dict[str, Any]]] = indexes["vm_index"]
    vmi_idx: kopf.Index[str, dict[str, Any]] = indexes["vmi_index"]
    node_idx: kopf.Index[str, int] = indexes["node_index"]
    pod_idx: kopf.Index[str, Any] = indexes["pod_index"]
    policies = {}
    for key in policy_idx:
        for raw in _store(policy_idx, key)[:1]:
            if not validation_errors(raw):
                spec = PolicySpec.model_validate(raw)
                spec = spec.model_copy(update={"mode": memo.config.effective_mode(spec.mode)})
                if spec.mode != Mode.OFF.value:
                    policies[key] = spec
    vms = {ns: dict(_store(vm_idx, ns)) for ns in vm_idx}
    vmis = {k: v for k in vmi_idx for v in _store(vmi_idx, k)[:1]}
    allocatable = {n: v for n in node_idx for v in _store(node_idx, n)[:1]}
    pods = {n: _store(pod_idx, n) for n in pod_idx}
    running = running_vms(policies, vms, vmis)
    signals: Mapping[str, DemandSignal] = {}
    try:
        sent = memo.prometheus.queries_sent
        signals = await asyncio.to_thread(memo.prometheus.signals, metrics_groups(policies, running), now)
        metrics.PROM_QUERIES.inc(memo.prometheus.queries_sent - sent)
        fresh = sum(s.latest is not None for s in signals.values())
        state = (True, f"{fresh} of {len(signals)} running VMs have fresh guest metrics")
    except PrometheusError as exc:
        metrics.ERRORS.labels("PrometheusUnreachable").inc()
        state = (False, f"{exc}; holding every VM (unknown demand never shrinks)")
    passes = plan_all(policies, vms, vmis, signals, allocatable, pods, memo.config.node_reserve, now)
    budget = [memo.config.max_in_flight - _in_flight(vmis)]
    by_key = {f"{ns}/{n}": vm for ns, named in vms.items() for n, vm in named.items()}
    for key, result in passes.items():
        await _act(policies[key], key, result, by_key, memo, logger, now, budget)
        for node, room in result.rooms.items():
            if room is not None:
                metrics.NODE_ROOM.labels(node).set(room)
    metrics.CYCLE.observe(time.perf_counter() - started)
    return passes, state


def _in_flight(vmis: Mapping[str, Mapping[str, Any]]) -> int:
    count = 0
    for vmi in vmis.values():
        for cond in (vmi.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "HotMemoryChange" and cond.get("status") == "True":
                count += 1
    return count


async def _act(policy: PolicySpec, policy_key: str, result: PolicyPass, by_key: Mapping[str, dict[str, Any]],
               memo: kopf.Memo, logger: kopf.Logger, now: float, budget: list[int]) -> None:
    """Send a policy's patches: resizes (Auto), recommendations (Recommend), boot sizes of stopped VMs.
    `budget` holds the resizes still allowed in flight cluster-wide; it is shared by the whole pass."""
    mode = Mode(policy.mode)
    for decision in result.decisions:
        labels = (*decision.key.split("/", 1), policy_key)
        metrics.ASSIGNED.labels(*labels).set(decision.current)
        metrics.TARGET.labels(*labels).set(decision.target)
        if decision.demand is not None:
            metrics.DEMAND.labels(*labels).set(decision.demand)
        vm = by_key[decision.key]
        if mode is Mode.RECOMMEND:
            body = recommend_patch(vm, decision, now)
            if body is not None:
                await _patch(memo, logger, vm, body, decision, "recommended")
            continue
        held = held_patch(vm, decision if decision.limited == "blocked" else None)
        if held is not None:
            await _patch(memo, logger, vm, held, None, "held")
        if decision.limited == "blocked":
            continue
        if not decision.changes:
            continue
        if budget[0] <= 0:
            metrics.DECISIONS.labels(decision.why.code, "deferred").inc()
            logger.info(f"{decision.key}: {decision.action.value} deferred, "
                        f"{memo.config.max_in_flight} resizes already in flight")
            continue
        if await _patch(memo, logger, vm, resize_patch(vm, decision, now), decision, "applied"):
            budget[0] -= 1
    if mode is Mode.AUTO:
        params = policy.params()
        for key in result.stopped:
            vm = by_key[key]
            vm_spec = vm.get("spec") or {}
            body = boot_patch(vm, params)
            if body is not None and not (vm_spec.get("running") or
                                         vm_spec.get("runStrategy") in ("Always", "RerunOnFailure")):
                await _patch(memo, logger, vm, body, None, "boot-sized")


async def _patch(memo: kopf.Memo, logger: kopf.Logger, vm: Mapping[str, Any], body: dict[str, Any],
                 decision: Decision | None, outcome: str) -> bool:
    """One VM patch; a conflict or a vanished VM is logged and decided again next pass."""
    from kubernetes.client.exceptions import ApiException

    meta = vm.get("metadata") or {}

    def send() -> None:
        memo.kube.patch_namespaced_custom_object(
            group=KUBEVIRT[0], version=KUBEVIRT[1], namespace=str(meta.get("namespace")), plural="virtualmachines",
            name=str(meta.get("name")), body=body, _content_type="application/merge-patch+json")

    try:
        await asyncio.to_thread(send)
    except ApiException as exc:
        reason = {404: "VMGone", 409: "Conflict", 403: "Forbidden"}.get(exc.status or 0, "PatchFailed")
        metrics.ERRORS.labels(reason).inc()
        logger.warning(f"{meta.get('namespace')}/{meta.get('name')}: patch refused ({exc.status} {reason}); "
                       "it is decided again next pass")
        return False
    if decision is not None:
        metrics.DECISIONS.labels(decision.why.code, outcome).inc()
        verb = {"applied": "Resized", "recommended": "Recommended"}[outcome]
        change = f"{format_bytes(decision.current)} → {format_bytes(decision.target)}"
        # kopf.event, not kopf.info: posting.level keeps Kopf's own per-tick logs out of Events, not ours
        kopf.event(kopf.Body(cast(kopf.RawBody, dict(vm))), type="Normal", reason=verb,
                   message=f"{decision.action.value} {change}: {decision.reason}"[:1024])
    return True
