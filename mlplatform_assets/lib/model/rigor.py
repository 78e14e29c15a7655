"""Model rigor for the promotion gate: how sure the gain over the champion is, whether simple baselines do as
well, and whether quality holds on slices of the holdout. See docs/evaluation.md for the rules in plain words.

:func:`assess` computes everything on the holdout (the challenger's and champion's predictions on the same rows)
and returns a :class:`Rigor`; the gate (:func:`~mlplatform_assets.lib.model.evaluation.decide_promotion`) reads
it through :func:`baseline_failure` and :func:`slice_failure`. Baselines are fitted here, on the training rows of
the same window, and are never registered.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlplatform_assets.lib.model.features import TrainingDataset, build_pipeline, fit_pipeline
from mlplatform_assets.lib.model.training import compute_metrics, metric_names, predict_frame
from mlplatform_assets.lib.model.uncertainty import PairedInterval, paired_interval
from mlplatform_assets.lib.spec import EstimatorSpec, ModelSpec, SliceSpec

# A linear model on ~tens of features has converged long before this many rows; the cap bounds the cost of the
# baseline at any window size (a slightly weaker baseline only makes the check more lenient, never stricter).
BASELINE_MAX_TRAIN_ROWS = 10_000
# Categorical slices: the most frequent levels, the rest pooled as "(other)".
MAX_SLICE_LEVELS = 20
MISSING_SLICE = "(missing)"
OTHER_SLICE = "(other)"

# name -> (class path, params). "trivial" predicts the training prior or mean whatever the input;
# "linear" is a regularised linear model on the same preprocessed features as the model.
BASELINES: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "classification": {"prior": ("sklearn.dummy.DummyClassifier", {"strategy": "prior"}),
                       "linear": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000, "C": 1.0})},
    "regression": {"mean": ("sklearn.dummy.DummyRegressor", {"strategy": "mean"}),
                   "linear": ("sklearn.linear_model.Ridge", {"alpha": 1.0})},
}
TRIVIAL_BASELINES = ("prior", "mean")


@dataclass
class BaselineResult:
    name: str
    estimator: str
    metrics: dict[str, float]
    versus: PairedInterval  # challenger - baseline on the primary metric (positive: the challenger is better)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "estimator": self.estimator, "metrics": self.metrics,
                "versus": self.versus.as_dict()}


@dataclass
class Rigor:
    """Everything the gate and the report need beyond the point metrics."""

    metric: str
    rows: int
    confidence: float
    versus_champion: PairedInterval | None
    baselines: list[BaselineResult] = field(default_factory=list)
    slices: list[dict[str, Any]] = field(default_factory=list)  # one row per (column, slice)
    slice_gaps: list[dict[str, Any]] = field(default_factory=list)  # per column: best vs worst slice (challenger)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "rows": self.rows, "confidence": self.confidence,
                "versus_champion": self.versus_champion.as_dict() if self.versus_champion else None,
                "baselines": [b.as_dict() for b in self.baselines], "slices": self.slices,
                "slice_gaps": self.slice_gaps}


def assess(spec: ModelSpec, dataset: TrainingDataset, challenger: pd.DataFrame,
           champion: pd.DataFrame | None) -> Rigor:
    """The interval vs the champion, the baselines (when ``promotion.must_beat_baseline``) and the slices, on the
    holdout rows ``challenger``/``champion`` predicted (in the same order)."""
    primary, direction = spec.metrics.primary, spec.metrics.direction or "maximize"
    y = dataset.y("holdout").to_numpy()
    confidence, seed = spec.promotion.confidence, spec.training.seed

    def interval(a: pd.DataFrame, b: pd.DataFrame, rows: np.ndarray | None = None) -> PairedInterval:
        if rows is not None:
            a, b = a.iloc[rows].reset_index(drop=True), b.iloc[rows].reset_index(drop=True)
        return paired_interval(spec.task, primary, direction, y if rows is None else y[rows], a, b,
                               spec.target.positive_class, confidence, seed)

    versus_champion = interval(challenger, champion) if champion is not None else None
    baselines = []
    if spec.promotion.must_beat_baseline:
        for name, (class_path, predictions) in fit_baselines(spec, dataset).items():
            metrics = compute_metrics(spec.task, metric_names(spec), dataset.y("holdout"), predictions,
                                      spec.target.positive_class)
            baselines.append(BaselineResult(name, class_path.rsplit(".", 1)[-1], metrics,
                                            interval(challenger, predictions)))
    slices, gaps = [], []
    for slice_spec in spec.evaluation.slices:
        labels = slice_labels(slice_spec, dataset.holdout[slice_spec.column])
        rows_of_column = []
        for label, positions in _groups(labels):
            ch = _metric(spec, y[positions], challenger.iloc[positions].reset_index(drop=True))
            row: dict[str, Any] = {"column": slice_spec.column, "slice": label, "rows": int(len(positions)),
                                   "gated": len(positions) >= spec.promotion.min_slice_rows,
                                   "challenger": ch, "champion": None, "delta": None, "lower": None, "upper": None}
            if champion is not None:
                iv = interval(challenger, champion, positions)
                row.update(champion=_metric(spec, y[positions], champion.iloc[positions].reset_index(drop=True)),
                           delta=_finite(iv.delta), lower=_finite(iv.lower), upper=_finite(iv.upper))
            rows_of_column.append(row)
        slices += rows_of_column
        gap = _largest_gap(rows_of_column, direction)
        if gap is not None:
            gaps.append(gap)
    return Rigor(primary, len(y), confidence, versus_champion, baselines, slices, gaps)


def fit_baselines(spec: ModelSpec, dataset: TrainingDataset) -> dict[str, tuple[str, pd.DataFrame]]:
    """Each baseline fitted on the training rows: name -> (class path, holdout predictions)."""
    X_train, y_train = dataset.X("train"), dataset.y("train")
    if len(X_train) > BASELINE_MAX_TRAIN_ROWS:
        X_train = X_train.sample(n=BASELINE_MAX_TRAIN_ROWS, random_state=spec.training.seed)
        y_train = y_train.loc[X_train.index]
    X_holdout = dataset.X("holdout")
    out = {}
    for name, (class_path, params) in BASELINES[spec.task].items():
        estimator = EstimatorSpec.model_construct(class_path=class_path, params=params, scale_numeric="always")
        if name in TRIVIAL_BASELINES:  # a constant ignores its input: nothing to preprocess
            model = estimator.load_class()(**params).fit(dataset.X("train"), dataset.y("train"))
            out[name] = (class_path, predict_frame(model, X_holdout, spec.task))
            continue
        # The spec's own pipeline (custom transformers, imputation, encoding) with the baseline as its estimator,
        # scaled because linear models need it.
        baseline_spec = spec.model_copy(update={"estimator": estimator})
        pipeline = build_pipeline(baseline_spec, dataset.numeric, dataset.categorical)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a not fully converged baseline is still a baseline
            fit_pipeline(baseline_spec, pipeline, X_train, y_train)
        out[name] = (class_path, predict_frame(pipeline, X_holdout, spec.task))
    return out


def slice_labels(slice_spec: SliceSpec, values: pd.Series) -> pd.Series:
    """Each row's slice: the category, or the numeric bin (``< a``, ``[a, b)``, ``>= b``); missing values form
    their own slice."""
    values = values.reset_index(drop=True)
    if slice_spec.numeric:
        numbers = pd.to_numeric(values, errors="coerce")
        if slice_spec.bins is not None:
            edges = list(slice_spec.bins)
        else:
            qs = np.linspace(0, 1, slice_spec.quantiles + 1)[1:-1]
            present = numbers.dropna().to_numpy()
            edges = sorted(set(np.quantile(present, qs).tolist())) if len(present) else []
        names = ([f"< {edges[0]:g}"] + [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:])]
                 + [f">= {edges[-1]:g}"]) if edges else ["all"]
        codes = np.searchsorted(np.asarray(edges, dtype=float), numbers.to_numpy(dtype=float), side="right")
        labels = pd.Series(np.asarray(names, dtype=object)[np.minimum(codes, len(names) - 1)])
        return labels.where(numbers.notna(), MISSING_SLICE)
    labels = values.astype(object).where(values.notna(), MISSING_SLICE).astype(str)
    top = labels.value_counts().index[:MAX_SLICE_LEVELS - 1] if labels.nunique() > MAX_SLICE_LEVELS else None
    return labels.where(labels.isin(top), OTHER_SLICE) if top is not None else labels


def _groups(labels: pd.Series) -> list[tuple[str, np.ndarray]]:
    """(label, row positions), largest slice first."""
    groups = labels.groupby(labels, sort=False).indices
    return sorted(((str(k), np.asarray(v)) for k, v in groups.items()), key=lambda kv: (-len(kv[1]), kv[0]))


def _metric(spec: ModelSpec, y: np.ndarray, predictions: pd.DataFrame) -> float | None:
    value = compute_metrics(spec.task, [spec.metrics.primary], pd.Series(y), predictions,
                            spec.target.positive_class)[spec.metrics.primary]
    return _finite(value)


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _largest_gap(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    """The challenger's best and worst gated slices of one column (parity), with the gap between them."""
    scored = [r for r in rows if r["gated"] and r["challenger"] is not None]
    if len(scored) < 2:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    best = max(scored, key=lambda r: sign * r["challenger"])
    worst = min(scored, key=lambda r: sign * r["challenger"])
    return {"column": best["column"], "best": best["slice"], "best_value": best["challenger"],
            "worst": worst["slice"], "worst_value": worst["challenger"],
            "gap": abs(best["challenger"] - worst["challenger"])}


