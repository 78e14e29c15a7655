"""Data checks on one day: each bad input fails the right check with a message naming the problem."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.lib import example_data
from mlplatform_assets.lib.spec import parse_spec
from mlplatform_assets.lib.validation import check_day, clean_day, infer_feature_columns

SPEC = parse_spec("""
name: churn
task: classification
source: {uri: /tmp/x}
timestamp_column: event_time
partition_start: 2026-01-01
target: {column: churned, classes: [0, 1]}
features:
  numeric: [tenure_months, monthly_charges]
  categorical: [plan]
estimator: {class_path: sklearn.linear_model.LogisticRegression}
metrics: {primary: roc_auc}
validation: {max_null_share: 0.2, max_duplicate_share: 0.01, min_rows: 10}
""")


@pytest.fixture
def day() -> pd.DataFrame:
    return example_data.customer_churn(dt.date(2026, 2, 1), rows=200)


def failing(outcomes):
    return {o.name: o.message for o in outcomes if not o.passed}


def test_good_day_passes_every_check(day):
    assert failing(check_day(SPEC, day)) == {}


def test_missing_column(day):
    assert "missing columns: ['plan']" in failing(check_day(SPEC, day.drop(columns=["plan"])))["required_columns"]


def test_wrong_dtype(day):
    day["tenure_months"] = day["tenure_months"].astype(str)
    assert "tenure_months is object, expected numeric" in failing(check_day(SPEC, day))["dtypes"]


def test_unparsable_timestamps(day):
    day["event_time"] = day["event_time"].astype(str)
    day.loc[:4, "event_time"] = "not a time"
    assert "5 values that are not timestamps" in failing(check_day(SPEC, day))["dtypes"]


def test_empty_and_unreadable(day):
    f = failing(check_day(SPEC, day.iloc[0:0]))
    assert "0 rows" in f["non_empty"] and "no rows" in f["target_domain"]
    assert "no data: file not found" in failing(check_day(SPEC, pd.DataFrame(), "file not found"))["non_empty"]


def test_target_all_null_and_out_of_domain(day):
    nulls = day.assign(churned=None)
    assert "null in every row" in failing(check_day(SPEC, nulls))["target_domain"]
    bad = day.assign(churned=np.where(np.arange(len(day)) % 2, 1, 7))
    assert "labels outside ['0', '1']: ['7']" in failing(check_day(SPEC, bad))["target_domain"]


def test_delayed_labels_allow_an_unlabeled_day(day):
    delayed = SPEC.model_copy(update={"target": SPEC.target.model_copy(update={"labels_delayed": True})})
    assert failing(check_day(delayed, day.assign(churned=None))) == {}


def test_null_share_and_duplicates(day):
    day.loc[: len(day) // 2, "monthly_charges"] = np.nan
    assert "monthly_charges" in failing(check_day(SPEC, day))["null_share"]
    dup = pd.concat([day, day.head(10)])
    assert "above limit 0.01" in failing(check_day(SPEC, dup))["duplicate_share"]


def test_clean_day_types_and_drops(day):
    day.loc[0, "churned"] = None
    day = pd.concat([day, day.tail(1)])
    numeric, categorical = infer_feature_columns(SPEC, day)
    clean = clean_day(SPEC, day, numeric, categorical)
    assert len(clean) == len(day) - 1  # the duplicate; unlabeled rows stay (scored, never trained on)
    assert clean["churned"].isna().sum() == 1
    assert clean["tenure_months"].dtype == np.float64
    assert list(clean.columns) == ["event_time", "tenure_months", "monthly_charges", "plan", "churned"]
    assert clean["event_time"].is_monotonic_increasing
