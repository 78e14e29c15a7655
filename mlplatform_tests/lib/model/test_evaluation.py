"""The promotion gate."""

import pytest

from mlplatform_assets.lib.model.evaluation import decide_promotion
from mlplatform_assets.lib.spec import parse_spec

BASE = """
name: m
task: {task}
source: {{uri: /tmp/x}}
timestamp_column: t
partition_start: 2026-01-01
target: {{column: y}}
features: {{numeric: [a]}}
estimator: {{class_path: {est}}}
metrics: {{primary: {metric}}}
promotion: {{min_improvement: 0.01, absolute_floor: {floor}}}
"""
CLS = parse_spec(BASE.format(task="classification", est="sklearn.linear_model.LogisticRegression",
                             metric="roc_auc", floor=0.7))
REG = parse_spec(BASE.format(task="regression", est="sklearn.linear_model.Ridge", metric="rmse", floor=10))


@pytest.mark.parametrize("spec, ch, champ, promote, reason", [
    (CLS, 0.80, None, True, "no champion yet"),
    (CLS, 0.65, None, False, "below the absolute floor 0.7"),
    (CLS, 0.80, 0.78, True, "beats champion v1"),
    (CLS, 0.785, 0.78, False, "improvement +0.0050 < min_improvement 0.01"),
    (CLS, 0.70, 0.78, False, "improvement -0.0800"),
    (REG, 5.0, 6.0, True, "by +1.0000"),       # lower rmse is better
    (REG, 5.995, 6.0, False, "< min_improvement"),
    (REG, 12.0, None, False, "above the absolute floor 10"),
    (CLS, float("nan"), 0.7, False, "undefined"),
])
def test_gate(spec, ch, champ, promote, reason):
    d = decide_promotion(spec, "2", ch, "1" if champ is not None else None, champ)
    assert d.promote is promote
    assert reason in d.reason
