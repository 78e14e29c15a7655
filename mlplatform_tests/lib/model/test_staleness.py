"""Staleness backtest on generated data where the truth is known: a relation that rotates over the days
decays measurably and gets a finite cadence; a stationary one shows no decay."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.lib.model.features import build_dataset
from mlplatform_assets.lib.model.staleness import backtest, champion_age_days
from mlplatform_assets.lib.model.training import fit
from mlplatform_assets.lib.spec import parse_spec

START = dt.date(2026, 1, 1)
DAYS = 60


def _spec(task: str = "classification", staleness: str = "{}", window_days: int = DAYS, holdout_days: int = 7):
    if task == "classification":
        target, estimator, metric = ("target: {column: y, classes: [0, 1], positive_class: 1}",
                                     "sklearn.linear_model.LogisticRegression", "roc_auc")
    else:
        target, estimator, metric = "target: {column: y}", "sklearn.linear_model.Ridge", "rmse"
    return parse_spec(f"""
name: staleness_test
task: {task}
source: {{uri: /nonexistent}}
timestamp_column: ts
partition_start: {START}
{target}
features: {{numeric: [x1, x2, x3]}}
estimator: {{class_path: {estimator}}}
training: {{window_days: {window_days}, holdout_days: {holdout_days}, seed: 1}}
metrics: {{primary: {metric}}}
monitoring: {{staleness: {staleness}}}
""")


def _frames(rotation_per_day: float, task: str = "classification", rows: int = 600, days: int = DAYS, seed: int = 0):
    """Per day: y depends on x1, x2 through a direction that turns ``rotation_per_day`` radians each day."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(days):
        day = START + dt.timedelta(days=i)
        x = rng.normal(size=(rows, 3))
        angle = rotation_per_day * i
        signal = 2.0 * (np.cos(angle) * x[:, 0] + np.sin(angle) * x[:, 1])
        noise = rng.normal(size=rows)
        y = (signal + noise > 0).astype(int) if task == "classification" else signal + 0.5 * noise
        ts = pd.Timestamp(day) + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), unit="s")
        out[day] = pd.DataFrame({"ts": ts, "x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "y": y})
    return out


def _run(spec, frames):
    dataset = build_dataset(spec, frames, ["x1", "x2", "x3"], [])
    return backtest(spec, dataset, fit(spec, dataset).holdout_predictions)


@pytest.fixture(scope="module")
def rotating_report():
    return _run(_spec(staleness="{cuts: 3}"), _frames(rotation_per_day=0.04))


def test_rotating_relation_decays_and_gets_a_finite_cadence(rotating_report):
    report = rotating_report
    assert report.status == "measured" and report.decay is True
    hi = report.slope_ci[1]
    assert report.slope_per_day < 0 and hi < 0
    # Three cuts: the real one (7 holdout days, no refit) and two refits 14 days apart, 14 days each.
    assert [c.refit for c in report.cuts] == [False, True, True]
    assert [c.cut_day for c in report.cuts] == ["2026-02-22", "2026-02-08", "2026-01-25"]
    assert [len(c.points) for c in report.cuts] == [7, 14, 14]
    assert all(c.train_rows == 2000 for c in report.cuts[1:])
    assert {p["age"] for p in report.cuts[1].points} == set(range(1, 15))
    # The curve falls with age and the expected quality follows the fitted slope.
    curve = {p["age"]: p["mean"] for p in report.curve}
    assert np.mean([curve[a] for a in (1, 2, 3)]) > np.mean([curve[a] for a in (12, 13, 14)]) + 0.01
    assert report.expected_by_age[1] > report.expected_by_age[7] > report.expected_by_age[14]
    assert report.expected_by_age[7] == pytest.approx(report.expected_by_age[1] + 6 * report.slope_per_day)
    # Cadence: the largest age whose expected drop from age 1 stays within the tolerance.
    assert report.tolerance == pytest.approx(0.01 * report.expected_by_age[1])
    drop_per_day = -report.slope_per_day
    assert (report.cadence_days - 1) * drop_per_day <= report.tolerance < report.cadence_days * drop_per_day
    assert 1 <= report.cadence_days < 14
    assert "decays" in report.summary and f"every {report.cadence_days} day(s)" in report.summary


def test_default_backtest_needs_no_refit_and_still_sees_fast_decay():
    """Default (cuts: 1): the challenger on its own 7 holdout days, no extra training."""
    report = _run(_spec(), _frames(rotation_per_day=0.06))
    assert [c.refit for c in report.cuts] == [False] and [p["age"] for p in report.curve] == list(range(1, 8))
    assert report.decay is True and report.slope_ci[1] < 0 and report.cadence_days is not None


def test_stationary_relation_shows_no_decay():
    report = _run(_spec(), _frames(rotation_per_day=0.0))
    assert report.status == "measured" and [c.refit for c in report.cuts] == [False]  # default: no refit
    lo, hi = report.slope_ci
    assert lo < 0 < hi and report.decay is False
    assert report.cadence_days is None
    assert "no measurable decay" in report.summary


def test_regression_decay_is_an_increasing_error():
    """rmse is minimized: decay is a positive slope, and the cadence uses the explicit tolerance."""
    spec = _spec(task="regression", staleness="{tolerance: 0.05}")
    report = _run(spec, _frames(rotation_per_day=0.04, task="regression"))
    assert report.direction == "minimize" and report.decay is True
    assert report.slope_ci[0] > 0
    assert report.tolerance == 0.05
    assert report.cadence_days == int(1 + 0.05 / report.slope_per_day)
    stationary = _run(spec, _frames(rotation_per_day=0.0, task="regression"))
    assert stationary.decay is False and stationary.cadence_days is None


def test_cadence_is_capped_at_the_window():
    spec = _spec(staleness="{cuts: 3, tolerance: 2.0}")
    report = _run(spec, _frames(rotation_per_day=0.04))
    assert report.decay is True and report.cadence_days == DAYS


def test_disabled_and_too_short_windows_say_why():
    off = _run(_spec(staleness="{enabled: false}"), _frames(0.04))
    assert off.status == "skipped" and "enabled: false" in off.reason and off.cuts == []
    # One cut (no refit) over 2 holdout days: too few points for an interval; the reason says so.
    short = _run(_spec(staleness="{cuts: 1}", window_days=10, holdout_days=2), _frames(0.04, days=10))
    assert short.status == "skipped" and short.slope_per_day is None
    assert "too few scored days" in short.reason and len(short.curve) == 2


def test_report_json_and_mlflow_metrics(rotating_report):
    report = rotating_report
    data = json.loads(report.to_json())
    assert data["status"] == "measured" and data["cadence_days"] == report.cadence_days
    assert data["expected_by_age"]["7"] == pytest.approx(report.expected_by_age[7])
    rows = report.mlflow_metrics()
    curve = [(k, s) for k, _, s in rows if k == "staleness.roc_auc"]
    assert [s for _, s in curve] == [p["age"] for p in report.curve]
    assert ("staleness.cadence_days", float(report.cadence_days), 0) in rows


def test_spec_rejects_bad_staleness_fields():
    from mlplatform_assets.lib.spec import SpecError

    with pytest.raises(SpecError, match=r"monitoring\.staleness\.cuts"):
        _spec(staleness="{cuts: 0}")
    with pytest.raises(SpecError, match=r"monitoring\.staleness\.tolerance"):
        _spec(staleness="{tolerance: -1}")
    with pytest.raises(SpecError, match=r"monitoring\.staleness\.refits"):
        _spec(staleness="{refits: 2}")


def test_champion_age_counts_from_the_end_of_its_training_data():
    assert champion_age_days("2026-01-01..2026-02-28", dt.date(2026, 3, 10)) == 10
    assert champion_age_days("garbage", dt.date(2026, 3, 10)) is None


def test_markdown_section(rotating_report):
    from mlplatform_assets.lib.model.staleness import markdown

    text = markdown(rotating_report.as_dict())
    assert text.startswith("#### Staleness (backtest)") and f"every {rotating_report.cadence_days} day(s)" in text
    assert "| 14 |" in text and "refit on 2000 rows" in text
    skipped = markdown(_run(_spec(staleness="{enabled: false}", window_days=20), _frames(0.0, days=20)).as_dict())
    assert "Not measured: disabled" in skipped


def test_evaluation_summary_shows_the_staleness_section_when_measured(rotating_report):
    from mlplatform_assets.lib.model import report
    from mlplatform_assets.lib.model.evaluation import decide_promotion
    from mlplatform_assets.lib.model.lifecycle import Evaluation

    spec = _spec()
    predictions = pd.DataFrame({"prediction": [0, 1], "probability": [0.2, 0.8]})
    ev = Evaluation(decide_promotion(spec, "1", 0.8, None, None), {"roc_auc": 0.8}, None, predictions, None)
    assert "Staleness" not in report.evaluation_markdown(spec, ev, pd.Series([0, 1]))
    ev.extra["staleness"] = rotating_report.as_dict()
    summary = report.evaluation_markdown(spec, ev, pd.Series([0, 1]))
    assert "#### Staleness (backtest)" in summary and rotating_report.summary in summary
