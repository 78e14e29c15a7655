"""The gate with uncertainty, baselines and slices, on generated data whose truth is known."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mlplatform_assets.lib.data import validation
from mlplatform_assets.lib.model.evaluation import decide_promotion
from mlplatform_assets.lib.model.features import TrainingDataset, build_dataset
from mlplatform_assets.lib.model.rigor import assess, fit_baselines, slice_labels
from mlplatform_assets.lib.model.training import compute_metrics, fit
from mlplatform_assets.lib.model.uncertainty import _resampled, paired_interval
from mlplatform_assets.lib.spec import SliceSpec, SpecError, parse_spec

SPEC = """
name: m
task: {task}
source: {{uri: /tmp/x}}
timestamp_column: t
partition_start: 2026-01-01
target: {{column: y}}
features: {features}
estimator: {{class_path: {estimator}}}
metrics: {{primary: {metric}}}
training: {{window_days: 10, holdout_days: 2, min_partitions: 2}}
promotion: {promotion}
evaluation: {evaluation}
"""


def make_spec(promotion="{}", evaluation="{}", task="classification", metric="roc_auc",
              features="{numeric: [x1, x2], categorical: [region]}", estimator=None):
    estimator = estimator or ("sklearn.linear_model.LogisticRegression" if task == "classification"
                              else "sklearn.linear_model.Ridge")
    return parse_spec(SPEC.format(task=task, metric=metric, promotion=promotion, evaluation=evaluation,
                                  features=features, estimator=estimator), variables={})


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def churn_like(n, seed, regions=("a", "b", "c")):
    """y depends on x1 only (logistic); x2 is noise; region is uniform."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({"t": pd.Timestamp("2026-01-01"), "x1": x1, "x2": x2,
                         "region": rng.choice(list(regions), n), "y": (rng.random(n) < sigmoid(2 * x1)).astype(int)})


def dataset_of(train, holdout, numeric=("x1", "x2"), categorical=("region",)):
    return TrainingDataset(train=train.reset_index(drop=True), holdout=holdout.reset_index(drop=True),
                           numeric=list(numeric), categorical=list(categorical), target="y", timestamp="t",
                           train_days=[dt.date(2026, 1, 1)], holdout_days=[dt.date(2026, 1, 2)], data_sha256="-")


def scores(values):
    p = sigmoid(np.asarray(values, dtype=float))
    return pd.DataFrame({"prediction": (p > 0.5).astype(int), "probability": p})


def gate(spec, dataset, challenger, champion):
    rigor = assess(spec, dataset, challenger, champion)
    primary = spec.metrics.primary
    y = dataset.y("holdout")
    ch = compute_metrics(spec.task, [primary], y, challenger, spec.target.positive_class)[primary]
    champ = compute_metrics(spec.task, [primary], y, champion, spec.target.positive_class)[primary] if champion is not None else None
    return decide_promotion(spec, "2", ch, "1" if champion is not None else None, champ, rigor)


# --- the gate with uncertainty -------------------------------------------------------------------------------
def test_small_real_gain_is_promoted_on_a_large_holdout_and_refused_on_a_tiny_one():
    rng = np.random.default_rng(2)
    base = churn_like(300, seed=2)
    # The champion is the challenger plus noise: a real, small gain in AUC (+0.0063, as in the issue).
    noise = rng.normal(size=(2, len(base)))
    challenger = 2 * base.x1 + noise[0]
    champion = challenger + 0.5 * noise[1]
    # The large holdout repeats the tiny one 60 times: every model's AUC, and so the point gain, is identical.
    large = pd.concat([base] * 60, ignore_index=True)
    tiny_ds, large_ds = dataset_of(base, base), dataset_of(base, large)
    spec = make_spec("{must_beat_baseline: false}")
    tiny = gate(spec, tiny_ds, scores(challenger), scores(champion))
    big = gate(spec, large_ds, scores(np.tile(challenger, 60)), scores(np.tile(champion, 60)))

    assert big.delta == pytest.approx(tiny.delta) and 0.005 < tiny.delta < 0.01
    assert big.promote, big.reason
    assert big.interval["method"] == "delong" and big.rows == len(large) and big.interval["lower"] > 0
    assert not tiny.promote and "not significant" in tiny.reason and tiny.rows == 300
    assert tiny.interval["lower"] < 0 < tiny.interval["upper"]
    # The point rule, on the same tiny holdout, would have promoted: that is what `significant` prevents.
    point = gate(make_spec("{must_beat_baseline: false, require: point}"), tiny_ds, scores(challenger),
                 scores(champion))
    assert point.promote and point.require == "point"


