"""A pod's memory request as kube-scheduler counts it: node room is allocatable minus these."""

from __future__ import annotations

from typing import Any

import pytest

from dynamic_memory.quantity import MIB
from dynamic_memory.sources.cluster import pod_info


def container(memory: str | None, **extra: Any) -> dict[str, Any]:
    return {"name": "c", "resources": {"requests": {"memory": memory}} if memory else {}, **extra}


@pytest.mark.parametrize(("spec", "mib"), [
    ({"containers": [container("100Mi"), container("200Mi")]}, 300),
    ({"containers": [container("300Mi")], "initContainers": [container("500Mi")]}, 500),  # the init step is larger
    ({"containers": [container("300Mi")], "initContainers": [container("200Mi")]}, 300),
    # a sidecar runs beside the containers and beside every init container after it (KEP 753)
    ({"containers": [container("300Mi")],
      "initContainers": [container("50Mi", restartPolicy="Always"), container("400Mi")]}, 450),
    ({"containers": [container("100Mi")],
      "initContainers": [container("100Mi"), container("50Mi", restartPolicy="Always")]}, 150),
    ({"containers": [container("300Mi")], "overhead": {"memory": "160Mi"}}, 460),  # a RuntimeClass's overhead
    ({"containers": [container("300Mi")], "resources": {"requests": {"memory": "1Gi"}}}, 1024),  # pod-level
    ({"containers": [container("300Mi")], "resources": {"requests": {"cpu": "2"}}}, 300),
    ({"containers": [container("not-a-size"), container("64Mi"), container(None)]}, 64),
])
def test_a_pods_request_is_what_the_scheduler_counts(spec: dict[str, Any], mib: int) -> None:
    info = pod_info({"metadata": {"namespace": "ns", "name": "p"}, "spec": {"nodeName": "node-1", **spec},
                     "status": {"phase": "Running"}})
    assert info is not None and info.memory == mib * MIB
