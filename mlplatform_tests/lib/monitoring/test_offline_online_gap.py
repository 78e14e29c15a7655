"""Offline (holdout) vs online (realized) gap per served version: sign, tolerance, minimum rows, off when unset."""

import datetime as dt

import pytest

from mlplatform_assets.lib.monitoring.batch import agreement_alerts, offline_online
from mlplatform_assets.lib.spec import parse_spec


def _spec(monitoring: str = "{}"):
    return parse_spec(f"""
name: gap_test
task: classification
source: {{uri: /nonexistent}}
timestamp_column: ts
partition_start: 2026-01-01
target: {{column: y, classes: [0, 1], positive_class: 1}}
features: {{numeric: [x]}}
estimator: {{class_path: sklearn.linear_model.LogisticRegression}}
metrics: {{primary: roc_auc}}
monitoring: {monitoring}
""")


QUALITY = {"metrics_by_version": {"1": {"roc_auc": 0.62}, "2": {"roc_auc": 0.79}, "3": {"roc_auc": 0.5}},
           "rows_by_version": {"1": 900, "2": 50, "3": 400}}
HOLDOUT = {"1": 0.80, "2": 0.80, "3": None}  # v3 has no recorded holdout metric: no comparison


def test_gap_is_realized_minus_holdout_and_diverges_beyond_the_tolerance():
    out = offline_online(_spec("{max_offline_online_gap: 0.1, offline_online_min_rows: 100}"), QUALITY, HOLDOUT)
    assert set(out) == {"1", "2"}
    assert out["1"]["gap"] == pytest.approx(-0.18) and out["1"]["diverged"] is True
    assert out["2"]["gap"] == pytest.approx(-0.01) and out["2"]["diverged"] is False
    alerts = agreement_alerts(_spec("{max_offline_online_gap: 0.1}"), dt.date(2026, 2, 1), out, None)
    assert [(a.kind, a.details["version"], a.partition) for a in alerts] == [
        ("offline_online_divergence", "1", "2026-02-01")]
    assert "-0.18 from its holdout 0.8" in alerts[0].message


def test_too_few_rows_or_no_tolerance_never_diverge():
    few = offline_online(_spec("{max_offline_online_gap: 0.001, offline_online_min_rows: 1000}"), QUALITY, HOLDOUT)
    assert not any(v["diverged"] for v in few.values())
    unset = offline_online(_spec(), QUALITY, HOLDOUT)
    assert unset["1"]["gap"] == pytest.approx(-0.18) and not any(v["diverged"] for v in unset.values())


def test_stale_champion_alert_only_when_stale():
    spec = _spec()
    fresh = {"version": "4", "age_days": 3, "cadence_days": 5, "stale": False}
    assert agreement_alerts(spec, dt.date(2026, 2, 1), {}, fresh) == []
    stale = {**fresh, "age_days": 9, "stale": True}
    [alert] = agreement_alerts(spec, dt.date(2026, 2, 1), {}, stale)
    assert alert.kind == "champion_stale" and alert.details == stale and "9 days past" in alert.message


def test_gap_spec_fields_are_validated():
    from mlplatform_assets.lib.spec import SpecError

    with pytest.raises(SpecError, match=r"monitoring\.max_offline_online_gap"):
        _spec("{max_offline_online_gap: -0.1}")
    with pytest.raises(SpecError, match=r"monitoring\.offline_online_min_rows"):
        _spec("{offline_online_min_rows: 0}")