def test_min_improvement_applies_to_the_lower_bound():
    base = churn_like(20_000, seed=3)
    rng = np.random.default_rng(4)
    challenger, champion = 2 * base.x1 + 0.5 * rng.normal(size=len(base)), 2 * base.x1 + rng.normal(size=len(base))
    ds = dataset_of(base.head(100), base)
    passed = gate(make_spec("{must_beat_baseline: false, min_improvement: 0.001}"), ds, scores(challenger),
                  scores(champion))
    assert passed.promote
    lower = passed.interval["lower"]
    refused = gate(make_spec(f"{{must_beat_baseline: false, min_improvement: {lower + 0.001:.6f}}}"), ds,
                   scores(challenger), scores(champion))
    assert not refused.promote and "does not clear min_improvement" in refused.reason
    assert refused.delta > lower + 0.001  # the point estimate alone would have cleared it


def test_a_regression_gain_uses_the_paired_bootstrap():
    rng = np.random.default_rng(5)
    n = 5000
    y = rng.normal(30, 5, n)
    frame = pd.DataFrame({"t": pd.Timestamp("2026-01-01"), "x1": y + rng.normal(0, 2, n), "x2": rng.normal(size=n),
                          "region": "a", "y": y})
    spec = make_spec("{must_beat_baseline: false}", task="regression", metric="rmse")
    ds = dataset_of(frame, frame)
    better = pd.DataFrame({"prediction": y + rng.normal(0, 1.0, n)})
    worse = pd.DataFrame({"prediction": y + rng.normal(0, 1.1, n)})
    d = gate(spec, ds, better, worse)
    assert d.promote and d.interval["method"] == "bootstrap" and d.interval["resamples"] == 1000
    assert d.interval["lower"] > 0 and d.delta > 0  # lower rmse is better: positive delta
    d = gate(spec, ds, worse, better)
    assert not d.promote and d.interval["upper"] < 0


def test_delong_agrees_with_a_bootstrap_of_the_auc_difference():
    rng = np.random.default_rng(6)
    base = churn_like(2000, seed=7)
    a, b = 2 * base.x1 + rng.normal(size=2000), 2 * base.x1 + 1.4 * rng.normal(size=2000)
    iv = paired_interval("classification", "roc_auc", "maximize", base.y, scores(a), scores(b), 1)
    idx = rng.integers(0, 2000, size=(400, 2000))
    y = base.y.to_numpy()
    boot = [roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]) for i in idx]
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert iv.method == "delong"
    assert iv.delta == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert iv.lower == pytest.approx(lo, abs=0.006) and iv.upper == pytest.approx(hi, abs=0.006)


def test_intervals_score_the_positive_class_when_it_is_the_smaller_label():
    base = churn_like(3000, seed=23)
    rng = np.random.default_rng(24)
    y = np.where(base.y == 1, "churned", "stayed")
    better, worse = sigmoid(2 * base.x1 + rng.normal(size=3000)), sigmoid(2 * base.x1 + 2 * rng.normal(size=3000))

    def frame(p_churn):  # as predict_frame gives it: probability of the larger label, "stayed"
        return pd.DataFrame({"prediction": np.where(p_churn > 0.5, "churned", "stayed"), "probability": 1 - p_churn})

    auc = paired_interval("classification", "roc_auc", "maximize", y, frame(better), frame(worse), "churned")
    assert auc.delta == pytest.approx(roc_auc_score(base.y, better) - roc_auc_score(base.y, worse))
    assert auc.lower > 0
    loss = paired_interval("classification", "log_loss", "minimize", y, frame(better), frame(worse), "churned")
    assert loss.lower > 0  # lower log loss is better: the better model's gain is positive


@pytest.mark.parametrize("task, metric", [
    ("classification", "accuracy"), ("classification", "f1"), ("classification", "precision"),
    ("classification", "recall"), ("classification", "log_loss"), ("regression", "rmse"), ("regression", "mae"),
    ("regression", "r2"), ("regression", "mape"), ("multiclass", "f1"), ("multiclass", "recall")])
def test_vectorised_resampled_metrics_equal_scikit_learn_on_each_resample(task, metric):
    rng = np.random.default_rng(8)
    n = 500
    if task == "regression":
        y = rng.normal(10, 3, n)
        preds = pd.DataFrame({"prediction": y + rng.normal(0, 1, n)})
    elif task == "multiclass":
        y = rng.integers(0, 3, n)
        preds = pd.DataFrame({"prediction": np.where(rng.random(n) < 0.6, y, rng.integers(0, 3, n))})
    else:
        base = churn_like(n, seed=9)
        y, preds = base.y.to_numpy(), scores(2 * base.x1 + rng.normal(size=n))
    kind = "regression" if task == "regression" else "classification"
    idx = rng.integers(0, n, size=(4, n))
    got = _resampled(kind, metric, y, preds, None, idx)
    want = [compute_metrics(kind, [metric], pd.Series(y[i]), preds.iloc[i].reset_index(drop=True))[metric]
            for i in idx]
    assert got == pytest.approx(want)


