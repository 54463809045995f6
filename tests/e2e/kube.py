"""Kubernetes clients for the tests, typed loosely on purpose: the tests write objects as plain
dicts (as kubectl users do), which the generated client accepts at run time though its stubs ask
for its model classes."""

from __future__ import annotations

from typing import Any

from kubernetes import client


def core(api: client.ApiClient) -> Any:
    """CoreV1Api taking and giving plain dicts where the tests use them."""
    return client.CoreV1Api(api)


def custom(api: client.ApiClient) -> Any:
    """CustomObjectsApi (custom objects are plain dicts anyway)."""
    return client.CustomObjectsApi(api)


def add_node(api: client.ApiClient, name: str, allocatable: str, capacity: str | None = None,
             pods: str = "110") -> None:
    """A Node with this much allocatable memory, labelled with its hostname as kubelet labels it.
    No kubelet runs: the KubeVirt stand-in places virt-launcher pods on it."""
    core(api).create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
    core(api).patch_node_status(name, {"status": {"allocatable": {"memory": allocatable, "pods": pods},
                                                  "capacity": {"memory": capacity or allocatable, "pods": pods}}})
