"""Hyperparameter search: time-ordered CV on the training rows picks the better setting, within its budget;
trials are child runs of the version's run, and reproduce refits the recorded choice without searching."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.lib.model.features import build_dataset
from mlplatform_assets.lib.model.search import SearchError, run_search, with_params
from mlplatform_assets.lib.model.training import fit
from mlplatform_assets.lib.spec import SpecError, parse_spec

START = dt.date(2026, 3, 1)


def circle_spec(search: str, estimator: str = "sklearn.tree.DecisionTreeClassifier", params: str = "{}"):
    """Label = inside a circle in (a, b): a depth-1 tree cannot learn it (AUC ~0.6), a depth-4 tree can (~0.95)."""
    return parse_spec(f"""
name: circle
task: classification
source: {{uri: /nonexistent/circle.parquet}}
timestamp_column: ts
partition_start: {START.isoformat()}
target: {{column: y}}
features: {{numeric: [a, b, noise]}}
estimator:
  class_path: {estimator}
  params: {params}
  search: {search}
training: {{window_days: 10, holdout_days: 2, seed: 7}}
metrics: {{primary: roc_auc}}
""", "circle.yaml", {})


def circle_frames(days: int = 10, rows: int = 400, seed: int = 0, flip_holdout_days: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    frames = {}
    for i in range(days):
        day = START + dt.timedelta(days=i)
        a, b = rng.normal(size=rows), rng.normal(size=rows)
        y = (a * a + b * b < 1.4).astype(int)
        if i >= days - flip_holdout_days:
            y = 1 - y  # a different holdout: must not change anything the search does
        ts = pd.Timestamp(day) + pd.to_timedelta(rng.integers(0, 86_400, rows), unit="s")
        frames[day] = pd.DataFrame({"ts": ts, "a": a, "b": b, "noise": rng.normal(size=rows), "y": y})
    return frames


def dataset(spec, **kwargs):
    return build_dataset(spec, circle_frames(**kwargs), ["a", "b", "noise"], [])


@pytest.mark.parametrize("method", ["random", "halving"])
def test_search_chooses_the_better_setting_on_training_rows_only(method):
    spec = circle_spec(f"{{method: {method}, space: {{max_depth: [4, 1]}}, trials: 5, cv_splits: 3}}")
    result = run_search(spec, dataset(spec))

    assert result.chosen == {"max_depth": 4}
    by_depth = {t.params["max_depth"]: t for t in result.trials if t.round == 0}
    assert by_depth[4].score > 0.9 and by_depth[1].score < 0.7
    assert result.best_score == by_depth[4].score and result.stopped == "trials"
    assert all(len(t.fold_scores) == 3 and t.error is None for t in result.trials)
    # The holdout never enters the search: another holdout gives exactly the same trials.
    other = run_search(spec, dataset(spec, flip_holdout_days=2))
    assert [(t.params, t.score) for t in other.trials] == [(t.params, t.score) for t in result.trials]


def test_halving_drops_the_worse_setting_after_a_cheap_round():
    spec = circle_spec("{method: halving, space: {max_depth: [1, 2, 3, 4, 5, 6, 8, 10, 12]}, trials: 9}")
    ds = dataset(spec, rows=250)
    result = run_search(spec, ds)

    rounds = sorted({t.round for t in result.trials})
    assert rounds == [0, 1]  # 9 settings on 1/9 of the rows, then the best 3 on 1/3: one left
    first = [t for t in result.trials if t.round == 0]
    second = [t for t in result.trials if t.round == 1]
    assert len(first) == 9 and len(second) == 3
    assert first[0].rows < second[0].rows < len(ds.train)
    assert 1 not in [t.params["max_depth"] for t in second]
    assert result.chosen["max_depth"] >= 2 and result.chosen in [t.params for t in second]


def test_ranges_are_sampled_with_the_seed_and_the_seconds_budget_stops_new_trials():
    space = "{max_depth: {low: 1, high: 6}, min_samples_leaf: {low: 0.01, high: 0.2, log: true}}"
    spec = circle_spec(f"{{space: {space}, trials: 4}}")
    ds = dataset(spec, days=5)
    one, two = run_search(spec, ds), run_search(spec, ds)
    assert [t.params for t in one.trials] == [t.params for t in two.trials] and len(one.trials) == 4
    assert all(isinstance(t.params["max_depth"], int) and 1 <= t.params["max_depth"] <= 6 for t in one.trials)
    assert all(isinstance(t.params["min_samples_leaf"], float) for t in one.trials)

    hurried = circle_spec(f"{{space: {space}, trials: 50, max_seconds: 0.001}}")
    result = run_search(hurried, ds)
    assert len(result.trials) == 1 and result.stopped == "max_seconds"  # the first trial always runs


def test_fit_uses_the_chosen_params_and_a_pinned_spec_does_not_search():
    spec = circle_spec("{space: {max_depth: [1, 4]}, trials: 2}")
    ds = dataset(spec)
    searched = fit(spec, ds)
    assert searched.search.chosen == {"max_depth": 4}
    assert searched.pipeline.named_steps["model"].get_params()["max_depth"] == 4
    assert searched.metrics["roc_auc"] > 0.9

    pinned = with_params(spec, searched.search.chosen)
    assert pinned.estimator.search is None and pinned.estimator.params == {"max_depth": 4}
    refit = fit(pinned, ds)
    assert refit.search is None
    pd.testing.assert_frame_equal(refit.holdout_predictions, searched.holdout_predictions)


def test_search_space_errors_name_the_parameter_and_the_problem():
    cases = {
        "{space: {max_depth: [0]}}": "search.space.max_depth: value 0: DecisionTreeClassifier: The 'max_depth'",
        "{space: {depth: [1]}}": "search.space.depth: value 1: unknown parameter(s) ['depth']",
        "{space: {max_depth: {low: 5, high: 2}}}": "space: max_depth: low (5) must be smaller than high (2)",
        "{space: {max_depth: []}}": "space: max_depth: the list of values is empty",
        "{space: {max_depth: 3}}": "space: max_depth: expected a list of values or a mapping with low, high",
        "{space: {max_depth: [2]}, trials: 0}": "estimator.search.trials: Input should be greater than or equal to 1",
    }
    for search, message in cases.items():
        with pytest.raises(SpecError, match="circle.yaml: estimator") as err:
            circle_spec(search)
        assert message in str(err.value), (search, str(err.value))
    with pytest.raises(SpecError, match=r"search.space: \['max_depth'\] also set in params"):
        circle_spec("{space: {max_depth: [2]}}", params="{max_depth: 3}")


def test_too_few_rows_for_the_folds_is_a_clear_error():
    spec = circle_spec("{space: {max_depth: [2]}, cv_splits: 10}")
    with pytest.raises(SearchError, match="too few for 10 time-ordered folds"):
        run_search(spec, dataset(spec, days=5, rows=8))


def test_trials_are_child_runs_and_reproduce_refits_the_choice_without_searching(small_churn_spec, platform_env,
                                                                                 monkeypatch):
    """End to end on the real MLflow store: the version records its choice; reproduce matches it exactly."""
    from mlplatform_assets.lib.data.storage import ObjectStore
    from mlplatform_assets.lib.model import search
    from mlplatform_assets.lib.model.lifecycle import (
        ingest_days,
        load_training_dataset,
        reproduce,
        store_validated,
        train_and_register,
    )
    from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
    from mlplatform_assets.lib.spec import load_spec
    from mlplatform_tests.conftest import write_small_spec

    write_small_spec(platform_env.models_dir, str(small_churn_spec.source_dir),
                     params="{max_iter: 300}\n  search: {space: {C: [0.00001, 1.0]}, trials: 2, cv_splits: 2}")
    spec = load_spec(small_churn_spec.spec_path, platform_env.state_dir)
    store = ObjectStore(platform_env.data_uri)
    ingested = ingest_days(spec, small_churn_spec.days, store)
    store_validated(spec, [d.day for d in ingested if d.passed], store)
    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)
    version = train_and_register(spec, load_training_dataset(spec, store), registry, "test", None)[0]

    client = registry.client
    run = client.get_run(version.run_id)
    children = client.search_runs([version.experiment_id], f"tags.mlflow.parentRunId = '{version.run_id}'")
    assert sorted(c.data.params["C"] for c in children) == ["1.0", "1e-05"]
    assert all("cv_roc_auc" in c.data.metrics and c.info.status == "FINISHED" for c in children)
    best = max(children, key=lambda c: c.data.metrics["cv_roc_auc"])
    assert run.data.params["search.chosen.C"] == best.data.params["C"]
    assert float(run.data.params["estimator.C"]) == float(best.data.params["C"])
    assert run.data.params["search.trials_run"] == "2"
    summary = search.recorded_summary(spec, registry, version.version)  # what the evaluation report shows
    assert str(summary["chosen"]["C"]) == best.data.params["C"] and len(summary["trials"]) == 2
    runs_before = len(client.search_runs([version.experiment_id]))
    monkeypatch.setattr(search, "run_search", lambda *args: pytest.fail("reproduce must not search again"))
    result = reproduce(registry, store, spec.name, version.version)

    assert result.identical and result.data_matches, result.message
    assert len(client.search_runs([version.experiment_id])) == runs_before  # no search, no new runs


def test_report_section_summarises_the_search():
    import json
    from types import SimpleNamespace

    from mlplatform_assets.lib.model.report import ReportInput, search_section
    from mlplatform_assets.lib.model.search import search_artifact

    spec = circle_spec("{space: {max_depth: [1, 4]}, trials: 2, cv_splits: 2}")
    result = run_search(spec, dataset(spec, days=5, rows=200))
    found = json.loads(search_artifact(result))  # what evaluation reads back from the version's run
    text = search_section(ReportInput(spec, SimpleNamespace(extra={"search": found}), pd.Series(dtype=float)))
    assert "random, 2 time-ordered folds" in text and "Chosen: max_depth=4 (CV roc_auc" in text
    assert "2 trials (0 failed)" in text and "stopped by the trial budget" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "trial" not in line]
    assert rows[0].endswith("| max_depth=4 |") and rows[1].endswith("| max_depth=1 |")  # best first
    assert search_section(ReportInput(spec, SimpleNamespace(extra={"search": None}), pd.Series(dtype=float))) is None


def test_search_values_cannot_come_from_the_environment():
    with pytest.raises(SpecError, match=r"circle.yaml: estimator.search.space.solver.0: estimator.search values are "
                                        r"recorded with every trial; write them literally"):
        parse_spec(f"""
