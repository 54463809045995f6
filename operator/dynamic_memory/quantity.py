"""Kubernetes quantities ("2Gi") and Go durations ("6h30m"), parsed exactly as the API server does.

Users write these strings in policies; the engine works in integer bytes and float seconds.
The regular expressions here are the ones the CRD schema uses too, so both sides agree.
"""

from __future__ import annotations

import functools
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

KIB = 1024
MIB = 1024**2
GIB = 1024**3

QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_NUMBER = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")
_EXPONENT = re.compile(r"^[eE]([-+]?[0-9]+)$")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_quantity(text: str) -> int:
    """Return the number of bytes in a Kubernetes quantity, rounding fractions of a byte up."""
    if not isinstance(text, str):
        raise ValueError(f"a quantity must be a string like '2Gi', got {text!r}")
    return _parse_quantity(text)


@functools.lru_cache(maxsize=4096)
def _parse_quantity(text: str) -> int:
    """Cached: a pass reads a handful of distinct sizes thousands of times ("2Gi" on every VM),
    and exact decimal parsing was a third of reading a VM's objects."""
    match = _NUMBER.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (examples: 512Mi, 2Gi, 1.5G)")
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc
    if suffix in _BINARY:
        scaled = value * _BINARY[suffix]
    elif suffix in _DECIMAL:
        scaled = value * _DECIMAL[suffix]
    elif exp := _EXPONENT.match(suffix):
        scaled = value * (Decimal(10) ** int(exp.group(1)))
    else:
        raise ValueError(f"{text!r} has an unknown unit suffix {suffix!r} (use Ki, Mi, Gi, Ti or k, M, G, T)")
    if scaled < 0:
        raise ValueError(f"{text!r} is negative; memory sizes must be positive")
    return int(scaled.to_integral_value(rounding=ROUND_CEILING))


def format_bytes(value: int) -> str:
    """Show bytes the way people read them in `kubectl get`: the largest binary unit, 3 digits."""
    sign = "-" if value < 0 else ""
    amount = float(abs(value))
    for unit in ("", "Ki", "Mi", "Gi", "Ti", "Pi"):
        if amount < 1024 or unit == "Pi":
            if unit == "":
                return f"{sign}{int(amount)}"
            text = f"{amount:.2f}".rstrip("0").rstrip(".")
            return f"{sign}{text}{unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def to_quantity(value: int) -> str:
    """Exact quantity string for bytes: the largest binary unit that divides it (what we patch)."""
    for unit, size in reversed(_BINARY.items()):
        if value and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


def parse_duration(text: str) -> float:
    """Return seconds for a Go duration string such as '30s', '6h' or '1h30m'."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration (examples: 30s, 5m, 6h, 1h30m)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """Seconds as a policy writes them ('8h', '1h30m', '30s', '500ms'): what `parse_duration` reads back."""
    left = round(seconds * 1000)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def align_up(value: int, step: int) -> int:
    """Smallest multiple of step that is >= value (KubeVirt wants guest memory in 2 MiB blocks)."""
    return -(-value // step) * step


def align_down(value: int, step: int) -> int:
    """Largest multiple of step that is <= value."""
    return (value // step) * step
