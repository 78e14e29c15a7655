"""Explanations: Shapley contributions match the known truth of a linear model, add up to output - expected
for any estimator (exact and sampled), and bad rows get clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from mlplatform_assets.lib.model import explain
from mlplatform_assets.lib.model.explain import ExplainError, explain_row, row_frame


def frame(n: int, seed: int = 0, extra: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                       "plan": rng.choice(["basic", "plus", "pro"], size=n)})
    for i in range(extra):
        df[f"x{i}"] = rng.normal(size=n)
    return df


def test_linear_model_contributions_are_weight_times_distance_from_the_background_mean():
    X = frame(500)[["a", "b"]]
    model = LinearRegression().fit(X, 2 * X["a"] - 3 * X["b"])
    background = frame(40, seed=1)[["a", "b"]]
    row = pd.DataFrame({"a": [1.5], "b": [0.5]})

    e = explain_row(model, row, background, "regression", model="m", version="3")

    got = {c["feature"]: c["contribution"] for c in e.contributions}
    assert got["a"] == pytest.approx(2 * (1.5 - background["a"].mean()), abs=1e-9)
    assert got["b"] == pytest.approx(-3 * (0.5 - background["b"].mean()), abs=1e-9)
    assert e.method == "exact" and e.output == "prediction" and e.value == pytest.approx(2 * 1.5 - 3 * 0.5)
    assert [c["feature"] for c in e.contributions] == sorted(got, key=lambda f: -abs(got[f]))


@pytest.mark.parametrize("extra, method", [(0, "exact"), (14, "sampled")])
def test_contributions_add_up_to_output_minus_expected_for_a_classifier_pipeline(extra, method):
    data = frame(800, extra=extra)
    y = ((data["a"] > 0) & (data["plan"] != "basic")).astype(int)
    features = list(data.columns)
    pipeline = Pipeline([("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"])],
                                                    remainder="passthrough")),
                         ("model", HistGradientBoostingClassifier(max_iter=30, random_state=0))]).fit(data, y)
    background = data.sample(20, random_state=0).reset_index(drop=True)
    row = data.iloc[[3]].reset_index(drop=True)

    e = explain_row(pipeline, row, background, "classification", positive_class=1, permutations=16, seed=2)

    assert e.method == method and e.output == "probability of class 1"
    assert e.value == pytest.approx(pipeline.predict_proba(row)[0, 1])
    assert e.expected == pytest.approx(pipeline.predict_proba(background)[:, 1].mean())
    assert sum(c["contribution"] for c in e.contributions) == pytest.approx(e.value - e.expected, abs=1e-9)
    assert {c["feature"] for c in e.contributions} == set(features)  # one per raw column, plan included
    top = {c["feature"] for c in e.contributions[:2]}
    assert "a" in top or "plan" in top
    if method == "sampled":
        again = explain_row(pipeline, row, background, "classification", positive_class=1, permutations=16, seed=2)
        assert again.contributions == e.contributions and e.permutations == 16


def test_row_errors_name_the_feature():
    background = frame(10)
    with pytest.raises(ExplainError, match=r"missing feature\(s\) \['plan'\]; unknown feature\(s\) \['c'\]"):
        row_frame({"a": 1, "b": 2, "c": 3}, background)
    with pytest.raises(ExplainError, match="feature 'a' is numeric; got str"):
        row_frame({"a": "1", "b": 2, "plan": "pro"}, background)
    with pytest.raises(ExplainError, match="feature 'plan' is categorical"):
        row_frame({"a": 1, "b": 2, "plan": 3}, background)
    ok = row_frame({"a": 1, "b": None, "plan": "pro"}, background)
    assert ok["a"].dtype == float and np.isnan(ok["b"].iloc[0]) and ok["plan"].iloc[0] == "pro"


def test_table_lists_largest_contribution_first():
    X = frame(200)[["a", "b"]]
    e = explain_row(LinearRegression().fit(X, 5 * X["a"]), pd.DataFrame({"a": [2.0], "b": [0.0]}), X.head(10),
                    "regression", model="m", version="1")
    lines = explain.format_table(e).splitlines()
    assert lines[0].startswith("m v1: prediction = ") and lines[4].startswith("a ")