def test_above_max_rows_the_bootstrap_resamples_fewer_rows_and_rescales():
    rng = np.random.default_rng(10)
    n = 40_000
    y = rng.normal(0, 1, n)
    a, b = pd.DataFrame({"prediction": y + rng.normal(0, 1, n)}), pd.DataFrame({"prediction": y + rng.normal(0, 1, n)})
    full = paired_interval("regression", "mae", "minimize", y, a, b, max_rows=n, resamples=300)
    capped = paired_interval("regression", "mae", "minimize", y, a, b, max_rows=5000, resamples=300)
    assert capped.resample_rows == 5000 and full.resample_rows is None
    # The rescaled m-out-of-n interval is as wide as the full bootstrap's (not sqrt(8) times wider).
    assert (capped.upper - capped.lower) == pytest.approx(full.upper - full.lower, rel=0.2)


# --- baselines -------------------------------------------------------------------------------------------------
def test_a_model_worse_than_the_linear_baseline_is_refused_even_without_a_champion():
    train, holdout = churn_like(3000, seed=11), churn_like(3000, seed=12)
    ds = dataset_of(train, holdout)
    spec = make_spec()
    rng = np.random.default_rng(13)
    # Better than a constant, clearly worse than a logistic regression on x1.
    weak = gate(spec, ds, scores(2 * holdout.x1 + 3 * rng.normal(size=len(holdout))), None)
    assert not weak.promote
    assert "worse than the simpler baseline linear (LogisticRegression)" in weak.reason
    assert "the baseline is better by more than min_improvement 0" in weak.reason
    assert weak.baselines["linear"]["upper"] < 0 < weak.baselines["prior"]["lower"]
    # The truth itself is promoted as a first champion: it is no worse than the linear model.
    good = gate(spec, ds, scores(2 * holdout.x1), None)
    assert good.promote and "no champion yet" in good.reason and "passes the baseline checks" in good.reason
    # A constant predictor is not better than the prior.
    constant = gate(spec, ds, scores(np.zeros(len(holdout))), None)
    assert not constant.promote and "not better than the baseline prior (DummyClassifier)" in constant.reason
    # Switched off, the baselines are neither fitted nor checked.
    off = gate(make_spec("{must_beat_baseline: false}"), ds, scores(2 * holdout.x1 + 3 * rng.normal(size=3000)), None)
    assert off.promote and off.baselines is None


def test_a_baseline_better_by_less_than_min_improvement_is_a_note_not_a_refusal():
    train, holdout = churn_like(3000, seed=11), churn_like(3000, seed=12)
    ds = dataset_of(train, holdout)
    rng = np.random.default_rng(19)
    slightly_worse = scores(2 * holdout.x1 + 0.8 * rng.normal(size=len(holdout)))
    strict = gate(make_spec(), ds, slightly_worse, None)
    assert not strict.promote and "worse than the simpler baseline linear" in strict.reason
    shortfall = -strict.baselines["linear"]["delta"]
    tolerant = gate(make_spec(f"{{min_improvement: {shortfall + 0.02:.4f}}}"), ds, slightly_worse, None)
    assert tolerant.promote and "note: the simpler baseline linear (LogisticRegression)" in tolerant.reason


def test_regression_baselines_are_the_mean_and_ridge_on_the_same_features():
    rng = np.random.default_rng(14)
    frame = churn_like(2000, seed=15)
    frame["y"] = 3 * frame.x1 + (frame.region == "b") * 2 + rng.normal(0, 0.5, len(frame))
    spec = make_spec(task="regression", metric="rmse")
    ds = dataset_of(frame.head(1500), frame.tail(500))
    fitted = fit_baselines(spec, ds)
    assert {k: v[0] for k, v in fitted.items()} == {"mean": "sklearn.dummy.DummyRegressor",
                                                    "linear": "sklearn.linear_model.Ridge"}
    mean_preds, linear_preds = fitted["mean"][1].prediction, fitted["linear"][1].prediction
    assert mean_preds.nunique() == 1 and mean_preds.iloc[0] == pytest.approx(frame.head(1500).y.mean())
    # Ridge used the one-hot region too (the spec's own preprocessing): close to the noise floor.
    assert np.sqrt(np.mean((linear_preds.to_numpy() - ds.y("holdout").to_numpy()) ** 2)) < 0.6
    worse_than_mean = gate(spec, ds, pd.DataFrame({"prediction": np.full(500, frame.y.mean() + 3)}), None)
    assert not worse_than_mean.promote and "baseline mean (DummyRegressor)" in worse_than_mean.reason


