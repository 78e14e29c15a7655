"""The promotion gate."""

import pytest

from mlplatform_assets.lib.model.evaluation import decide_promotion
from mlplatform_tests.lib.model.test_rigor import make_spec

# The point-estimate rule alone (no interval, no baselines): test_rigor.py covers the default rigor.
POINT_ONLY = "{min_improvement: 0.01, absolute_floor: %s, require: point, must_beat_baseline: false}"
CLS = make_spec(POINT_ONLY % 0.7)
REG = make_spec(POINT_ONLY % 10, task="regression", metric="rmse")


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
