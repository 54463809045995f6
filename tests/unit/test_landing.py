"""Where a migration target pod may go: kube-scheduler's NodeUnschedulable, NodeAffinity and
TaintToleration filters, as the cluster plan applies them; and reading them from KubeVirt's objects."""

from __future__ import annotations

from typing import Any

import pytest

from dynamic_memory.model import NodeState, Placement, Requirement, Taint, Toleration
from dynamic_memory.policy.landing import allows
from dynamic_memory.quantity import GIB
from dynamic_memory.sources.cluster import migration_limits, node_state
from dynamic_memory.sources.kubevirt import placement_of


def node(name: str = "n1", taints: tuple[Taint, ...] = (), schedulable: bool = True, **labels: str) -> NodeState:
    return NodeState(name, 64 * GIB, 32 * GIB, {"kubernetes.io/hostname": name, **labels}, taints, schedulable)


@pytest.mark.parametrize(("placement", "target", "expected"), [
    (None, node(), True),
    (None, node(schedulable=False), False),  # cordoned
    (Placement((("zone", "a"),)), node(zone="a"), True),
    (Placement((("zone", "a"),)), node(zone="b"), False),
    (Placement(terms=((Requirement("zone", "In", ("a", "b")),),)), node(zone="b"), True),
    (Placement(terms=((Requirement("zone", "NotIn", ("a",)),),)), node(), True),  # no label: not in
    (Placement(terms=((Requirement("gpu", "Exists"),),)), node(), False),
    (Placement(terms=((Requirement("gpu", "DoesNotExist"),),)), node(), True),
    (Placement(terms=((Requirement("cores", "Gt", ("8",)),),)), node(cores="16"), True),
    (Placement(terms=((Requirement("cores", "Lt", ("8",)),),)), node(cores="16"), False),
    # terms are ORed, requirements ANDed
    (Placement(terms=((Requirement("zone", "In", ("x",)),), (Requirement("zone", "In", ("a",)),))),
     node(zone="a"), True),
    (Placement(terms=((Requirement("zone", "In", ("a",)), Requirement("gpu", "Exists")),)), node(zone="a"), False),
    (Placement(terms=((Requirement("metadata.name", "In", ("n2",)),),)), node("n1"), False),
    # taints: NoSchedule and NoExecute keep pods off unless tolerated; PreferNoSchedule does not
    (None, node(taints=(Taint("dedicated", "db", "NoSchedule"),)), False),
    (None, node(taints=(Taint("dedicated", "db", "PreferNoSchedule"),)), True),
    (Placement(tolerations=(Toleration("dedicated", "Equal", "db", "NoSchedule"),)),
     node(taints=(Taint("dedicated", "db", "NoSchedule"),)), True),
    (Placement(tolerations=(Toleration("dedicated", "Equal", "web", "NoSchedule"),)),
     node(taints=(Taint("dedicated", "db", "NoSchedule"),)), False),
    (Placement(tolerations=(Toleration("dedicated", "Exists"),)),
     node(taints=(Taint("dedicated", "db", "NoExecute"),)), True),
    (Placement(tolerations=(Toleration("", "Exists"),)), node(taints=(Taint("any", "", "NoSchedule"),)), True),
    (Placement(tolerations=(Toleration("dedicated", "Exists", "", "NoExecute"),)),
     node(taints=(Taint("dedicated", "db", "NoSchedule"),)), False),  # the wrong effect
])
def test_allows(placement: Placement | None, target: NodeState, expected: bool) -> None:
    assert allows(placement, target) is expected


def test_placement_is_read_from_the_launcher_pod() -> None:
    pod: dict[str, Any] = {"spec": {
        "nodeSelector": {"kubevirt.io/schedulable": "true", "zone": "a"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}],
             "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n9"]}]}]}}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}}
    placement = placement_of(pod)
    assert placement.node_selector == (("kubevirt.io/schedulable", "true"), ("zone", "a"))
    assert placement.terms == ((Requirement("gpu", "DoesNotExist"), Requirement("metadata.name", "NotIn", ("n9",))),)
    assert placement.tolerations == (Toleration("dedicated", "Equal", "db", "NoSchedule"),)


def test_node_state_reads_allocatable_labels_taints_and_cordon() -> None:
    state = node_state({"metadata": {"name": "n1", "labels": {"zone": "a"}},
                        "spec": {"unschedulable": True, "taints": [{"key": "k", "effect": "NoExecute"}]},
                        "status": {"allocatable": {"memory": "16Gi"}}})
    assert state is not None
    assert (state.allocatable, dict(state.labels), state.taints, state.schedulable) == \
        (16 * GIB, {"zone": "a"}, (Taint("k", "", "NoExecute"),), False)
    assert node_state({"metadata": {"name": "n2"}, "status": {}}) is None


def test_migration_limits_come_from_the_kubevirt_cr_or_kubevirts_defaults() -> None:
    assert migration_limits([]) == (5, 2)
    assert migration_limits([{"spec": {"configuration": {}}}]) == (5, 2)
    assert migration_limits([{"spec": {"configuration": {"migrations": {
        "parallelMigrationsPerCluster": 10, "parallelOutboundMigrationsPerNode": 1}}}}]) == (10, 1)


@pytest.mark.parametrize(("caps", "weights", "budget", "expected"), [
    ({"a": 10, "b": 10}, {"a": 1, "b": 1}, 10, {"a": 5, "b": 5}),
    ({"a": 10, "b": 10}, {"a": 3, "b": 1}, 8, {"a": 6, "b": 2}),
    ({"a": 2, "b": 10}, {"a": 3, "b": 1}, 8, {"a": 2, "b": 6}),       # a capped share flows to the others
    ({"a": 10, "b": 10}, {"a": 1, "b": 0}, 15, {"a": 10, "b": 5}),    # weight 0 gets only leftovers
    ({"a": 10, "b": 10}, {"a": 1, "b": 1}, 100, {"a": 10, "b": 10}),  # never beyond caps
    ({"a": 10, "b": 10, "c": 10}, {"a": 1, "b": 1, "c": 1}, 10, {"a": 3, "b": 3, "c": 4}),  # no byte lost to rounding
    ({"a": 0}, {"a": 1}, 5, {"a": 0}),
])
def test_proxmox_water_fill(caps: dict[str, int], weights: dict[str, int], budget: int,
                            expected: dict[str, int]) -> None:
    from dynamic_memory.policy.baselines import water_fill

    assert water_fill(caps, weights, budget) == expected
