"""Monitoring logic: drift references, per-kind test policy, realized quality joins."""

import datetime as dt

import numpy as np
import pandas as pd

from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.data.validation import clean_day
from mlplatform_assets.lib.model.features import build_dataset
from mlplatform_assets.lib.model.training import fit
from mlplatform_assets.lib.monitoring.batch import (
    ChampionReference,
    day_drift,
    drift_artifacts,
    realized_quality,
    score_day,
)
from mlplatform_assets.lib.monitoring.drift import ReferenceProfile
from mlplatform_assets.lib.spec import parse_spec

SPEC_TEXT = """
name: churn
task: classification
source: {uri: /tmp/x}
timestamp_column: event_time
partition_start: 2026-01-01
target: {column: churned, classes: [0, 1], positive_class: 1}
features: {numeric: [tenure_months, monthly_charges, usage_gb], categorical: [plan, region, payment_method]}
estimator: {class_path: sklearn.linear_model.LogisticRegression, params: {max_iter: 300}}
training: {window_days: 6, holdout_days: 2}
metrics: {primary: roc_auc}
drift: {drift_share: 0.3, quality_floor: 0.9 %s}
"""
NUM = ["tenure_months", "monthly_charges", "usage_gb"]
CAT = ["plan", "region", "payment_method"]


def _setup(extra=""):
    spec = parse_spec(SPEC_TEXT % extra)
    days = [dt.date(2026, 2, 1) + dt.timedelta(days=i) for i in range(6)]
    frames = {d: clean_day(spec, example_data.customer_churn(d, rows=400), NUM, CAT) for d in days}
    ds = build_dataset(spec, frames, NUM, CAT)
    result = fit(spec, ds)
    arts = drift_artifacts(spec, ds, result)
    import io
    import tempfile
    from pathlib import Path

    tmp = Path(tempfile.mkdtemp())
    (tmp / "f.npz").write_bytes(arts["drift/reference_features.npz"])
    (tmp / "p.npz").write_bytes(arts["drift/reference_predictions.npz"])
    ref = ChampionReference("1", "run", ReferenceProfile.load(tmp / "f.npz"), ReferenceProfile.load(tmp / "p.npz"),
                            pd.read_parquet(io.BytesIO(arts["drift/reference_sample.parquet"])))
    return spec, ds, result, ref


def test_drift_reference_and_day_drift():
    spec, ds, result, ref = _setup()
    assert set(ref.features.numerical_columns) == set(NUM) and set(ref.features.categorical_columns) == set(CAT)
    assert ref.features.n_rows == len(ds.train)
    calm_day = clean_day(spec, example_data.customer_churn(dt.date(2026, 2, 8), rows=400), NUM, CAT)
    shifted_day = clean_day(spec, example_data.customer_churn(dt.date(2026, 2, 9), rows=400, drift=True), NUM, CAT)
    calm, _ = day_drift(spec, ref, calm_day, None)
    shifted, pred = day_drift(spec, ref, shifted_day, result.holdout_predictions["probability"])
    assert not calm.dataset_drift and shifted.dataset_drift
    assert shifted.columns["monthly_charges"].drifted and shifted.columns["region"].drifted
    assert pred is not None and pred.prediction_drift is not None  # same-distribution scores: no drift
    assert pred.prediction_drift.drifted is False


def test_per_kind_stattest_policy_applies_to_the_right_columns():
    spec, ds, result, ref = _setup(", numerical_stattest: psi, categorical_stattest: jensenshannon, "
                                   "stattest_threshold: 0.25")
    day = clean_day(spec, example_data.customer_churn(dt.date(2026, 2, 8), rows=400), NUM, CAT)
    res, _ = day_drift(spec, ref, day, None)
    assert {res.columns[c].stattest for c in NUM} == {"psi"}
    assert {res.columns[c].stattest for c in CAT} == {"jensenshannon"}
    assert {res.columns[c].threshold for c in NUM + CAT} == {0.25}


def test_realized_quality_joins_late_labels_by_row_key():
    spec, ds, result, ref = _setup()
    day = clean_day(spec, example_data.customer_churn(dt.date(2026, 2, 8), rows=400), NUM, CAT)
    unlabeled = day.assign(churned=np.nan)
    preds = pd.concat(score_day(spec, result.pipeline, "3", unlabeled, NUM + CAT, chunk_rows=97))
    assert len(preds) == len(day) and set(preds["model_version"]) == {"3"}
    assert realized_quality(spec, unlabeled, preds, NUM + CAT) == {"labels_available": False, "labeled_rows": 0}
    # Labels land later, in a different row order: the join is by content, not position.
    q = realized_quality(spec, day.sample(frac=1.0, random_state=1), preds, NUM + CAT)
    assert q["matched_rows"] == len(day) and q["served_version"] == "3"
    assert 0.5 < q["realized"] < 0.9 and q["below_floor"] is True  # floor 0.9 in the spec
