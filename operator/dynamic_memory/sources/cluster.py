"""Read nodes, pods, migrations and the KubeVirt CR (plain dicts, as watches deliver them) into the
cluster the plan places changes on.

A node's room is what kube-scheduler sees: allocatable minus the memory requests of every pod
bound to it, virt-launcher pods and migration target pods included (KubeVirt fills
`status.memory.memoryOverhead` only behind an alpha gate, so pods are the truth). A VM's launcher
pod is found by KubeVirt's own link, the label `kubevirt.io/created-by=<VMI UID>`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from dynamic_memory.model import Cluster, NodeState, Placement, Taint
from dynamic_memory.quantity import parse_quantity
from dynamic_memory.sources.kubevirt import _get, _quantity, placement_of

CREATED_BY = "kubevirt.io/created-by"
"""KubeVirt's label on a virt-launcher pod: the UID of its VMI."""
MIGRATION_JOB = "kubevirt.io/migrationJobUID"
"""KubeVirt's label on a migration target pod."""
FINAL_MIGRATION_PHASES = ("Succeeded", "Failed")
PARALLEL_MIGRATIONS = 5
"""KubeVirt's default parallelMigrationsPerCluster."""
PARALLEL_OUTBOUND = 2
"""KubeVirt's default parallelOutboundMigrationsPerNode."""

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the plan needs of a scheduled, not finished pod."""

    namespace: str
    name: str
    node: str
    memory: int
    created_by: str | None = None
    """The VMI UID of a virt-launcher pod (source or migration target)."""
    placement: Placement | None = None
    """Where a virt-launcher pod may run (None for other pods)."""


def pod_info(pod: Obj) -> PodInfo | None:
    """A not finished pod's memory request and KubeVirt link: bound pods, and virt-launcher pods
    not bound yet (node ""; a migration target waiting for the scheduler); None otherwise."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    node = spec.get("nodeName") or ""
    created_by = ((pod.get("metadata") or {}).get("labels") or {}).get(CREATED_BY)
    if (not node and not created_by) or status.get("phase") in ("Succeeded", "Failed"):
        return None
    meta = pod.get("metadata") or {}
    return PodInfo(str(meta.get("namespace", "")), str(meta.get("name", "")), str(node), memory_request(spec),
                   created_by, placement_of(pod) if created_by else None)


def _memory(resources: Obj | None) -> int:
    return _quantity(_get(resources or {}, "requests", "memory")) or 0


def memory_request(spec: Obj) -> int:
    """The pod's memory request as kube-scheduler counts it (component-helpers `PodRequests`,
    v1.34): its containers and sidecars (restartable init containers) together, at least the
    heaviest init step (an init container plus the sidecars started before it), a pod-level
    request in place of the containers' when set, plus the pod overhead (a RuntimeClass's)."""
    total = sum(_memory(c.get("resources")) for c in spec.get("containers") or [])
    sidecars = heaviest_init = 0
    for init in spec.get("initContainers") or []:
        own = _memory(init.get("resources"))
        if init.get("restartPolicy") == "Always":
            sidecars += own
            total += own
            step = sidecars
        else:
            step = own + sidecars
        heaviest_init = max(heaviest_init, step)
    total = max(total, heaviest_init)
    pod_level = _memory(spec.get("resources"))
    if pod_level:
        total = pod_level
    return total + (_quantity(_get(spec, "overhead", "memory")) or 0)


def node_state(node: Obj) -> NodeState | None:
    """A node with its allocatable memory (its free room is filled in by `cluster`); None without one."""
    value = _get(node, "status", "allocatable", "memory")
    try:
        allocatable = parse_quantity(str(value)) if value is not None else None
    except ValueError:
        return None
    if allocatable is None:
        return None
    taints = tuple(Taint(str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect") or ""))
                   for t in _get(node, "spec", "taints") or [])
    return NodeState(str(_get(node, "metadata", "name")), allocatable, allocatable,
                     dict(_get(node, "metadata", "labels") or {}), taints,
                     not _get(node, "spec", "unschedulable"))


def migration_active(migration: Obj) -> tuple[str, bool]:
    """(namespace/VMI name, still pending or running) of a VirtualMachineInstanceMigration."""
    key = f"{_get(migration, 'metadata', 'namespace')}/{_get(migration, 'spec', 'vmiName')}"
    return key, _get(migration, "status", "phase") not in FINAL_MIGRATION_PHASES


def migration_limits(kubevirts: Iterable[Obj]) -> tuple[int, int]:
    """(parallelMigrationsPerCluster, parallelOutboundMigrationsPerNode) from the KubeVirt CR,
    KubeVirt's defaults where it says nothing."""
    for kv in kubevirts:
        config = _get(kv, "spec", "configuration", "migrations") or {}
        return (int(config.get("parallelMigrationsPerCluster") or PARALLEL_MIGRATIONS),
                int(config.get("parallelOutboundMigrationsPerNode") or PARALLEL_OUTBOUND))
    return PARALLEL_MIGRATIONS, PARALLEL_OUTBOUND


def launcher_pod(pods: Iterable[PodInfo], vmi: Obj) -> PodInfo | None:
    """The virt-launcher pod a VMI runs in now: linked by its UID, on its node."""
    uid, node = _get(vmi, "metadata", "uid"), _get(vmi, "status", "nodeName")
    for pod in pods:
        if pod.created_by == uid and pod.node == node:
            return pod
    return None


def cluster(nodes: Iterable[NodeState], pods: Iterable[PodInfo], migrating: Mapping[str, str],
            limits: tuple[int, int], own_cap: int, reserve: int) -> Cluster:
    """The nodes with their free room, and how many migrations may start.

    `migrating` maps each VMI that is migrating or waiting for its hotplug migration to the node
    it leaves; `own_cap` is the operator's own limit on resizes under way."""
    used: dict[str, int] = {}
    for pod in pods:
        if pod.node:  # an unbound pod holds no node's room yet
            used[pod.node] = used.get(pod.node, 0) + pod.memory
    outbound: dict[str, int] = {}
    for node in migrating.values():
        outbound[node] = outbound.get(node, 0) + 1
    per_cluster, per_node = limits
    return Cluster(
        {n.name: replace(n, free=n.allocatable - reserve - used.get(n.name, 0), outbound=outbound.get(n.name, 0))
         for n in nodes},
        migrations_left=max(min(per_cluster, own_cap) - len(migrating), 0),
        outbound_per_node=per_node,
    )
