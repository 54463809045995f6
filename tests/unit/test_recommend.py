"""`recommend`'s pure half: selectors as PromQL matchers, and one decision per VM after its history."""

from __future__ import annotations

import pytest

from dynamic_memory.api import LabelSelector
from dynamic_memory.errors import UserError
from dynamic_memory.model import Action, PolicyParams, VMHistory
from dynamic_memory.quantity import GIB
from dynamic_memory.recommend import policy_matchers, recommend, selector_matchers


@pytest.mark.parametrize(("selector", "matchers"), [
    ("app=db", ['kubernetes_vmi_label_app="db"']),
    ("app==db,tier!=web", ['kubernetes_vmi_label_app="db"', 'kubernetes_vmi_label_tier!="web"']),
    ("env in (prod, stage),team notin (x)", ['kubernetes_vmi_label_env=~"prod|stage"',
                                             'kubernetes_vmi_label_team!~"x"']),
    ("kubevirt.io/domain,!legacy", ['kubernetes_vmi_label_kubevirt_io_domain!=""', 'kubernetes_vmi_label_legacy=""']),
    ("", []),
])
def test_kubectl_selectors_become_matchers(selector: str, matchers: list[str]) -> None:
    assert selector_matchers(selector) == matchers


@pytest.mark.parametrize("selector", ["app in", "=db", "!app=db", "app in ()"])
def test_bad_selectors_are_user_errors(selector: str) -> None:
    with pytest.raises(UserError, match="--selector"):
        selector_matchers(selector)


def test_policy_selector_becomes_matchers() -> None:
    sel = LabelSelector.model_validate({"matchLabels": {"app": "db"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["a.b", "c"]}, {"key": "old", "operator": "DoesNotExist"}]})
    assert policy_matchers(sel) == ['kubernetes_vmi_label_app="db"', 'kubernetes_vmi_label_tier=~"a\\\\.b|c"',
                                    'kubernetes_vmi_label_old=""']


def test_recommendation_follows_the_whole_history() -> None:
    params = PolicyParams(startup=GIB, minimum=GIB, maximum=64 * GIB)
    hour = 3600.0
    # 12 h of history: a 6 GiB peak 10 h ago (out of the 8 h window), 2 GiB since
    old_peak = VMHistory("n1", tuple((t * 60.0, (6 if t < 120 else 2) * GIB) for t in range(720)), 16 * GIB)
    # a recent peak within the window holds the size up
    recent = VMHistory("n1", tuple((t * 60.0, (6 if 600 < t < 620 else 2) * GIB) for t in range(720)), 16 * GIB)
    # no sample in the last hour: unknown demand never shrinks
    silent = VMHistory("n2", tuple((t * 60.0, 2 * GIB) for t in range(600)), 16 * GIB)
    recs = {r.key: r for r in recommend({"a/old": old_peak, "a/recent": recent, "a/silent": silent}, params,
                                        12 * hour, stale_s=120)}
    assert (recs["a/old"].target, recs["a/old"].action) == (3 * GIB, Action.SHRINK)  # 2Gi + 1Gi buffer
    # 6Gi + 20 % = 7372.8Mi, up to a multiple of 2Mi
    assert (recs["a/recent"].target, recs["a/recent"].action) == (7 * GIB + 206 * 2**20, Action.SHRINK)
    assert (recs["a/silent"].target, recs["a/silent"].action) == (16 * GIB, Action.HOLD)