# --- slices ----------------------------------------------------------------------------------------------------
def _slice_case(max_slice_regression):
    holdout = pd.concat([churn_like(3000, seed=16), churn_like(60, seed=17, regions=("d",))], ignore_index=True)
    rng = np.random.default_rng(18)
    champion = 2 * holdout.x1 + rng.normal(size=len(holdout))
    # Much better on a and b, clearly worse on c; terrible on the 60 rows of d (too few to gate).
    noise = holdout.region.map({"a": 0.2, "b": 0.2, "c": 1.2, "d": 6.0}).to_numpy()
    challenger = 2 * holdout.x1 + noise * rng.normal(size=len(holdout))
    promotion = "{must_beat_baseline: false, min_slice_rows: 200"
    promotion += f", max_slice_regression: {max_slice_regression}}}" if max_slice_regression is not None else "}"
    spec = make_spec(promotion, evaluation="{slices: [region, {column: x2, bins: [0]}]}")
    ds = dataset_of(holdout.head(10), holdout)
    return gate(spec, ds, scores(challenger), scores(champion)), assess(spec, ds, scores(challenger), scores(champion))


def test_a_challenger_better_overall_but_worse_on_a_slice_is_refused_naming_the_slice():
    decision, rigor = _slice_case(0.02)
    assert decision.interval["lower"] > 0  # significantly better overall
    assert not decision.promote
    assert "slice region=c" in decision.reason and "max_slice_regression 0.02" in decision.reason
    rows = {(r["column"], r["slice"]): r for r in rigor.slices}
    assert rows["region", "c"]["delta"] < -0.02 and rows["region", "c"]["gated"]
    assert rows["region", "a"]["delta"] > 0 and rows["region", "a"]["lower"] > 0
    assert not rows["region", "d"]["gated"] and rows["region", "d"]["rows"] == 60  # worse, but too small to gate
    assert {r["slice"] for r in rigor.slices if r["column"] == "x2"} == {"< 0", ">= 0"}
    assert sum(r["rows"] for r in rigor.slices if r["column"] == "region") == 3060
    gap = next(g for g in rigor.slice_gaps if g["column"] == "region")
    assert gap["worst"] == "c" and gap["best"] in ("a", "b") and gap["gap"] > 0.05


def test_without_max_slice_regression_slices_are_reported_not_gated():
    decision, rigor = _slice_case(None)
    assert decision.promote, decision.reason
    assert decision.largest_slice_gap["column"] == "region" and rigor.slices


def test_slice_labels_for_bins_quantiles_missing_and_many_levels():
    values = pd.Series([-5.0, 0.0, 9.99, 10.0, 60.0, None])
    assert slice_labels(SliceSpec(column="v", bins=[0, 10, 50]), values).tolist() == [
        "< 0", "[0, 10)", "[0, 10)", "[10, 50)", ">= 50", "(missing)"]
    quartiles = slice_labels(SliceSpec(column="v", quantiles=4), pd.Series(np.arange(100.0)))
    assert quartiles.value_counts().tolist() == [25, 25, 25, 25]
    many = pd.Series([f"level{i % 30}" for i in range(300)] + [None])
    labels = slice_labels(SliceSpec(column="v"), many)
    assert labels.nunique() == 20 and (labels == "(other)").sum() == 301 - 19 * 10 and labels.iloc[-1] == "(other)"


def test_a_sensitive_slice_attribute_is_carried_for_evaluation_but_never_seen_by_the_model():
    spec = make_spec(features="{infer: true}", evaluation="{slices: [{column: group, sensitive: true}]}")
    days = [dt.date(2026, 1, d) for d in range(1, 7)]
    raw = {d: churn_like(400, seed=d.day).assign(t=pd.Timestamp(d) + pd.Timedelta(hours=1)) for d in days}
    for frame in raw.values():
        frame["group"] = np.where(frame.y == 1, "g1", "g0")  # the attribute leaks the label completely
    numeric, categorical = validation.infer_feature_columns(spec, raw[days[0]])
    assert "group" not in numeric + categorical and set(numeric) == {"x1", "x2"}
    validated = {d: validation.clean_day(spec, f, numeric, categorical) for d, f in raw.items()}
    assert "group" in validated[days[0]].columns
    ds = build_dataset(spec, validated, numeric, categorical)
    assert ds.evaluation_columns == ["group"] and "group" in ds.holdout and "group" not in ds.X("holdout")
    result = fit(spec, ds)
    assert "group" not in result.pipeline.feature_names_in_
    assert result.metrics["roc_auc"] < 0.95  # a model that saw the leak would be perfect
    rigor = assess(spec, ds, result.holdout_predictions, None)
    assert {r["slice"] for r in rigor.slices} == {"g0", "g1"}


