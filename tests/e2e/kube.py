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