# --- the gate's checks (each returns the refusal reason, or None) ------------------------------------------------
def clears(value: float, threshold: float) -> bool:
    """``value`` clears ``threshold``; a zero threshold needs a strictly positive value (a tie is no gain)."""
    return value > 0 if threshold == 0 else value >= threshold


def gain_is_enough(spec: ModelSpec, iv: PairedInterval) -> bool:
    """The gain over the champion clears ``min_improvement``: its interval's lower bound (significant) or its
    point estimate (point)."""
    value = iv.delta if spec.promotion.require == "point" else iv.lower
    return not math.isnan(value) and clears(value, spec.promotion.min_improvement)


def baseline_failure(spec: ModelSpec, rigor: Rigor) -> str | None:
    """The challenger must beat the trivial baseline (shown by the interval's lower bound when ``significant``),
    and no baseline may beat it by more than ``min_improvement`` (shown by the upper bound when ``significant``, by
    the point otherwise): the team's smallest meaningful difference decides a tie in both directions."""
    significant = spec.promotion.require == "significant"
    tolerance = spec.promotion.min_improvement
    metric = rigor.metric
    for b in rigor.baselines:
        iv = b.versus
        value = b.metrics.get(metric)
        described = f"baseline {b.name} ({b.estimator}) {metric}={value:.4f}, challenger {iv.delta:+.4f}"
        interval = f" [{iv.lower:+.4f}, {iv.upper:+.4f}] at {rigor.confidence:.0%} on {iv.rows} rows"
        if b.name in TRIVIAL_BASELINES:
            shown = iv.lower if significant else iv.delta
            if math.isnan(shown) or shown <= 0:
                return (f"not better than the {described}" + (interval if significant else "")
                        + ("; the gain over a constant prediction is not significant" if significant else ""))
        else:
            shown = iv.upper if significant else iv.delta
            if not math.isnan(shown) and shown < -tolerance:
                return (f"worse than the simpler {described}" + (interval if significant else "")
                        + f": the baseline is better by more than min_improvement {tolerance:g}")
    return None