def test_a_slice_column_missing_from_the_data_is_a_clear_error():
    from mlplatform_assets.lib.model.features import DatasetError

    spec = make_spec(evaluation="{slices: [{column: gender, sensitive: true}]}")
    days = [dt.date(2026, 1, d) for d in range(1, 5)]
    frames = {d: churn_like(100, seed=d.day) for d in days}
    with pytest.raises(DatasetError, match=r"evaluation.slices: column\(s\) \['gender'\] are not in the validated"):
        build_dataset(spec, frames, ["x1", "x2"], ["region"])


@pytest.mark.parametrize("fragment, message", [
    ("promotion: {require: maybe}", "promotion.require: Input should be 'significant' or 'point'"),
    ("promotion: {confidence: 1.0}", "promotion.confidence"),
    ("promotion: {max_slice_regression: -0.1}", "promotion.max_slice_regression"),
    ("evaluation: {slices: [{column: x1, sensitive: true}]}", "'x1' is sensitive but listed as a model feature"),
    ("evaluation: {slices: [y]}", "'y' is the target or timestamp column"),
    ("evaluation: {slices: [{column: x1, bins: [3, 1]}]}", "bins must be finite, strictly increasing"),
    ("evaluation: {slices: [{column: x1, bins: [1], quantiles: 3}]}", "give bins or quantiles, not both"),
    ("evaluation: {slices: [{column: region, quantiles: 4}]}", "'region' is categorical"),
    ("evaluation: {slices: [region, region]}", "['region'] listed more than once"),
    ("evaluation: {slices: [{colum: region}]}", "evaluation.slices.0.colum: unknown field"),
])
def test_spec_errors_name_the_field(fragment, message):
    text = SPEC.format(task="classification", metric="roc_auc", promotion="{}", evaluation="{}",
                       features="{numeric: [x1, x2], categorical: [region]}",
                       estimator="sklearn.linear_model.LogisticRegression")
    key = fragment.split(":")[0]
    text = "\n".join(line for line in text.splitlines() if not line.startswith(key + ":")) + "\n" + fragment + "\n"
    with pytest.raises(SpecError) as err:
        parse_spec(text, "m.yaml", variables={})
    assert message in str(err.value) and str(err.value).startswith("m.yaml: ")


def test_the_markdown_summary_shows_the_interval_baselines_and_slices():
    from mlplatform_assets.lib.model.lifecycle import Evaluation
    from mlplatform_assets.lib.model.report import evaluation_markdown

    train, holdout = churn_like(2000, seed=20), churn_like(2000, seed=21)
    spec = make_spec("{min_slice_rows: 100}", evaluation="{slices: [region]}")
    ds = dataset_of(train, holdout)
    rng = np.random.default_rng(22)
    challenger, champion = scores(2 * holdout.x1), scores(2 * holdout.x1 + rng.normal(size=2000))
    rigor = assess(spec, ds, challenger, champion)
    decision = gate(spec, ds, challenger, champion)
    metrics = {"roc_auc": compute_metrics("classification", ["roc_auc"], ds.y("holdout"), challenger)["roc_auc"]}
    ev = Evaluation(decision, metrics, None, challenger, champion, extra={"rigor": rigor.as_dict()})
    text = evaluation_markdown(spec, ev, ds.y("holdout"))
    iv = rigor.versus_champion
    assert "#### Gain over the champion (roc_auc)" in text
    assert f"{iv.delta:+.4f} [{iv.lower:+.4f}, {iv.upper:+.4f}] at 95% confidence on 2000 holdout rows (DeLong)" in text
    assert "| linear | LogisticRegression |" in text and "| prior | DummyClassifier | 0.5000 |" in text
    assert "#### Slices (roc_auc)" in text and "Largest gap in region:" in text
    assert text.count("| region |") == 3
    # Without the data (an evaluation from before the rigor existed) the sections are simply absent.
    assert "Gain over the champion" not in evaluation_markdown(spec, Evaluation(decision, metrics, None, challenger,
                                                                                 champion), ds.y("holdout"))
