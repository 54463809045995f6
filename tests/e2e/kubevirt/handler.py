"""Our virt-handler: the one simulated part of the e2e tier's KubeVirt. What KubeVirt's virt-handler
does on a node, for the VMIs that KubeVirt's own controllers scheduled onto kwok's nodes:

- a VMI whose launcher pod runs goes Running, with the conditions and fields virt-controller
  expects (Ready, LiveMigratable, the machine type, ...);
- a migration that virt-controller ordered is carried out between the source and the target pod,
  as virt-handler reports it (target ready, started, completed or failed), after `migration_s`;
  on success the VMI moves to the target node with its new memory, and the source pod ends;
- an unplug releases only part of the memory when a test says so (`guestCurrent` stays above
  `guestRequested`, as virtio-mem may leave it);
- guest memory metrics, with virt-handler's names and labels, from the demand each test sets;
- a VMI labelled `e2e.dynamicmemory.io/real-guest: "true"` runs as a real Linux guest under QEMU
  (tests/e2e/guest/): boot memory guestAtBoot, virtio-mem up to maxGuest; a migration that changes
  its size ends with virtio-mem asked for the new size, `guestCurrent` follows what QEMU really
  holds (so a partial unplug is the guest's own doing), and its metrics are the balloon driver's.

Reads with the admin identity, writes as KubeVirt's `kubevirt-handler` ServiceAccount (its role
may patch VMIs; virt-api's webhooks accept status changes only from KubeVirt's accounts). Facts:
../shared/reference/real-kubevirt.md.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from kubernetes import client, config

from tests.e2e.guest.qemu import QemuGuest, artifacts
from tests.e2e.guest_metrics import GuestMetrics
from tests.e2e.units import GIB, MIB, parse_quantity, to_quantity

log = logging.getLogger("virt-handler")
KUBEVIRT = ("kubevirt.io", "v1")
REAL_GUEST_LABEL = "e2e.dynamicmemory.io/real-guest"
MAX_REAL_GUESTS = 3
"""Real guests at once: each is a QEMU process emulating its CPU (about 1 GiB of this machine's memory)."""
MEMORY_LABELS = ("kubevirt.io/vmi-pod-memory-resource-requests", "kubevirt.io/memory-hotplug-overhead-ratio")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


@dataclass
class _Migration:
    started: float = 0.0


@dataclass
class HandlerSettings:
    """Knobs a test turns."""

    migration_s: float = 1.0
    """How long a migration takes once the target pod runs."""
    fail_migrations: set[str] = field(default_factory=set)
    """namespace/name of VMIs whose migrations fail (until removed)."""
    unplug_release: float = 1.0
    """Share of an unplug the guest gives back: below 1, guestCurrent stays above guestRequested."""
    paused: bool = False
    held_migrations: set[str] = field(default_factory=set)
    """namespace/name of VMIs whose migrations this handler does not carry on (they stay pending)."""
    not_migratable: set[str] = field(default_factory=set)
    """namespace/name of VMIs reported Running without a LiveMigratable condition."""


class VirtHandler:
    """Polls VMIs and launcher pods every `period_s` and writes what virt-handler would."""

    def __init__(self, admin: client.ApiClient, handler_kubeconfig: Path, metrics: GuestMetrics,
                 period_s: float = 0.3) -> None:
        self.read = client.CustomObjectsApi(admin)
        self.core = client.CoreV1Api(admin)
        writer = config.new_client_from_config(config_file=str(handler_kubeconfig))  # type: ignore[no-untyped-call]
        self.write = client.CustomObjectsApi(cast(client.ApiClient, writer))
        self.metrics = metrics
        self.settings = HandlerSettings()
        self.demand: dict[str, int] = {}
        """What each guest wants (default 1Gi); wanting as much as it has or more, it pages."""
        self.migrations: dict[str, _Migration] = {}
        self.errors: list[str] = []
        self.exported: set[str] = set()
        """namespace/name of the guests whose metrics this handler serves."""
        self.guests: dict[str, QemuGuest] = {}
        """namespace/name of the VMIs that run as real guests."""
        self.requested_at: dict[str, float] = {}
        """When virtio-mem was last asked for a new size, per real guest (epoch seconds): the migration's end."""
        self._images: Path | None = None
        self.period_s = period_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="virt-handler", daemon=True)
        self._thread.start()

    # --- what tests call ---------------------------------------------------------------------

    def set_demand(self, namespace: str, name: str, demand: int) -> None:
        """The guest's demand from now on (its metrics follow at the next sync)."""
        with self._lock:
            self.demand[f"{namespace}/{name}"] = demand

    def real_guest(self, namespace: str, name: str, timeout_s: float = 120) -> QemuGuest:
        """The real guest of a VMI, once its QEMU has started and its /init answers."""
        deadline = time.monotonic() + timeout_s
        while (guest := self.guests.get(f"{namespace}/{name}")) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:.0f}s for the real guest of {namespace}/{name}: {self.errors}")
            time.sleep(0.2)
        guest.wait_booted(max(deadline - time.monotonic(), 1.0))
        return guest

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for guest in list(self.guests.values()):
            guest.stop()
        self.guests.clear()

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.settings.paused:
                try:
                    self.sync(time.monotonic())
                except Exception as exc:  # a test reads these; the loop goes on
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    log.exception("virt-handler sync failed")
            self._stop.wait(self.period_s)

    def sync(self, now: float) -> None:
        """One pass over every VMI."""
        listed: Any = self.read.list_cluster_custom_object(*KUBEVIRT, "virtualmachineinstances")
        vmis: list[dict[str, Any]] = listed["items"]
        pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p
                for p in self._pods(label_selector="kubevirt.io=virt-launcher")}
        seen = set()
        for vmi in vmis:
            meta, status = vmi["metadata"], vmi.get("status") or {}
            key = f"{meta['namespace']}/{meta['name']}"
            phase = status.get("phase")
            try:
                if phase == "Scheduled":
                    self._run(vmi)
                elif phase == "Running":
                    seen.add(key)
                    self._migrate(vmi, pods, now)
                    if key in self.guests:
                        self._follow(vmi, self.guests[key])
                    if not self._export(vmi):
                        seen.discard(key)
            except client.exceptions.ApiException as exc:
                if exc.status not in (409, 422):  # a race with virt-controller: next sync
                    raise
        running = {f"{v['metadata']['namespace']}/{v['metadata']['name']}" for v in vmis
                   if (v.get("status") or {}).get("phase") in ("Scheduled", "Running")}
        for key in set(self.guests) - running:  # the VMI is gone or ended: so is its domain
            self.guests.pop(key).stop()
        for key in self.exported - seen:  # only its own guests: the metrics endpoint is shared with other tests
            self.metrics.remove(*key.split("/", 1))
        self.exported = seen

    def _pods(self, namespace: str | None = None, *, label_selector: str) -> list[dict[str, Any]]:
        """Pods as plain JSON (the client's models are not needed here)."""
        response: Any = (
            self.core.list_namespaced_pod(namespace, label_selector=label_selector, _preload_content=False)
            if namespace else
            self.core.list_pod_for_all_namespaces(label_selector=label_selector, _preload_content=False))
        return cast(list[dict[str, Any]], json.loads(response.data)["items"])

    def _patch(self, vmi: dict[str, Any], ops: list[dict[str, Any]]) -> None:
        meta = vmi["metadata"]
        guarded = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}, *ops]
        self.write.patch_namespaced_custom_object(*KUBEVIRT, meta["namespace"], "virtualmachineinstances",
                                                  meta["name"], guarded, _content_type="application/json-patch+json")

    @staticmethod
    def _conditions(vmi: dict[str, Any], drop: tuple[str, ...], add: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = [c for c in (vmi.get("status") or {}).get("conditions") or [] if c.get("type") not in drop]
        return kept + add

    def _run(self, vmi: dict[str, Any]) -> None:
        """The domain started: Running, as virt-handler reports it."""
        now = _now()
        key = f"{vmi['metadata']['namespace']}/{vmi['metadata']['name']}"
        if (vmi["metadata"].get("labels") or {}).get(REAL_GUEST_LABEL) == "true" and not self._boot(vmi, key):
            return
        kinds = ("Ready",) if key in self.settings.not_migratable else ("Ready", "LiveMigratable")
        ours = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now} for t in kinds]
        self._patch(vmi, [
            {"op": "add", "path": "/status/phase", "value": "Running"},
            {"op": "add", "path": "/status/conditions", "value": self._conditions(vmi, ("Ready", "LiveMigratable"),
                                                                                  ours)},
            {"op": "add", "path": "/status/selinuxContext", "value": "none"},
            {"op": "add", "path": "/status/migrationMethod", "value": "LiveMigration"},
            {"op": "add", "path": "/status/machine", "value": {"type": "q35"}},
            {"op": "add", "path": "/status/interfaces", "value": []},
            {"op": "add", "path": "/status/guestOSInfo", "value": {}},
        ])

    def _migrate(self, vmi: dict[str, Any], pods: dict[str, Any], now: float) -> None:
        """Carry a migration ordered by virt-controller one step further."""
        meta, status = vmi["metadata"], vmi["status"]
        state = status.get("migrationState") or {}
        key = f"{meta['namespace']}/{meta['name']}"
        target_pod = pods.get(f"{meta['namespace']}/{state.get('targetPod')}")
        if not state.get("targetPod") or state.get("completed") or target_pod is None \
                or key in self.settings.held_migrations:
            return
        target = (target_pod.get("spec") or {}).get("nodeName")
        if (target_pod.get("status") or {}).get("phase") != "Running" or not target:
            return
        uid = state.get("migrationUid", "")
        if not state.get("targetNodeAddress"):
            self.migrations[uid] = _Migration()
            self._patch(vmi, [{"op": "add", "path": "/status/migrationState/targetNodeAddress", "value": "127.0.0.1"},
                              {"op": "add", "path": "/status/migrationState/targetNodeDomainDetected", "value": True}])
            return
        if not state.get("startTimestamp"):
            self.migrations.setdefault(uid, _Migration()).started = now
            self._patch(vmi, [{"op": "add", "path": "/status/migrationState/startTimestamp", "value": _now()}])
            return
        started = self.migrations.setdefault(uid, _Migration(now)).started
        if now - started < self.settings.migration_s:
            return
        ended: list[dict[str, Any]] = [{"op": "add", "path": "/status/migrationState/completed", "value": True},
                 {"op": "add", "path": "/status/migrationState/endTimestamp", "value": _now()}]
        if key in self.settings.fail_migrations:  # the target's virt-launcher gives up and exits
            self._patch(vmi, [*ended, {"op": "add", "path": "/status/migrationState/failed", "value": True}])
            self.migrations.pop(uid, None)
            self._end_pod(meta["namespace"], target_pod["metadata"]["name"])
            return
        memory = dict(status.get("memory") or {})
        wanted = (((vmi.get("spec") or {}).get("domain") or {}).get("memory") or {}).get("guest")
        guest = self.guests.get(key)
        if wanted:
            requested, current = parse_quantity(wanted), parse_quantity(memory.get("guestCurrent", wanted))
            if guest is not None:  # virtio-mem plugs or unplugs what the guest lets it, in its own time
                guest.request(requested)
                self.requested_at[key] = time.time()
                current = guest.current()
            elif requested < current:  # an unplug: the guest may give back only part of it
                released = int((current - requested) * self.settings.unplug_release) // (2 * MIB) * (2 * MIB)
                current -= released
            else:
                current = requested
            memory.update(guestRequested=wanted, guestCurrent=to_quantity(current))  # canonical, as a Quantity prints
        labels = meta.get("labels") or {}
        ops: list[dict[str, Any]] = [*ended,
               {"op": "add", "path": "/status/migrationState/targetNodeDomainReadyTimestamp", "value": _now()},
               {"op": "add", "path": "/status/nodeName", "value": target},
               {"op": "add", "path": "/status/memory", "value": memory},
               {"op": "add", "path": "/status/conditions",
                "value": self._conditions(vmi, ("HotMemoryChange",), [])},
               {"op": "add", "path": f"/metadata/labels/{_escape('kubevirt.io/nodeName')}", "value": target}]
        ops += [{"op": "remove", "path": f"/metadata/labels/{_escape(k)}"} for k in MEMORY_LABELS if k in labels]
        self._patch(vmi, ops)
        self.migrations.pop(uid, None)
        self._end_source_pods(meta["namespace"], meta["uid"], keep=target_pod["metadata"]["name"])

    def _end_source_pods(self, namespace: str, vmi_uid: str, keep: str) -> None:
        """virt-launcher exits on the source once the domain left: its pod ends."""
        for pod in self._pods(namespace, label_selector=f"kubevirt.io/created-by={vmi_uid}"):
            if pod["metadata"]["name"] != keep:
                self._end_pod(namespace, pod["metadata"]["name"])

    def _end_pod(self, namespace: str, name: str) -> None:
        """A launcher pod whose virt-launcher exited: gone (kwok runs no process to exit)."""
        try:
            self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except client.exceptions.ApiException as exc:
            if exc.status != 404:
                raise

    def _boot(self, vmi: dict[str, Any], key: str) -> bool:
        """Start the real guest of a VMI (its domain): False while it cannot run here."""
        if key in self.guests:
            return True
        if len(self.guests) >= MAX_REAL_GUESTS:
            message = f"{key}: not started, {MAX_REAL_GUESTS} real guests run already"
            if message not in self.errors:
                self.errors.append(message)
            return False
        memory = (vmi.get("status") or {}).get("memory") or {}
        spec = ((vmi.get("spec") or {}).get("domain") or {}).get("memory") or {}
        boot = parse_quantity(memory.get("guestAtBoot") or spec["guest"])
        if self._images is None:
            self._images = artifacts()
        self.guests[key] = QemuGuest(self._images, boot, parse_quantity(spec.get("maxGuest") or spec["guest"]), key)
        return True

    def _follow(self, vmi: dict[str, Any], guest: QemuGuest) -> None:
        """guestCurrent follows what QEMU holds, as virt-handler reports the domain's current memory."""
        memory = (vmi.get("status") or {}).get("memory") or {}
        current = guest.current()
        if memory.get("guestCurrent") and parse_quantity(memory["guestCurrent"]) != current:
            self._patch(vmi, [{"op": "add", "path": "/status/memory/guestCurrent", "value": to_quantity(current)}])

    def _export(self, vmi: dict[str, Any]) -> bool:
        """The guest's memory metrics, as virt-handler's domain stats export them: False when it has
        none yet (a real guest whose balloon driver has not reported)."""
        meta, status = vmi["metadata"], vmi["status"]
        key = f"{meta['namespace']}/{meta['name']}"
        current = parse_quantity((status.get("memory") or {}).get("guestCurrent") or "0") or GIB
        with self._lock:
            demand = self.demand.get(key, GIB)
        node = status.get("nodeName") or ""
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if not k.startswith("kubevirt.io/")}
        if key in self.guests:
            stats = self.guests[key].stats()
            if stats is None:
                return False
            self.metrics.measured(meta["namespace"], meta["name"], node=node, domain=current, total=stats.total,
                                  available=stats.available, free=stats.free, major_faults=stats.major_faults,
                                  swap_in=stats.swap_in, vmi_labels=labels)
        elif demand >= current:  # it wants more than it has: it pages
            self.metrics.short_of_memory(meta["namespace"], meta["name"], node=node, available=current)
        else:
            self.metrics.set(meta["namespace"], meta["name"], node=node, available=current, demand=demand,
                             vmi_labels=labels)
        return True
