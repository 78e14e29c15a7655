"""Permutation importance: the features a model relies on rank first, the champion is compared on the same
rows and shuffles, and the cost is bounded by the sampled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression

from mlplatform_assets.lib.model.importance import importance_report, permutation_importance, sample_rows
from mlplatform_assets.lib.spec import parse_spec


def regression_spec(importance: str = "{}", metric: str = "rmse"):
    return parse_spec(f"""
name: lin
task: regression
source: {{uri: /nonexistent/lin.parquet}}
timestamp_column: ts
partition_start: 2026-01-01
target: {{column: y}}
features: {{numeric: [a, b, noise]}}
estimator: {{class_path: sklearn.linear_model.LinearRegression}}
training: {{seed: 5}}
metrics: {{primary: {metric}}}
evaluation: {{importance: {importance}}}
""", "lin.yaml", {})


def data(n: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "noise": rng.normal(size=n)})
    return X, 3 * X["a"] + 1 * X["b"] + rng.normal(scale=0.1, size=n)


@pytest.mark.parametrize("metric", ["rmse", "r2"])
def test_the_features_the_model_uses_rank_first_whatever_the_metric_direction(metric):
    spec = regression_spec(metric=metric)
    X, y = data()
    model = LinearRegression().fit(X, y)
    table = permutation_importance(spec, model, X, y, repeats=3, seed=1)
    assert table["a"]["importance"] > table["b"]["importance"] > 0.1
    assert abs(table["noise"]["importance"]) < 0.01
    if metric == "rmse":  # shuffling a (weight 3, unit variance) raises rmse from ~0.1 to ~sqrt(2*9+1)
        assert table["a"]["importance"] == pytest.approx(np.sqrt(19), rel=0.1)
    assert permutation_importance(spec, model, X, y, repeats=3, seed=1) == table  # seeded


def test_challenger_vs_champion_on_the_same_rows_shows_what_changed():
    spec = regression_spec("{max_rows: 500, repeats: 2, top_k: 2}")
    X, y = data()
    challenger = LinearRegression().fit(X, y)
    champion = LinearRegression().fit(X[["a", "b", "noise"]], X["b"] * 3)  # an old model that leaned on b
    report = importance_report(spec, X, y, challenger, champion, "4")

    assert report["rows"] == 500 and report["holdout_rows"] == 3000 and report["repeats"] == 2
    assert report["champion_version"] == "4"
    rows = {r["feature"]: r for r in report["features"]}
    assert [r["feature"] for r in report["features"]][0] == "a" and rows["a"]["rank"] == 1
    assert rows["b"]["champion_rank"] == 1 and rows["a"]["champion_rank"] in (2, 3)
    assert rows["a"]["change"] > 2 and abs(rows["noise"]["change"]) < 0.05
    assert rows["a"]["change"] == pytest.approx(rows["a"]["importance"] - rows["a"]["champion_importance"])

    alone = importance_report(spec, X, y, challenger, None)
    assert "change" not in alone["features"][0] and alone["champion_version"] is None
    # The same rows and shuffles with or without a champion: the challenger's numbers do not move.
    assert [r["importance"] for r in alone["features"]] == [r["importance"] for r in report["features"]]


def test_rows_are_a_seeded_sample_in_order():
    assert list(sample_rows(5, 10, 0)) == [0, 1, 2, 3, 4]
    picked = sample_rows(10_000, 100, 3)
    assert len(picked) == 100 == len(set(picked)) and list(picked) == sorted(picked)
    assert list(sample_rows(10_000, 100, 3)) == list(picked) and list(sample_rows(10_000, 100, 4)) != list(picked)


def test_importance_switch_is_validated():
    assert regression_spec().evaluation.importance.enabled
    with pytest.raises(Exception, match="evaluation.importance.repeats: Input should be greater than or equal to 1"):
        regression_spec("{repeats: 0}")


def test_report_section_shows_the_top_features_against_the_champion():
    from types import SimpleNamespace

    from mlplatform_assets.lib.model.report import ReportInput, importance_section

    spec = regression_spec("{max_rows: 500, repeats: 2, top_k: 2}")
    X, y = data()
    model = LinearRegression().fit(X, y)
    with_champion = SimpleNamespace(extra={"importance": importance_report(spec, X, y, model, model, "4")})
    text = importance_section(ReportInput(spec, with_champion, y))
    lines = text.splitlines()
    assert "vs champion v4" in lines[0] and "500 holdout rows, 2 shuffles" in lines[0]
    assert lines[2].startswith("| feature | importance | ± std | champion | change | champion rank |")
    assert lines[4].startswith("| a |") and lines[5].startswith("| b |") and len(lines) == 6  # top_k rows
    assert "| 0.0000 | 1 |" in lines[4]  # the same model: no change, same rank
    assert importance_section(ReportInput(spec, SimpleNamespace(extra={}), y)) is None


def test_vectorised_auc_equals_roc_auc_score_with_ties_and_one_class():
    from sklearn.metrics import roc_auc_score

    from mlplatform_assets.lib.model.importance import roc_auc_by_block

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random((4, 300)), 1)  # many ties
    assert roc_auc_by_block(y, scores) == pytest.approx([roc_auc_score(y, s) for s in scores], abs=1e-12)
    assert np.isnan(roc_auc_by_block(np.ones(5), rng.random((2, 5)))).all()


def test_classifier_importance_uses_the_positive_class_probability():
    from sklearn.linear_model import LogisticRegression

    spec = parse_spec("""
