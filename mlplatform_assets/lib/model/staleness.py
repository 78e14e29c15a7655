"""Staleness backtest: how fast a model's quality decays with its age, measured at training.

A model trained on the days up to a cut is scored on each later day it never saw; the day's primary
metric, keyed by the model's *age* (days since the cut), gives one point of a decay curve. Points come
from several cuts:

* the real cut: the challenger itself on its holdout days (its predictions already exist: no refit);
* ``cuts - 1`` earlier cuts, ``horizon_days`` apart: the spec's pipeline refitted on a sample of the
  days up to the cut (``max_train_rows``, one thread) and scored on the ``horizon_days`` after it.

A common slope per day is fitted with one intercept per cut (a refit on fewer rows may sit at a
different level; only the change with age matters), and its confidence interval comes from the
residuals around those lines (days are treated as independent). Decay is *measured* only when the
whole interval lies on the worse side of zero; then the recommended retraining cadence is the largest
age whose expected drop from age 1 stays within the tolerance, capped at the training window.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mlplatform_assets.lib.data.timestamps import parse_utc
from mlplatform_assets.lib.model.features import TrainingDataset, build_pipeline, fit_pipeline
from mlplatform_assets.lib.model.training import compute_metrics, predict_frame
from mlplatform_assets.lib.spec import ModelSpec

ARTIFACT = "staleness.json"
METRIC_PREFIX = "staleness"
CADENCE_METRIC = f"{METRIC_PREFIX}.cadence_days"
CONFIDENCE = 0.95
# A refit cut needs this many days with data before it to train on.
MIN_TRAIN_DAYS = 3
# Ages whose expected value is reported ("expected roc_auc after 7 days"), within the window length.
REPORTED_AGES = (1, 7, 14, 30)


@dataclass
class CutResult:
    cut_day: str
    refit: bool
    train_rows: int
    points: list[dict[str, Any]]  # {"age": int, "day": str, "value": float, "rows": int}


@dataclass
class StalenessReport:
    metric: str
    direction: str
    status: str  # "measured" | "skipped"
    reason: str = ""
    cuts: list[CutResult] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)  # {"age", "mean", "cuts"} over the cuts
    slope_per_day: float | None = None
    slope_ci: tuple[float, float] | None = None
    decay: bool = False
    tolerance: float | None = None
    expected_by_age: dict[int, float] = field(default_factory=dict)
    max_measured_age: int | None = None
    cadence_days: int | None = None
    window_days: int | None = None
    summary: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["slope_ci"] = list(self.slope_ci) if self.slope_ci else None
        out["expected_by_age"] = {str(k): v for k, v in self.expected_by_age.items()}
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), indent=2).encode()

    def mlflow_metrics(self) -> list[tuple[str, float, int]]:
        """(key, value, step) rows: the curve with ``step`` = age, and the fit's numbers at step 0."""
        rows = [(f"{METRIC_PREFIX}.{self.metric}", float(p["mean"]), int(p["age"])) for p in self.curve]
        if self.slope_per_day is not None and self.slope_ci is not None:
            rows += [(f"{METRIC_PREFIX}.slope_per_day", self.slope_per_day, 0),
                     (f"{METRIC_PREFIX}.slope_ci_low", self.slope_ci[0], 0),
                     (f"{METRIC_PREFIX}.slope_ci_high", self.slope_ci[1], 0)]
        if self.cadence_days is not None:
            rows.append((CADENCE_METRIC, float(self.cadence_days), 0))
        return [r for r in rows if math.isfinite(r[1])]


def backtest(spec: ModelSpec, dataset: TrainingDataset, holdout_predictions: pd.DataFrame) -> StalenessReport:
    """The decay curve, slope, expected quality by age and recommended cadence of ``spec``'s pipeline.

    ``holdout_predictions`` are the trained model's predictions on ``dataset.holdout`` (row order kept)."""
    cfg = spec.monitoring.staleness
    metric, direction = spec.metrics.primary, spec.metrics.direction or "maximize"
    report = StalenessReport(metric=metric, direction=direction, status="skipped",
                             window_days=spec.training.window_days)
    if not cfg.enabled:
        report.reason = "disabled (monitoring.staleness.enabled: false)"
        return report
    real_cut = dataset.train_days[-1]
    cuts = [_score_days(spec, metric, real_cut, dataset.holdout, holdout_predictions,
                        len(dataset.train), refit=False)]
    frame = pd.concat([dataset.train, dataset.holdout], ignore_index=True)
    day = _row_days(frame[dataset.timestamp])
    horizon, why_no_refit = _refit_horizon(cfg.cuts, cfg.horizon_days, dataset.train_days)
    rng = np.random.default_rng(spec.training.seed)
    for j in range(1, cfg.cuts if horizon else 1):
        cut = real_cut - dt.timedelta(days=j * horizon)
        refit = _refit_cut(spec, dataset, frame, day, cut, horizon, rng)
        if refit is not None:
            cuts.append(refit)
    report.cuts = cuts
    _fit_decay(report, spec, cuts)
    if why_no_refit and report.status == "measured":
        report.summary += f" ({why_no_refit})"
    return report


