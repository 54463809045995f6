"""Quantities and durations parse exactly as Kubernetes and Go do."""

from __future__ import annotations

import pytest

from dynamic_memory.quantity import (
    GIB,
    MIB,
    align_down,
    align_up,
    format_bytes,
    format_duration,
    parse_duration,
    parse_quantity,
    to_quantity,
)


@pytest.mark.parametrize(("text", "expected"), [
    ("1Gi", GIB), ("512Mi", 512 * MIB), ("1.5Gi", 3 * GIB // 2), ("2G", 2_000_000_000), ("1k", 1000),
    ("1024", 1024), ("1e3", 1000), ("1E9", 10**9), ("0.5Ki", 512), ("1m", 1), ("1Ti", 1024 * GIB), (".5Mi", MIB // 2),
])
def test_parse_quantity(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "Gi", "1GB", "one", "1.2.3Gi", "-1Gi", "1 Gi x", "1Zi"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"quantity|unit|negative"):
        parse_quantity(text)


@pytest.mark.parametrize(("value", "text"), [(0, "0"), (1023, "1023"), (GIB, "1Gi"), (3 * GIB // 2, "1.5Gi"),
                                             (3_900_000_000, "3.63Gi")])
def test_format_bytes(value: int, text: str) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize(("value", "text"), [(GIB, "1Gi"), (1536 * MIB, "1536Mi"), (1000, "1000"), (0, "0")])
def test_to_quantity_is_exact(value: int, text: str) -> None:
    assert to_quantity(value) == text
    assert parse_quantity(text) == value


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("6h", 21600), ("1h30m", 5400),
                                               ("1.5h", 5400), ("250ms", 0.25), ("0s", 0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "1d", "h", "-5s", "5 s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("value", "step", "up", "down"), [(0, 2, 0, 0), (1, 2, 2, 0), (2, 2, 2, 2), (5, 4, 8, 4)])
def test_alignment(value: int, step: int, up: int, down: int) -> None:
    assert (align_up(value, step), align_down(value, step)) == (up, down)


@pytest.mark.parametrize(("seconds", "text"), [(8 * 3600, "8h"), (5400, "1h30m"), (30, "30s"), (0.5, "500ms"),
                                               (0, "0s"), (3661, "1h1m1s")])
def test_format_duration_writes_what_a_policy_would(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