name: clf
task: classification
source: {uri: /nonexistent/clf.parquet}
timestamp_column: ts
partition_start: 2026-01-01
target: {column: y, positive_class: 1}
features: {numeric: [a, b, noise]}
estimator: {class_path: sklearn.linear_model.LogisticRegression}
metrics: {primary: roc_auc}
""", "clf.yaml", {})
    X, signal = data()
    y = (signal > 0).astype(int)
    table = permutation_importance(spec, LogisticRegression().fit(X, y), X, y, repeats=2, seed=0)
    assert table["a"]["importance"] > table["b"]["importance"] > 0.02 and abs(table["noise"]["importance"]) < 0.01


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2", "mape"])
def test_block_scores_equal_the_platform_metric(metric):
    from mlplatform_assets.lib.model.importance import _block_scores
    from mlplatform_assets.lib.model.training import compute_metrics

    spec = regression_spec(metric=metric)
    rng = np.random.default_rng(1)
    y = pd.Series(rng.normal(5, 2, 200))
    preds = pd.DataFrame({"prediction": rng.normal(5, 2, 600)})
    expected = [compute_metrics("regression", [metric], y, preds.iloc[b * 200:(b + 1) * 200].reset_index(drop=True))
                [metric] for b in range(3)]
    assert _block_scores(spec, y, preds, 3) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("positive_class", [0, 1])
def test_block_auc_equals_the_platform_metric_whichever_label_is_positive(positive_class):
    from mlplatform_assets.lib.model.importance import _block_scores
    from mlplatform_assets.lib.model.training import compute_metrics

    spec = parse_spec(f"""
name: clf
task: classification
source: {{uri: /nonexistent/clf.parquet}}
timestamp_column: ts
partition_start: 2026-01-01
target: {{column: y, positive_class: {positive_class}}}
features: {{numeric: [a]}}
estimator: {{class_path: sklearn.linear_model.LogisticRegression}}
metrics: {{primary: roc_auc}}
""", "clf.yaml", {})
    rng = np.random.default_rng(2)
    y = pd.Series(rng.integers(0, 2, 150))
    # "probability" is P(label 1), informative: with positive class 0 the AUC is computed on 1 - p.
    preds = pd.DataFrame({"probability": np.clip(np.tile(y.to_numpy(), 3) * 0.3 + rng.random(450) * 0.7, 0, 1)})
    preds["prediction"] = (preds["probability"] > 0.5).astype(int)
    expected = [compute_metrics("classification", ["roc_auc"], y, preds.iloc[b * 150:(b + 1) * 150]
                                .reset_index(drop=True), positive_class)["roc_auc"] for b in range(3)]
    got = _block_scores(spec, y, preds, 3)
    assert got == pytest.approx(expected, rel=1e-12)
    assert min(got) > 0.6  # the informative score ranks the positive class first either way