def baseline_note(rigor: Rigor) -> str | None:
    """A promoted challenger that a simpler baseline matches or beats on the point estimate (within the
    tolerance of :func:`baseline_failure`): worth knowing, not a refusal."""
    better = [b for b in rigor.baselines if b.name not in TRIVIAL_BASELINES and b.versus.delta <= 0]
    if not better:
        return None
    b = better[0]
    return (f"note: the simpler baseline {b.name} ({b.estimator}) scores {rigor.metric}="
            f"{b.metrics.get(rigor.metric):.4f}, as good or better ({-b.versus.delta:+.4f}); consider a simpler "
            "estimator")


def slice_failure(spec: ModelSpec, rigor: Rigor) -> str | None:
    """The worst gated slice whose loss against the champion exceeds ``promotion.max_slice_regression``."""
    limit = spec.promotion.max_slice_regression
    if limit is None:
        return None
    losing = [r for r in rigor.slices if r["gated"] and r["delta"] is not None and r["delta"] < -limit]
    if not losing:
        return None
    worst = min(losing, key=lambda r: r["delta"])
    return (f"slice {worst['column']}={worst['slice']} ({worst['rows']} rows): {rigor.metric} "
            f"{worst['challenger']:.4f} vs champion {worst['champion']:.4f}, {worst['delta']:+.4f} loses more than "
            f"max_slice_regression {limit:g}")


