"""Data checks on one day: each bad input fails the right check with a message naming the problem."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.data.validation import (
    check_day,
    clean_day,
    infer_feature_columns,
)
from mlplatform_assets.lib.spec import load_spec, parse_spec

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


DAY = dt.date(2026, 2, 1)


@pytest.fixture
def day() -> pd.DataFrame:
    return example_data.customer_churn(DAY, rows=200)


def failing(outcomes):
    return {o.name: o.message for o in outcomes if not o.passed}


def test_good_day_passes_every_check(day):
    assert failing(check_day(SPEC, day, DAY)) == {}


def test_missing_column(day):
    assert "missing columns: ['plan']" in failing(check_day(SPEC, day.drop(columns=["plan"]), DAY))["required_columns"]


def test_wrong_dtype(day):
    day["tenure_months"] = day["tenure_months"].astype(str)
    assert "tenure_months is object, expected numeric" in failing(check_day(SPEC, day, DAY))["dtypes"]


def test_unparsable_timestamps(day):
    day["event_time"] = day["event_time"].astype(str)
    day.loc[:4, "event_time"] = "not a time"
    assert "5 values that are not timestamps" in failing(check_day(SPEC, day, DAY))["dtypes"]


def test_empty_and_unreadable(day):
    f = failing(check_day(SPEC, day.iloc[0:0], DAY))
    assert "0 rows" in f["non_empty"] and "no rows" in f["target_domain"]
    assert "no data: file not found" in failing(check_day(SPEC, pd.DataFrame(), DAY, "file not found"))["non_empty"]


def test_target_all_null_and_out_of_domain(day):
    nulls = day.assign(churned=None)
    assert "null in every row" in failing(check_day(SPEC, nulls, DAY))["target_domain"]
    bad = day.assign(churned=np.where(np.arange(len(day)) % 2, 1, 7))
    assert "labels outside ['0', '1']: ['7']" in failing(check_day(SPEC, bad, DAY))["target_domain"]


def test_delayed_labels_allow_an_unlabeled_day(day):
    delayed = SPEC.model_copy(update={"target": SPEC.target.model_copy(update={"labels_delayed": True})})
    assert failing(check_day(delayed, day.assign(churned=None), DAY)) == {}


def test_null_share_and_duplicates(day):
    day.loc[: len(day) // 2, "monthly_charges"] = np.nan
    assert "monthly_charges" in failing(check_day(SPEC, day, DAY))["null_share"]
    dup = pd.concat([day, day.head(10)])
    assert "above limit 0.01" in failing(check_day(SPEC, dup, DAY))["duplicate_share"]


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


def test_infinite_feature_values_fail_naming_columns_and_counts(day):
    day["tenure_months"] = day["tenure_months"].astype("Float64")  # nullable dtype: pd.NA next to inf
    day.loc[0, "tenure_months"] = pd.NA
    day.loc[5, "tenure_months"] = np.inf
    day.loc[:2, "monthly_charges"] = np.inf
    day.loc[3, "monthly_charges"] = -np.inf
    outcomes = {o.name: o for o in check_day(SPEC, day, DAY)}
    assert failing(outcomes.values()) == {
        "finite_values": "non-finite values in tenure_months: 1 inf, monthly_charges: 3 inf and 1 -inf"}
    assert outcomes["finite_values"].metadata["non_finite"] == {
        "tenure_months": {"inf": 1, "-inf": 0}, "monthly_charges": {"inf": 3, "-inf": 1}}


# The example regression model's own spec: target delivery_minutes, features inferred.
REGRESSION = load_spec(Path(example_data.__file__).parents[2] / "examples" / "models" / "delivery_time.yaml")



def test_infinite_regression_target_fails_finite_values_only():
    day = example_data.delivery_time(DAY, rows=100)
    assert failing(check_day(REGRESSION, day, DAY)) == {}
    day.loc[[3, 7], "delivery_minutes"] = np.inf
    assert failing(check_day(REGRESSION, day, DAY)) == {
        "finite_values": "non-finite values in delivery_minutes (target): 2 inf"}


def test_rows_from_another_day_fail_naming_day_count_and_example(day):
    shifted = day.assign(event_time=day["event_time"] - pd.Timedelta(days=400))
    outcome = {o.name: o for o in check_day(SPEC, shifted, DAY)}["timestamps_in_partition"]
    example = shifted["event_time"].iloc[0]
    assert not outcome.passed
    n = len(shifted)
    assert outcome.message == f"{n} of {n} rows have event_time outside 2026-02-01 (UTC), e.g. {example}"
    assert outcome.metadata == {"off_day_rows": n, "example": str(example)}
    assert example.date() == dt.date(2024, 12, 28)


def test_partition_day_bounds_are_utc_and_half_open(day):
    day = day.head(4).copy()
    day["event_time"] = ["2026-02-01T00:00:00+00:00", "2026-02-01T23:59:59+00:00", "2026-02-02T00:00:00+00:00",
                         "2026-02-01T23:30:00-05:00"]  # the last one is 04:30 UTC on the next day
    outcomes = {o.name: o for o in check_day(SPEC, day, DAY)}
    assert outcomes["dtypes"].passed
    assert outcomes["timestamps_in_partition"].message == (
        "2 of 4 rows have event_time outside 2026-02-01 (UTC), e.g. 2026-02-02T00:00:00+00:00")
    naive = day.assign(event_time=pd.to_datetime(["2026-02-01 00:00:00", "2026-02-01 23:59:59.999",
                                                  "2026-01-31 23:59:59", "2026-02-01 12:00:00"], format="ISO8601"))
    outcome = {o.name: o for o in check_day(SPEC, naive, DAY)}["timestamps_in_partition"]
    assert outcome.metadata == {"off_day_rows": 1, "example": "2026-01-31 23:59:59"}