name: circle
task: classification
source: {{uri: /nonexistent/circle.parquet}}
timestamp_column: ts
partition_start: {START.isoformat()}
target: {{column: y}}
features: {{numeric: [a, b]}}
estimator:
  class_path: sklearn.linear_model.LogisticRegression
  search: {{space: {{solver: ["${{SOLVER}}", lbfgs]}}}}
metrics: {{primary: roc_auc}}
""", "circle.yaml", {"SOLVER": "liblinear"})


def test_a_setting_that_cannot_fit_is_recorded_and_skipped():
    # Both values pass the estimator's parameter checks; weights for a class the data lacks fail at fit time.
    spec = circle_spec("{space: {class_weight: [{5: 1.0}, balanced]}, trials: 2, cv_splits: 2}")
    result = run_search(spec, dataset(spec, days=5, rows=100))
    failed = [t for t in result.trials if t.error]
    assert result.chosen == {"class_weight": "balanced"} and len(result.trials) == 2
    assert len(failed) == 1 and failed[0].params == {"class_weight": {5: 1.0}} and failed[0].score is None
    assert "not in class_weight" in failed[0].error and result.summary()["trials_failed"] == 1

    only_bad = circle_spec("{space: {class_weight: [{5: 1.0}]}, cv_splits: 2}")
    with pytest.raises(SearchError, match=r"every trial failed; trial 0 \{'class_weight': \{5: 1.0\}\}: ValueError"):
        run_search(only_bad, dataset(only_bad, days=5, rows=100))
