"""Memory quantities for the e2e harness, read and written without the product's own code (the
harness must not share the operator's parser: a bug in it would then agree with itself)."""

from __future__ import annotations

from kubernetes.utils import parse_quantity as _kubernetes_parse

MIB = 1024**2
GIB = 1024**3


def parse_quantity(text: str) -> int:
    """Bytes of a Kubernetes quantity, by the Kubernetes Python client's parser."""
    return int(_kubernetes_parse(text))  # type: ignore[no-untyped-call]


def to_quantity(value: int) -> str:
    """A byte count as apimachinery's resource.Quantity prints a BinarySI value: the largest
    binary suffix that divides it exactly (KubeVirt writes guest sizes this way)."""
    for suffix, unit in (("Ti", 1024**4), ("Gi", GIB), ("Mi", MIB), ("Ki", 1024)):
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)