def _row_days(timestamps: pd.Series) -> np.ndarray:
    """Each row's calendar day (UTC for aware timestamps) as datetime64[ns] at midnight."""
    # to_datetime on a column that already is datetime64 still walks every value (its cache check): skip it.
    ts = timestamps if pd.api.types.is_datetime64_any_dtype(timestamps) else parse_utc(timestamps)
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert(None)
    return ts.dt.normalize().to_numpy()


def _refit_horizon(n_cuts: int, horizon_days: int, train_days: list[dt.date]) -> tuple[int, str]:
    """Days scored after each refit cut: ``horizon_days``, shrunk so every cut keeps MIN_TRAIN_DAYS to train on."""
    if n_cuts < 2:
        return 0, ""
    span = (train_days[-1] - train_days[0]).days + 1
    horizon = min(horizon_days, (span - MIN_TRAIN_DAYS) // (n_cuts - 1))
    if horizon < 2:
        return 0, f"no refit cuts: {span} training day(s) are too few for {n_cuts - 1} earlier cut(s)"
    return horizon, ""


def _score_days(spec: ModelSpec, metric: str, cut: dt.date, rows: pd.DataFrame, predictions: pd.DataFrame,
                train_rows: int, refit: bool) -> CutResult:
    """One point per day after ``cut``: the metric of ``predictions`` against ``rows``' labels that day."""
    days = _row_days(rows[spec.timestamp_column])
    cut_ts = np.datetime64(cut, "ns")
    points = []
    for value_day in np.unique(days):
        mask = days == value_day
        value = compute_metrics(spec.task, [metric], rows[spec.target.column][mask].reset_index(drop=True),
                                predictions[mask].reset_index(drop=True), spec.target.positive_class)[metric]
        if value == value:  # a day with one class has no AUC: no point
            age = int((value_day - cut_ts) // np.timedelta64(1, "D"))
            points.append({"age": age, "day": str(pd.Timestamp(value_day).date()), "value": float(value),
                           "rows": int(mask.sum())})
    return CutResult(cut_day=cut.isoformat(), refit=refit, train_rows=train_rows, points=points)


def _refit_cut(spec: ModelSpec, dataset: TrainingDataset, frame: pd.DataFrame, day: np.ndarray, cut: dt.date,
               horizon: int, rng: np.random.Generator) -> CutResult | None:
    """The spec's pipeline fitted on a sample of the days up to ``cut``, scored on the ``horizon`` days after."""
    cut_ts = np.datetime64(cut, "ns")
    train_idx = np.flatnonzero(day <= cut_ts)
    if len(np.unique(day[train_idx])) < MIN_TRAIN_DAYS:
        return None
    if len(train_idx) > spec.monitoring.staleness.max_train_rows:
        train_idx = np.sort(rng.choice(train_idx, spec.monitoring.staleness.max_train_rows, replace=False))
    train = frame.iloc[train_idx]
    if spec.task == "classification" and train[dataset.target].nunique() < 2:
        return None
    later = (day > cut_ts) & (day <= cut_ts + np.timedelta64(horizon, "D"))
    score_idx = _sample_per_day(np.flatnonzero(later), day, spec.monitoring.staleness.max_rows_per_day, rng)
    if not len(score_idx):
        return None
    scored = frame.iloc[score_idx].reset_index(drop=True)
    pipeline = build_pipeline(spec, dataset.numeric, dataset.categorical)
    with threadpool_limits(1):
        fit_pipeline(spec, pipeline, train[dataset.feature_columns], train[dataset.target])
        predictions = predict_frame(pipeline, scored[dataset.feature_columns], spec.task)
    return _score_days(spec, spec.metrics.primary, cut, scored, predictions, len(train), refit=True)


def _sample_per_day(idx: np.ndarray, day: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for value_day in np.unique(day[idx]):
        members = idx[day[idx] == value_day]
        parts.append(members if len(members) <= cap else rng.choice(members, cap, replace=False))
    return np.sort(np.concatenate(parts)) if parts else idx


def _fit_decay(report: StalenessReport, spec: ModelSpec, cuts: list[CutResult]) -> None:
    """Common slope with one intercept per cut (ordinary least squares), its t interval, and the cadence."""
    from scipy import stats

    groups = [c for c in cuts if len({p["age"] for p in c.points}) >= 2]
    ages = {p["age"] for c in cuts for p in c.points}
    report.curve = [{"age": a, "mean": float(np.mean([p["value"] for c in cuts for p in c.points if p["age"] == a])),
                     "cuts": sum(1 for c in cuts for p in c.points if p["age"] == a)} for a in sorted(ages)]
    n = sum(len(c.points) for c in groups)
    dof = n - len(groups) - 1
    if dof < 2:
        report.reason = (f"too few scored days to fit a decay ({n} point(s) in {len(groups)} usable cut(s)); "
                         "a longer training window or more cuts would give more")
        report.summary = f"staleness not measured: {report.reason}"
        return
    a = [np.array([p["age"] for p in c.points], float) for c in groups]
    y = [np.array([p["value"] for p in c.points], float) for c in groups]
    a_dev = np.concatenate([ai - ai.mean() for ai in a])
    y_dev = np.concatenate([yi - yi.mean() for yi in y])
    sxx = float(a_dev @ a_dev)
    slope = float(a_dev @ y_dev) / sxx
    resid = y_dev - slope * a_dev
    se = math.sqrt(float(resid @ resid) / dof / sxx)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, dof)) * se
    level = float(np.mean([yi.mean() - slope * ai.mean() for ai, yi in zip(a, y)]))  # mean intercept
    better = 1.0 if report.direction == "maximize" else -1.0
    report.status = "measured"
    report.slope_per_day, report.slope_ci = slope, (slope - half, slope + half)
    report.max_measured_age = int(max(ages))
    report.decay = better * slope + half < 0  # the whole interval is on the worse side
    window = spec.training.window_days
    report.expected_by_age = {age: level + slope * age for age in REPORTED_AGES if age <= window}
    fresh = level + slope
    report.tolerance = spec.monitoring.staleness.tolerance or max(spec.promotion.min_improvement,
                                                                 0.01 * abs(fresh))
    ci = f"{CONFIDENCE:.0%} CI {report.slope_ci[0]:+.4g}..{report.slope_ci[1]:+.4g}"
    if not report.decay:
        report.summary = (f"no measurable decay of {report.metric} over {report.max_measured_age} days "
                          f"(slope {slope:+.4g}/day, {ci}); age alone does not call for retraining")
        return
    report.cadence_days = int(min(window, max(1, math.floor(1 + report.tolerance / abs(slope)))))
    # Only measured ages in the sentence; expected_by_age also holds extrapolations beyond them.
    expected = ", ".join(f"{v:.4g} after {k} day{'s' if k > 1 else ''}" for k, v in report.expected_by_age.items()
                         if k <= report.max_measured_age)
    report.summary = (f"{report.metric} decays {slope:+.4g}/day ({ci}): expected {expected}; retrain at least every "
                      f"{report.cadence_days} day(s) to stay within {report.tolerance:.4g} of a fresh model")


def measure_and_log(spec: ModelSpec, registry: Any, version: str, dataset: TrainingDataset,
                    holdout_predictions: pd.DataFrame) -> dict[str, Any]:
    """Run the backtest for a registered version and record it on the version's MLflow run: ``staleness.json``
    and the curve as metrics (``staleness.<metric>`` with step = age, slope, interval, cadence)."""
    from mlflow.entities import Metric

    report = backtest(spec, dataset, holdout_predictions)
    run_id = registry.get_version(spec.name, str(version)).run_id
    client = registry.client
    client.log_text(run_id, report.to_json().decode(), ARTIFACT)
    now = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    metrics = [Metric(key, value, now, step) for key, value, step in report.mlflow_metrics()]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    return report.as_dict()


def champion_age_days(training_partitions: str, day: dt.date) -> int | None:
    """Days from the end of a version's training data (its ``start..end`` partitions tag) to ``day``."""
    end = training_partitions.rpartition("..")[2]
    try:
        return (day - dt.date.fromisoformat(end)).days
    except ValueError:
        return None


def markdown(data: dict[str, Any]) -> str:
    """The "Staleness" section of the evaluation summary, from :meth:`StalenessReport.as_dict`."""
    if data.get("status") != "measured":
        return f"#### Staleness\n\nNot measured: {data.get('reason') or 'no backtest ran'}."
    cuts = data["cuts"]
    lines = ["#### Staleness (backtest)", "", data["summary"] + ".", "",
             f"{len(cuts)} cut(s): " + ", ".join(
                 f"{c['cut_day']} ({'refit on ' + str(c['train_rows']) + ' rows' if c['refit'] else 'this model'}, "
                 f"{len(c['points'])} day(s) scored)" for c in cuts) + ".", "",
             f"| age (days) | mean {data['metric']} | cuts |", "|---|---|---|"]
    lines += [f"| {p['age']} | {p['mean']:.4f} | {p['cuts']} |" for p in data["curve"]]
    return "\n".join(lines)
