"""Training windows, the time-ordered split and the preprocessing pipeline (lib/model/features.py)."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.lib.model.features import (
    MISSING_CATEGORY,
    DatasetError,
    build_dataset,
    build_pipeline,
    needs_scaling,
    required_partitions,
    window_days,
)
from mlplatform_assets.lib.spec import parse_spec
from mlplatform_tests.conftest import small_spec_yaml

START = dt.date(2026, 6, 1)
NUMERIC, CATEGORICAL = ["x"], ["c"]


def spec(window: int = 10, holdout: int = 2, extra: str = "",
         estimator: str = "sklearn.linear_model.LogisticRegression", params: str = "{max_iter: 300}"):
    text = small_spec_yaml("/tmp/source", window_days=window, holdout_days=holdout, estimator=estimator, params=params)
    return parse_spec(text.replace("  seed: 3\n", f"  seed: 3\n{extra}"), "m.yaml", variables={})


def day_frame(day: dt.date, rows: int = 4, labels=(0, 1)) -> pd.DataFrame:
    return pd.DataFrame({"event_time": [pd.Timestamp(day) + pd.Timedelta(hours=h) for h in range(rows)],
                         "x": np.arange(rows, dtype=float), "c": ["u", "v"] * (rows // 2),
                         "churned": [labels[i % len(labels)] for i in range(rows)]})


def frames(n_days: int, **kw) -> dict[dt.date, pd.DataFrame]:
    return {START + dt.timedelta(days=i): day_frame(START + dt.timedelta(days=i), **kw) for i in range(n_days)}


@pytest.mark.parametrize("end, window, expected_first, expected_len", [
    (START + dt.timedelta(days=20), 10, START + dt.timedelta(days=11), 10),
    (START + dt.timedelta(days=3), 10, START, 4),  # clipped at partition_start
    (START, 10, START, 1),
])
def test_window_days_end_inclusive_and_clipped(end, window, expected_first, expected_len):
    days = window_days(end, spec(window=window))
    assert days[0] == expected_first and days[-1] == end and len(days) == expected_len
    assert all((b - a).days == 1 for a, b in zip(days, days[1:]))


def test_required_partitions_default_is_half_the_window_at_least_two():
    assert required_partitions(spec(window=10)) == 5
    assert required_partitions(spec(window=3)) == 2
    assert required_partitions(spec(window=10, extra="  min_partitions: 7\n")) == 7


def test_holdout_is_the_last_days_in_time_order_and_hash_is_content_based():
    data = frames(6)
    shuffled = dict(reversed(list(data.items())))
    ds = build_dataset(spec(window=10), shuffled, NUMERIC, CATEGORICAL)
    assert ds.train_days == [START + dt.timedelta(days=i) for i in range(4)]
    assert ds.holdout_days == [START + dt.timedelta(days=4), START + dt.timedelta(days=5)]
    assert len(ds.train) == 16 and len(ds.holdout) == 8
    assert ds.partition_range == f"{START}..{START + dt.timedelta(days=5)}"
    assert list(ds.X("train").columns) == ["x", "c"] and ds.y("holdout").name == "churned"
    assert ds.quarantined_days == []
    assert build_dataset(spec(window=10), data, NUMERIC, CATEGORICAL).data_sha256 == ds.data_sha256
    changed = {**data, START: data[START].assign(x=data[START]["x"] + 1)}
    assert build_dataset(spec(window=10), changed, NUMERIC, CATEGORICAL).data_sha256 != ds.data_sha256


def test_unlabeled_rows_are_not_trained_on_and_unlabeled_days_do_not_count():
    data = frames(6)
    data[START] = data[START].assign(churned=[None, 1, None, 0])
    data[START + dt.timedelta(days=1)] = data[START + dt.timedelta(days=1)].assign(churned=None)
    ds = build_dataset(spec(window=10, extra="  min_partitions: 5\n"), data, NUMERIC, CATEGORICAL)
    assert START + dt.timedelta(days=1) not in ds.days
    assert len(ds.train) == 2 + 4 * 2 and ds.train["churned"].notna().all()


@pytest.mark.parametrize("n_days, extra, labels, message", [
    (4, "", (0, 1), "training window has 4 validated day(s) with data; at least 5 are required "
                    "(training.min_partitions)"),
    (6, "", (1,), "training rows hold 1 class(es) of 'churned'; need at least 2"),
])
def test_too_little_data_is_a_clear_error(n_days, extra, labels, message):
    with pytest.raises(DatasetError) as err:
        build_dataset(spec(window=10, extra=extra), frames(n_days, labels=labels), NUMERIC, CATEGORICAL)
    assert str(err.value) == message


def test_max_rows_samples_training_rows_reproducibly_and_keeps_the_holdout():
    s = spec(window=40, holdout=2, extra="  max_rows: 100\n")
    data = frames(30, rows=8)
    a, b = (build_dataset(s, data, NUMERIC, CATEGORICAL) for _ in range(2))
    assert len(a.train) == 100 and len(a.holdout) == 16
    pd.testing.assert_frame_equal(a.train, b.train)


@pytest.mark.parametrize("estimator, params, scale, expected", [
    ("sklearn.linear_model.LogisticRegression", "{max_iter: 300}", "auto", True),
    ("sklearn.ensemble.RandomForestClassifier", "{n_estimators: 5}", "auto", False),
    ("sklearn.ensemble.RandomForestClassifier", "{n_estimators: 5}", "always", True),
    ("sklearn.linear_model.LogisticRegression", "{max_iter: 300}", "never", False),
])
def test_scaling_only_where_the_estimator_needs_it(estimator, params, scale, expected):
    s = spec(estimator=estimator, params=params)
    s = parse_spec(s.to_yaml().replace("scale_numeric: auto", f"scale_numeric: {scale}"), "m.yaml", variables={})
    assert needs_scaling(s) is expected
    transformers = build_pipeline(s, NUMERIC, CATEGORICAL).named_steps["preprocess"].transformers
    numeric_steps = next(steps for name, steps, _ in transformers if name == "numeric")
    assert ("scale" in numeric_steps.named_steps) is expected


def test_pipeline_imputes_missing_values_and_categories_and_is_seeded():
    s = spec(estimator="sklearn.ensemble.RandomForestClassifier", params="{n_estimators: 5}")
    pipe = build_pipeline(s, NUMERIC, CATEGORICAL)
    assert pipe.named_steps["model"].random_state == 3  # training.seed
    train = pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "c": ["u", None, np.nan, "v"]})
    pipe.fit(train, [0, 1, 0, 1])
    encoder = pipe.named_steps["preprocess"].named_transformers_["categorical"].named_steps["onehot"]
    assert MISSING_CATEGORY in list(encoder.categories_[0])
    assert pipe.predict(pd.DataFrame({"x": [None], "c": ["never seen"]})).shape == (1,)
