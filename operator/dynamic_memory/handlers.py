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
import contextlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from dynamic_memory import metrics
from dynamic_memory.actuators.intents import Intent, Kind, intents
from dynamic_memory.actuators.kubevirt import learned_patch
from dynamic_memory.api import GROUP, PLURAL, VERSION, PolicySpec, validation_errors
from dynamic_memory.config import OperatorConfig
from dynamic_memory.errors import UserError
from dynamic_memory.learning import STEP_S, Lesson, keep_reads, learn, lessons, no_samples, setting_note, window
from dynamic_memory.model import Limit, Mode, NodeState, VMHistory
from dynamic_memory.quantity import format_bytes, parse_duration
from dynamic_memory.reconcile import (
    Plan,
    PolicyPass,
    Snapshot,
    learned_params,
    metrics_group,
    metrics_groups,
    plan_all,
    running_vms,
)
from dynamic_memory.sources.cluster import PodInfo, migration_active, migration_limits, node_state, pod_info
from dynamic_memory.sources.kubevirt import VM_FIELDS, VMI_FIELDS, project
from dynamic_memory.sources.prometheus import (
    Group,
    PrometheusError,
    PrometheusSettings,
    PrometheusSource,
    vm_matchers,
)
from dynamic_memory.status import (
    BALLOON_ATTACHED,
    CAPACITY_LIMITED,
    HOTPLUGGABLE,
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
    metrics: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Policy → its MetricsAvailable reason (Queried when its queries were answered) and words."""
    labelled: set[tuple[str, str, str]] = field(default_factory=set)
    """Per-VM gauge labels set by the last pass: removed when their VM is no longer decided."""
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
    # the first LIST of each resource in pages, as client-go's reflectors do: not every pod of the
    # cluster parsed at once (a 1,000-VM cluster's launcher pods alone are megabytes of JSON)
    settings.watching.chunk_size = 500
    # Kopf's per-object worker keeps its object's last event (the whole body) until it has been idle
    # this long (5 s by default), and a VMI's status can change every few seconds: a worker gone
    # sooner drops its body sooner. Measured, it did not move resident memory at 1,000 VMs on
    # Python's own allocator (210-216 MiB: what stays is the start; the image's jemalloc gives it
    # back, see deploy/Dockerfile and benchmarks/footprint.py).
    # No settings.queueing.worker_limit: until every object of every watched kind is indexed, each
    # worker waits holding its slot, and with 100 slots at 1,000 VMs the operator never started.
    settings.queueing.idle_timeout = 0.5
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
        logger.warning(f"Prometheus at {cfg.prometheus_url}: {problem}; until it answers, every "
                       "VM's demand is unknown (nothing is shrunk) and policies show MetricsAvailable=False")
    logger.info(f"dynamic-memory operator started; Prometheus at {cfg.prometheus_url}")


# --- watch caches ---------------------------------------------------------------------------
# The index handlers are coroutines though they never wait: Kopf runs a plain function in its
# thread pool, one hop per event, and at start it holds every object's event until all of them
# are indexed (with 1,000 VMs that took 79 s on this machine, while VMI updates piled up behind).

def _cached(body: kopf.Body) -> dict[str, Any]:
    """The object as the watch cache keeps it: without metadata.managedFields, which nothing here
    reads and which is often the largest part (controller-runtime's TransformStripManagedFields)."""
    out = dict(body)
    out["metadata"] = {k: v for k, v in body.get("metadata", {}).items() if k != "managedFields"}
    return out


@kopf.index(*KUBEVIRT, "virtualmachines")
async def vm_index(namespace: str | None, name: str, body: kopf.Body,
                   **_: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """namespace → (name, VM), only the fields the operator reads."""
    return {namespace or "": (name, project(body, VM_FIELDS))}


@kopf.index(*KUBEVIRT, "virtualmachineinstances")
async def vmi_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """namespace/name → VMI, only the fields the operator reads."""
    return {f"{namespace}/{name}": project(body, VMI_FIELDS)}


@kopf.index("", "v1", "nodes")
async def node_index(name: str, body: kopf.Body, **_: Any) -> dict[str, NodeState] | None:
    """node → its allocatable memory, labels and taints."""
    node = node_state(body)
    return None if node is None else {name: node}


@kopf.index("", "v1", "pods")
async def pod_index(body: kopf.Body, **_: Any) -> dict[str, PodInfo] | None:
    """node → its bound pods' memory requests (and the VMI a virt-launcher pod belongs to); "" →
    virt-launcher pods not bound yet."""
    found = pod_info(body)
    return None if found is None else {found.node: found}


@kopf.index(*KUBEVIRT, "virtualmachineinstancemigrations")
async def migration_index(body: kopf.Body, **_: Any) -> dict[str, bool]:
    """namespace/VMI name → a migration of it is pending or running."""
    key, active = migration_active(body)
    return {key: active}


@kopf.index(*KUBEVIRT, "kubevirts")
async def kubevirt_index(body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """The KubeVirt CR: its migration limits."""
    return {"kubevirt": _cached(body)}


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


TICK_S = 1.0
"""How often each policy's timer wakes to see whether its own interval is due: a due pass starts
within a second (policies' intervals are whole seconds, at least 1 s)."""


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK_S, initial_delay=1.0)
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
        built = state.time, generation, _status(key, result, state, conditions, generation, now)
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


def _status(key: str, result: PolicyPass, state: PassState, conditions: list[dict[str, Any]], generation: int,
            now: float) -> dict[str, Any]:
    """A policy's status after a pass: conditions and the summary of its VMs."""
    reason, message = state.metrics.get(key, ("NoPassYet", "no pass yet"))
    conditions = set_condition(conditions, METRICS_AVAILABLE, reason == "Queried", reason, message, generation, now)
    limited = [d for d in result.decisions if d.limited in (Limit.ROOM, Limit.LANDING, Limit.MIGRATIONS)]
    kinds = {d.limited for d in limited}
    reason = ("NoRoom" if Limit.ROOM in kinds else "NoLanding" if Limit.LANDING in kinds
              else "MigrationsBusy" if limited else "Fits")
    conditions = set_condition(conditions, CAPACITY_LIMITED, bool(limited), reason,
                               "; ".join(f"{d.key}: {d.notes[-1].text()}" for d in limited[:10] if d.notes)
                               or "every change has a node to migrate to", generation, now)
    shapes = [(d.key, d.why.text()) for d, e in zip(result.decisions, result.entries, strict=True)
              if e.vm.blocked is not None and e.vm.blocked.lasting]
    conditions = set_condition(conditions, HOTPLUGGABLE, not shapes, "NotHotpluggable" if shapes else "Hotpluggable",
                               "; ".join(f"{k}: {w}" for k, w in shapes[:10])
                               or "KubeVirt can hotplug every running VM's memory", generation, now)
    conditions = set_condition(conditions, BALLOON_ATTACHED, not result.balloon_off,
                               "BalloonOff" if result.balloon_off else "Attached",
                               ("autoattachMemBalloon is false on " + ", ".join(result.balloon_off[:10])
                                + ": no guest statistics, so these VMs are never resized")
                               if result.balloon_off else "guest statistics available", generation, now)
    overlap = "; ".join(f"{vm} is governed by {other}" for vm, other in list(result.claimed_elsewhere.items())[:10])
    raised = "; ".join(f"{vm} booted above the startup size (it restarted after a grow) and cannot shrink below "
                       "that until it is stopped" for vm in result.raised_floor[:10])
    kept = "; ".join(f"{vm} kept {format_bytes(gap)} of its last unplug (guestCurrent above guestRequested)"
                     for vm, gap in list(result.unplug_gaps.items())[:10])
    short = "; ".join(f"{vm} has not plugged {format_bytes(gap)} of its size (guestCurrent below guestRequested)"
                      for vm, gap in list(result.plug_gaps.items())[:10])
    learnt = (f"{len(result.learned)} sized with a setting learnt from their past days "
              "(annotation dynamicmemory.io/learned-setting)") if result.learned else ""
    conditions = set_condition(conditions, READY, True, "Reconciled",
                               f"{len(result.decisions)} running of {len(result.selected)} selected VMs decided"
                               + "".join(f"; {x}" for x in (learnt, overlap, raised, kept, short) if x), generation,
                               now)
    return {"conditions": conditions, "observedGeneration": generation,
            **summary(len(result.selected), result.decisions, state.time)}


def _snapshot(memo: kopf.Memo, indexes: Mapping[str, Any]) -> Snapshot:
    """What the watch caches hold now."""
    policy_idx: kopf.Index[str, dict[str, Any]] = indexes["policy_index"]
    vm_idx: kopf.Index[str, tuple[str, dict[str, Any]]] = indexes["vm_index"]
    vmi_idx: kopf.Index[str, dict[str, Any]] = indexes["vmi_index"]
    node_idx: kopf.Index[str, NodeState] = indexes["node_index"]
    pod_idx: kopf.Index[str, PodInfo] = indexes["pod_index"]
    migration_idx: kopf.Index[str, bool] = indexes["migration_index"]
    kubevirt_idx: kopf.Index[str, dict[str, Any]] = indexes["kubevirt_index"]
    policies = {}
    for key in policy_idx:
        for raw in _store(policy_idx, key)[:1]:
            if not validation_errors(raw):
                spec = PolicySpec.model_validate(raw)
                spec = spec.model_copy(update={"mode": memo.config.effective_mode(spec.mode)})
                if spec.mode != Mode.OFF.value:
                    policies[key] = spec
    return Snapshot(
        policies=policies,
        vms={ns: dict(_store(vm_idx, ns)) for ns in vm_idx},
        vmis={k: v for k in vmi_idx for v in _store(vmi_idx, k)[:1]},
        nodes=[v for n in node_idx for v in _store(node_idx, n)[:1]],
        pods=[p for n in pod_idx for p in _store(pod_idx, n)],
        migrations={k: any(_store(migration_idx, k)) for k in migration_idx},
        limits=migration_limits(_store(kubevirt_idx, "kubevirt")),
        own_cap=memo.config.max_in_flight,
        reserve=memo.config.node_reserve,
    )


async def _global_pass(memo: kopf.Memo, logger: kopf.Logger,
                       indexes: Mapping[str, Any]) -> tuple[dict[str, PolicyPass], dict[str, tuple[str, str]]]:
    """One pass, as VPA's RunOnce: snapshot → signals → plan → intents → send → report."""
    now = memo.state.time = time.time()
    started = time.perf_counter()
    snapshot = _snapshot(memo, indexes)
    running = running_vms(snapshot.policies, snapshot.vms, snapshot.vmis)
    learned = learned_params(snapshot, running, now)
    groups, of_policy = metrics_groups(snapshot.policies, running, learned)
    sent = memo.prometheus.queries_sent
    signals, failed = await asyncio.to_thread(memo.prometheus.signals, groups, now)
    metrics.PROM_QUERIES.inc(memo.prometheus.queries_sent - sent)
    plan = plan_all(snapshot, signals, now, learned)
    for intent in intents(plan, snapshot, now):
        await _send(memo, logger, intent)
    _report(memo.state, plan, time.perf_counter() - started)
    await _learn(memo, logger, plan, snapshot, now)
    return plan.passes, {key: _metrics_state(of_policy.get(key, []), running.get(key, []), signals, failed)
                         for key in snapshot.policies}


async def _learn(memo: kopf.Memo, logger: kopf.Logger, plan: Plan, snapshot: Snapshot, now: float) -> None:
    """Work out a few VM-days for the policies that learn (learning.py) and keep them on the VMs.
    Prometheus not answering only delays it: the same days are asked again next pass."""
    chosen, view_of = [], {}
    for key, result in plan.passes.items():
        spec = snapshot.policies[key]
        params = spec.params()
        if params.learn:
            view = metrics_group(params, spec)[1]
            for entry in result.entries:
                ns, name = entry.vm.key.split("/", 1)
                chosen.append((params, entry.vm, snapshot.vms[ns][name]))
                view_of[entry.vm.key] = view
    keep_reads(view_of)
    todo = lessons(chosen, now)
    for view in {view_of[lesson.key] for lesson in todo}:
        batch = [lesson for lesson in todo if view_of[lesson.key] == view]
        start, end = window(batch)
        matchers = vm_matchers([lesson.key for lesson in batch], view)
        try:
            found = await asyncio.to_thread(memo.prometheus.history, matchers, view, start, min(end, now), STEP_S,
                                            sized=False)
        except PrometheusError as exc:
            metrics.ERRORS.labels("LearningQueryFailed").inc()
            logger.warning(f"learning: Prometheus did not answer ({exc}); {len(batch)} VMs are learnt next pass")
            continue

        def work(batch: list[Lesson] = batch, found: Mapping[str, VMHistory] = found,
                 stale_s: float = view.stale_s) -> tuple[list[Intent], list[Lesson]]:
            out, empty = [], []
            for lesson in batch:
                kept = learn(lesson, found[lesson.key].demand if lesson.key in found else (), stale_s)
                if kept is None:
                    empty.append(lesson)
                    continue
                out.append(Intent(Kind.LEARNED, lesson.vm, learned_patch(kept, setting_note(lesson.params, kept,
                                                                                             lesson.today))))
            return out, empty

        intents, empty = await asyncio.to_thread(work)
        for lesson in empty:
            no_samples(lesson)
        for intent in intents:
            await _send(memo, logger, intent)


def _metrics_state(groups: Sequence[Group], running: Sequence[str], signals: Mapping[str, Any],
                   failed: Mapping[Group, PrometheusError]) -> tuple[str, str]:
    """A policy's MetricsAvailable: Queried when its groups' queries were answered, and words."""
    failing = [group for group in groups if group in failed]
    if not groups or failing:
        error = failed[failing[0]] if failing else None
        reason = "PrometheusUnreachable" if error is None or error.unreachable else "QueryFailed"
        metrics.ERRORS.labels(reason).inc()
        return reason, f"{error}; holding every VM of this policy (unknown demand never shrinks)"
    fresh = sum(1 for k in running if (s := signals.get(k)) is not None and s.latest is not None)
    return "Queried", f"{fresh} of {len(running)} running VMs have fresh guest metrics"


def _report(state: PassState, plan: Plan, seconds: float) -> None:
    """Gauges of the pass: per VM (removed when a VM is no longer decided) and per node."""
    labelled: set[tuple[str, str, str]] = set()
    for key, result in plan.passes.items():
        for decision in result.decisions:
            namespace, name = decision.key.split("/", 1)
            labels = (namespace, name, key)
            labelled.add(labels)
            metrics.ASSIGNED.labels(*labels).set(decision.current)
            metrics.TARGET.labels(*labels).set(decision.target)
            if decision.demand is not None:
                metrics.DEMAND.labels(*labels).set(decision.demand)
    for gone in state.labelled - labelled:
        for gauge in (metrics.ASSIGNED, metrics.TARGET, metrics.DEMAND):
            with contextlib.suppress(KeyError):
                gauge.remove(*gone)
    state.labelled = labelled
    for node in plan.cluster.nodes.values():
        metrics.NODE_ROOM.labels(node.name).set(node.free)
    metrics.CYCLE.observe(seconds)


async def _send(memo: kopf.Memo, logger: kopf.Logger, intent: Intent) -> bool:
    """One VM patch; a conflict or a vanished VM is logged and decided again next pass."""
    from kubernetes.client.exceptions import ApiException

    namespace, name = intent.key.split("/", 1)

    def send() -> None:
        memo.kube.patch_namespaced_custom_object(
            group=KUBEVIRT[0], version=KUBEVIRT[1], namespace=namespace, plural="virtualmachines",
            name=name, body=intent.body, _content_type="application/merge-patch+json")

    try:
        await asyncio.to_thread(send)
    except ApiException as exc:
        reason = {404: "VMGone", 409: "Conflict", 403: "Forbidden"}.get(exc.status or 0, "PatchFailed")
        metrics.ERRORS.labels(reason).inc()
        logger.warning(f"{intent.key}: patch refused ({exc.status} {reason}); it is decided again next pass")
        return False
    decision = intent.decision
    if decision is not None:
        metrics.DECISIONS.labels(decision.why_code, intent.kind.value).inc()
        change = f"{format_bytes(decision.current)} → {format_bytes(decision.target)}"
        where = f" (expected to land on {decision.landing})" if intent.kind is Kind.RESIZE and decision.landing else ""
        # kopf.event, not kopf.info: posting.level keeps Kopf's own per-tick logs out of Events, not ours
        kopf.event(kopf.Body(cast(kopf.RawBody, dict(intent.vm))), type="Normal", reason=intent.kind.value,
                   message=f"{decision.action.value} {change}{where}: {decision.reason}"[:1024])
    return True
