"""The policy API: defaults, clear errors naming the field, and the engine's view."""

from __future__ import annotations

from typing import Any

import pytest

from dynamic_memory.api import LabelSelector, PolicySpec, validation_errors
from dynamic_memory.model import Learn, Mode
from dynamic_memory.quantity import GIB, MIB

VALID: dict[str, Any] = {"selector": {"matchLabels": {"app": "db"}}, "startup": "2Gi", "maximum": "16Gi"}


def test_defaults_are_hyperv_like() -> None:
    spec = PolicySpec.model_validate(VALID)
    p = spec.params()
    assert (spec.minimum, spec.bufferPercent, spec.weight, spec.interval, spec.mode) == ("1Gi", 20, 5000, "30s", "Auto")
    assert (p.minimum, p.startup, p.maximum, p.minimum_buffer) == (GIB, 2 * GIB, 16 * GIB, GIB)
    assert (p.scale_up.window_s, p.scale_up.min_step, p.scale_up.max_per_hour) == (0, 768 * MIB, 4)
    assert (p.scale_down.window_s, p.scale_down.min_step, p.scale_down.max_per_hour) == (8 * 3600, GIB, 1)
    assert p.mode is Mode.AUTO



@pytest.mark.parametrize(("change", "learns"), [
    ({}, Learn.MINIMUM_BUFFER | Learn.DOWN_WINDOW),
    ({"minimumBuffer": "1Gi"}, Learn.DOWN_WINDOW),  # written, even at the value a VM starts from: kept
    ({"scaleDown": {"stabilizationWindow": "8h"}}, Learn.MINIMUM_BUFFER),
    ({"scaleDown": {"minStep": "2Gi"}}, Learn.MINIMUM_BUFFER | Learn.DOWN_WINDOW),
    ({"minimumBuffer": "512Mi", "scaleDown": {"stabilizationWindow": "4h"}}, Learn.NOTHING),
    ({"learnPerVM": False}, Learn.NOTHING),
])
def test_each_vm_learns_only_the_knobs_its_policy_leaves_unset(change: dict[str, Any], learns: Learn) -> None:
    p = PolicySpec.model_validate({**VALID, **change}).params()
    assert p.learn == learns
    # what a VM starts from (and keeps, when it does not learn): the value written, or 1Gi and 8h
    assert p.minimum_buffer == {"512Mi": 512 * MIB}.get(change.get("minimumBuffer", ""), GIB)
    assert p.scale_down.window_s == 3600 * {"4h": 4}.get(change.get("scaleDown", {}).get("stabilizationWindow", ""), 8)

@pytest.mark.parametrize(("change", "field", "words"), [
    ({"minimum": "4Gi"}, "spec.minimum", "4Gi must not be larger than startup 2Gi"),
    ({"startup": "32Gi"}, "spec.startup", "32Gi must not be larger than maximum 16Gi"),
    ({"minimum": "4Gi", "startup": "4Gi", "maximum": "2Gi"}, "spec.maximum",
     "2Gi must not be smaller than minimum 4Gi"),
    ({"minimum": "512Mi", "startup": "1Gi"}, "spec.minimum", "below 1Gi"),
    ({"maximum": "16.5G"}, "spec.maximum", "not a multiple of 2Mi"),
    ({"bufferPercent": 3000}, "spec.bufferPercent", "must be at most 2000, not 3000"),
    ({"bufferPercent": 4}, "spec.bufferPercent", "must be at least 5, not 4"),
    ({"weight": 10001}, "spec.weight", "must be at most 10000"),
    ({"startup": "two gigs"}, "spec.startup", "not a Kubernetes quantity"),
    ({"interval": "30"}, "spec.interval", "not a duration"),
    ({"interval": "0s"}, "spec.interval", "shorter than 1s"),
    ({"bufferPercent": "20"}, "spec.bufferPercent", "must be an integer, not '20'"),
    ({"weight": 5000.0}, "spec.weight", "must be an integer"),
    ({"selector": {"matchLabels": {"version": 2}}}, "spec.selector.matchLabels.version", "must be a string"),
    ({"metrics": {"staleAfter": "0s"}}, "spec.metrics.staleAfter", "shorter than 10s"),
    ({"metrics": {"matchers": 'job="a"} or vector(1) or x{a="b"'}}, "spec.metrics.matchers",
     "is not a list of PromQL label matchers"),
    ({"metrics": {"matchers": "job=kubevirt"}}, "spec.metrics.matchers", "is not a list of PromQL label matchers"),
    ({"minimum": "4Gi", "bufferPercent": "x"}, "spec.minimum", "must not be larger than startup"),
    ({"mode": "Aggressive"}, "spec.mode", "'Auto', 'Recommend' or 'Off'"),
    ({"bufferpercent": 20}, "spec.bufferpercent", "unknown field"),
    ({"scaleDown": {"stabilizationWindow": "6 hours"}}, "spec.scaleDown.stabilizationWindow", "not a duration"),
    ({"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "spec.selector.matchExpressions.0",
     "needs at least one value"),
])
def test_invalid_specs_name_the_field(change: dict[str, Any], field: str, words: str) -> None:
    errors = validation_errors({**VALID, **change})
    assert any(e.startswith(field + ":") and words in e for e in errors), errors


def test_valid_spec_has_no_errors() -> None:
    assert validation_errors(VALID) == []


@pytest.mark.parametrize("matchers", ['job="kubevirt"', 'job="kubevirt", cluster=~"eu-.*"',
                                      ' env != "dev" ,team!~"a|b"', 'x="with \\"quote\\""'])
def test_promql_matchers_are_accepted(matchers: str) -> None:
    assert validation_errors({**VALID, "metrics": {"matchers": matchers}}) == []


@pytest.mark.parametrize(("selector", "labels", "selected"), [
    ({"matchLabels": {"app": "db"}}, {"app": "db", "x": "y"}, True),
    ({"matchLabels": {"app": "db"}}, {"app": "web"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}, {"tier": "b"}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": "x"}, False),
    ({}, {"anything": "at all"}, True),
])
def test_label_selector(selector: dict[str, Any], labels: dict[str, str], selected: bool) -> None:
    assert LabelSelector.model_validate(selector).matches(labels) is selected
