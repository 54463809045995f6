"""virt-controller and virt-handler, as far as memory goes, against a real API server.

KubeVirt's rules (../shared/reference/kubevirt-memory.md): a running VM gets a VMI and a
virt-launcher pod (request = guest + overhead) on a node with room; a change of the VM's
spec.template.spec.domain.memory.guest is checked (2 MiB blocks, ≥ 1 GiB, ≤ maxGuest, not below
guestAtBoot, else RestartRequired on the VM), set on the VMI with HotMemoryChange, and applied by a
live migration that takes time and may fail (then retried); after it the pod and status.memory
show the new size. Guest metrics follow the demand the test sets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from dynamic_memory.quantity import GIB, MIB, parse_quantity, to_quantity
from dynamic_memory.sim.cluster import launcher_overhead
from dynamic_memory.sources.kubevirt import format_time
from tests.e2e.standin.metrics import GuestMetrics

KV = ("kubevirt.io", "v1")
Demand = Callable[[float], int]


@dataclass
class Migration:
    """A hotplug under way: done at `due`, or failed if failures remain."""

    target: int
    due: float
    attempt: int = 1


def _memory(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("spec", {}).get("template", {}).get("spec", {}).get("domain", {}).get("memory") or {})


def _constant(value: int) -> Demand:
    return lambda _t: value


class KubeVirtStandIn:
    """Runs in a thread; `stop()` ends it."""

    def __init__(self, api: client.ApiClient, metrics: GuestMetrics, *, migration_s: float = 2.0,
                 period_s: float = 0.25) -> None:
        self.custom: Any = client.CustomObjectsApi(api)  # plain dicts in and out (see tests/e2e/kube.py)
        self.core: Any = client.CoreV1Api(api)
        self.metrics = metrics
        self.migration_s = migration_s
        self.period_s = period_s
        self.demand: dict[str, Demand] = {}
        self.failures: dict[str, int] = {}
        """namespace/name → how many of its next migrations fail."""
        self.migrations: dict[str, Migration] = {}
        self._migration_names: dict[str, str] = {}
        self.log: list[str] = []
        self._free: dict[str, int] | None = None
        self._accounts: set[str] = set()
        self.paused = threading.Event()
        """Set it to stop playing KubeVirt for a while (steady-state request counts)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubevirt-standin", daemon=True)
        self._thread.start()

    def set_demand(self, key: str, demand: int | Demand) -> None:
        """The guest's demand in bytes (or as a function of time)."""
        self.demand[key] = demand if callable(demand) else _constant(demand)

    def stop(self) -> None:
        """End the loop."""
        self._stop.set()
        self._thread.join(timeout=10)

    # --- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.paused.is_set():
                self._stop.wait(self.period_s)
                continue
            try:
                self._sync()
            except Exception as exc:  # keep playing KubeVirt through API blips; the log tells the test
                self.log.append(f"sync error: {type(exc).__name__}: {exc}")
            self._stop.wait(self.period_s)

    def _sync(self) -> None:
        self._free = None  # node free memory, listed at most once a sync (1,000 boots must not list 1,000 times)
        vms = {self._key(v): v for v in self.custom.list_cluster_custom_object(*KV, "virtualmachines")["items"]}
        vmis = {self._key(v): v for v in self.custom.list_cluster_custom_object(*KV, "virtualmachineinstances")
                ["items"]}
        for key, vm in vms.items():
            running = vm.get("spec", {}).get("running") or vm.get("spec", {}).get("runStrategy") == "Always"
            if running and key not in vmis:
                self._boot(vm)
            elif key in vmis:
                self._memory_change(vm, vmis[key])
        for key, vmi in vmis.items():
            if key not in vms:
                self._shut_down(vmi)
        self._publish(vmis)

    @staticmethod
    def _key(obj: dict[str, Any]) -> str:
        return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"

    # --- virt-controller: boot, hotplug, migration --------------------------------------------

    def _node_free(self) -> dict[str, int]:
        if self._free is not None:
            return dict(self._free)
        free = {}
        for node in self.core.list_node().items:
            free[node.metadata.name] = parse_quantity(node.status.allocatable["memory"])
        for pod in self.core.list_pod_for_all_namespaces().items:
            if pod.spec.node_name in free and pod.status.phase not in ("Succeeded", "Failed"):
                for c in pod.spec.containers:
                    free[pod.spec.node_name] -= parse_quantity((c.resources.requests or {}).get("memory", "0"))
        self._free = free
        return dict(free)

    def _placeable(self, vm: dict[str, Any]) -> dict[str, int]:
        """Free memory of the nodes the VM may run on (its template's nodeSelector on the hostname)."""
        free = self._node_free()
        wanted = (vm["spec"]["template"]["spec"].get("nodeSelector") or {}).get("kubernetes.io/hostname")
        return {n: f for n, f in free.items() if wanted in (None, n)}

    def _launcher(self, ns: str, name: str, node: str, guest: int, attempt: int) -> str:
        pod_name = f"virt-launcher-{name}-{attempt}"
        if ns not in self._accounts:
            try:
                self.core.read_namespaced_service_account("default", ns)
            except ApiException:
                self.core.create_namespaced_service_account(ns, {"metadata": {"name": "default"}})
            self._accounts.add(ns)
        if self._free is not None:  # the listed free memory stays true within this sync
            self._free[node] = self._free.get(node, 0) - guest - launcher_overhead(guest)
        self.core.create_namespaced_pod(ns, {
            "metadata": {"name": pod_name, "labels": {"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": name}},
            "spec": {"nodeName": node, "containers": [{"name": "compute", "image": "virt-launcher", "resources": {
                "requests": {"memory": to_quantity(guest + launcher_overhead(guest))}}}]}})
        self.core.patch_namespaced_pod_status(pod_name, ns, {"status": {"phase": "Running"}})
        return pod_name

    def _boot(self, vm: dict[str, Any]) -> None:
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        memory = _memory(vm)
        guest = parse_quantity(memory.get("guest", "1Gi"))
        max_guest = parse_quantity(memory["maxGuest"]) if "maxGuest" in memory else 4 * guest
        free = self._placeable(vm)
        node = max(free, key=lambda n: free[n], default=None)
        if node is None or free[node] < guest + launcher_overhead(guest):
            return  # Pending: no node has room
        self._launcher(ns, name, node, guest, 0)
        self.custom.create_namespaced_custom_object(*KV, ns, "virtualmachineinstances", {
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": ns, "labels": vm["metadata"].get("labels", {})},
            "spec": {"domain": {"memory": {"guest": to_quantity(guest), "maxGuest": to_quantity(max_guest)}}},
            "status": {"phase": "Running", "nodeName": node,
                       "conditions": [{"type": "LiveMigratable", "status": "True"}],
                       "memory": {"guestAtBoot": to_quantity(guest), "guestCurrent": to_quantity(guest),
                                  "guestRequested": to_quantity(guest),
                                  "memoryOverhead": to_quantity(launcher_overhead(guest))}}})
        self.log.append(f"{ns}/{name}: booted with {guest // MIB}Mi on {node}")

    def _restart_required(self, vm: dict[str, Any], message: str) -> None:
        self.custom.patch_namespaced_custom_object_status(
            *KV, vm["metadata"]["namespace"], "virtualmachines", vm["metadata"]["name"],
            {"status": {"conditions": [{"type": "RestartRequired", "status": "True", "message": message}]}})
        self.log.append(f"{self._key(vm)}: RestartRequired: {message}")

    def _memory_change(self, vm: dict[str, Any], vmi: dict[str, Any]) -> None:
        key = self._key(vm)
        want = parse_quantity(_memory(vm).get("guest", "1Gi"))
        status = vmi["status"]["memory"]
        have = parse_quantity(vmi["spec"]["domain"]["memory"]["guest"])
        if key in self.migrations:
            self._progress(key, vm, vmi)
            return
        if want == have:
            return
        boot, max_guest = parse_quantity(status["guestAtBoot"]), parse_quantity(vmi["spec"]["domain"]["memory"]
                                                                                  ["maxGuest"])
        if want % (2 * MIB) or want < GIB:
            return self._restart_required(vm, f"guest {want} is not a multiple of 2Mi of at least 1Gi")
        if want > max_guest:
            return self._restart_required(vm, "memory updated in template spec above maxGuest")
        if want < boot:
            return self._restart_required(vm, "memory updated in template spec to a value lower than what the VM "
                                              "started with")
        self._patch_vmi(vmi, {"spec": {"domain": {"memory": {"guest": to_quantity(want)}}},
                              "status": {"conditions": self._conditions(vmi, hot=True),
                                         "migrationState": {"startTimestamp": format_time(time.time())}}})
        self.migrations[key] = Migration(want, time.monotonic() + self.migration_s)
        self._migration_object(vmi, 1, "Running")
        self.log.append(f"{key}: hotplug {have // MIB}Mi → {want // MIB}Mi by live migration")

    def _progress(self, key: str, vm: dict[str, Any], vmi: dict[str, Any]) -> None:
        mig = self.migrations[key]
        if time.monotonic() < mig.due:
            return
        ns, name = key.split("/", 1)
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            self._patch_vmi(vmi, {"status": {"migrationState": {"startTimestamp": format_time(time.time()),
                                                                "failed": True}}})
            self._migration_object(vmi, mig.attempt, "Failed")
            mig.due, mig.attempt = time.monotonic() + 2 * self.migration_s, mig.attempt + 1  # workload-updater retries
            self._migration_object(vmi, mig.attempt, "Running")
            self.log.append(f"{key}: migration failed (attempt {mig.attempt - 1}); retrying")
            return
        free = self._placeable(vm)
        old_node = vmi["status"]["nodeName"]
        old_request = parse_quantity(vmi["status"]["memory"]["guestCurrent"])
        free[old_node] += old_request + launcher_overhead(old_request)
        node = old_node if free[old_node] >= mig.target + launcher_overhead(mig.target) else \
            max(free, key=lambda n: free[n])
        if free[node] < mig.target + launcher_overhead(mig.target):
            return  # the target pod would stay Pending: the migration waits
        for pod in self.core.list_namespaced_pod(ns, label_selector=f"vm.kubevirt.io/name={name}").items:
            self.core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
        self._launcher(ns, name, node, mig.target, mig.attempt + len(self.log))
        self._free = None  # the old launcher is gone: list again
        q = to_quantity(mig.target)
        self._patch_vmi(vmi, {"status": {
            "nodeName": node, "conditions": self._conditions(vmi, hot=False),
            "migrationState": {"startTimestamp": format_time(time.time()), "completed": True,
                               "endTimestamp": format_time(time.time())},
            "memory": {"guestCurrent": q, "guestRequested": q,
                       "memoryOverhead": to_quantity(launcher_overhead(mig.target))}}})
        del self.migrations[key]
        self._migration_object(vmi, mig.attempt, "Succeeded")
        self.log.append(f"{key}: now {mig.target // MIB}Mi on {node}")

    def _migration_object(self, vmi: dict[str, Any], attempt: int, phase: str) -> None:
        """The VirtualMachineInstanceMigration KubeVirt's workload updater creates for a hotplug."""
        ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
        if phase == "Running":
            migration = f"{name}-memory-{int(time.time())}-{attempt}"
            self._migration_names[f"{ns}/{name}"] = migration
            self.custom.create_namespaced_custom_object(*KV, ns, "virtualmachineinstancemigrations", {
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
                "metadata": {"name": migration, "namespace": ns}, "spec": {"vmiName": name},
                "status": {"phase": phase}})
        else:
            self.custom.patch_namespaced_custom_object(*KV, ns, "virtualmachineinstancemigrations",
                                                       self._migration_names[f"{ns}/{name}"],
                                                       {"status": {"phase": phase}},
                                                       _content_type="application/merge-patch+json")

    @staticmethod
    def _conditions(vmi: dict[str, Any], *, hot: bool) -> list[dict[str, Any]]:
        kept = [c for c in vmi["status"].get("conditions", []) if c.get("type") != "HotMemoryChange"]
        return [*kept, {"type": "HotMemoryChange", "status": "True"}] if hot else kept

    def _patch_vmi(self, vmi: dict[str, Any], body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(*KV, vmi["metadata"]["namespace"], "virtualmachineinstances",
                                                   vmi["metadata"]["name"], body,
                                                   _content_type="application/merge-patch+json")

    def _shut_down(self, vmi: dict[str, Any]) -> None:
        ns, name = vmi["metadata"]["namespace"], vmi["metadata"]["name"]
        for pod in self.core.list_namespaced_pod(ns, label_selector=f"vm.kubevirt.io/name={name}").items:
            self.core.delete_namespaced_pod(pod.metadata.name, ns, grace_period_seconds=0)
        self.custom.delete_namespaced_custom_object(*KV, ns, "virtualmachineinstances", name)
        self.metrics.remove(ns, name)
        self.migrations.pop(f"{ns}/{name}", None)

    # --- virt-handler: guest metrics ----------------------------------------------------------

    def _publish(self, vmis: dict[str, dict[str, Any]]) -> None:
        now = time.time()
        for key, vmi in vmis.items():
            ns, name = key.split("/", 1)
            current = parse_quantity(vmi["status"]["memory"]["guestCurrent"])
            wanted = self.demand[key](now) if key in self.demand else current // 4
            node = vmi["status"]["nodeName"]
            if wanted >= current:  # a guest never shows more use than it has: it pages instead
                self.metrics.short_of_memory(ns, name, node=node, available=current)
            else:
                self.metrics.set(ns, name, node=node, available=current, demand=wanted)