def decision_details(rigor: Rigor) -> dict[str, Any]:
    """The compact part of the rigor that the decision (and so the audit record) carries; the full slice table
    lives in the evaluation and in the MLflow artifact ``evaluation/slices.json``."""
    return {
        "rows": rigor.rows,
        "interval": rigor.versus_champion.as_dict() if rigor.versus_champion else None,
        "baselines": {b.name: {"estimator": b.estimator, rigor.metric: _finite(b.metrics.get(rigor.metric, math.nan)),
                               "delta": _finite(b.versus.delta), "lower": _finite(b.versus.lower),
                               "upper": _finite(b.versus.upper)} for b in rigor.baselines} or None,
        "largest_slice_gap": max(rigor.slice_gaps, key=lambda g: g["gap"]) if rigor.slice_gaps else None,
    }


def mlflow_metrics(rigor: dict[str, Any]) -> dict[str, float]:
    """Numbers for the challenger's MLflow run: ``gate.*`` and ``baseline.<name>.<metric>``."""
    out: dict[str, float] = {"gate.rows": float(rigor["rows"])}
    vc = rigor.get("versus_champion")
    if vc:
        out.update({"gate.delta": vc["delta"], "gate.delta_lower": vc["lower"], "gate.delta_upper": vc["upper"]})
    for b in rigor.get("baselines", []):
        out.update({f"baseline.{b['name']}.{k}": v for k, v in b["metrics"].items()})
        out.update({f"baseline.{b['name']}.delta_lower": b["versus"]["lower"],
                    f"baseline.{b['name']}.delta_upper": b["versus"]["upper"]})
    for g in rigor.get("slice_gaps", []):
        # MLflow metric names allow letters, digits and _-. /; a column name may hold anything.
        out[f"slices.{re.sub(r'[^A-Za-z0-9_. /-]', '_', str(g['column']))}.largest_gap"] = g["gap"]
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}


def log_to_mlflow(client: Any, run_id: str, rigor: dict[str, Any]) -> None:
    """Metrics and ``evaluation/rigor.json`` (intervals, baselines) and ``evaluation/slices.json`` on the run."""
    import json

    for key, value in mlflow_metrics(rigor).items():
        client.log_metric(run_id, key, value)
    summary = {k: v for k, v in rigor.items() if k != "slices"}
    client.log_text(run_id, json.dumps(summary, indent=2, default=str), "evaluation/rigor.json")
    if rigor.get("slices"):
        client.log_text(run_id, json.dumps({"metric": rigor["metric"], "slices": rigor["slices"],
                                            "largest_gaps": rigor["slice_gaps"]}, indent=2, default=str),
                        "evaluation/slices.json")
