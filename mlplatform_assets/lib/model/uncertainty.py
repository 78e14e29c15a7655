"""How sure is "better"? A paired confidence interval of the difference in a metric between two models scored
on the same rows.

- ``roc_auc``: DeLong's method (DeLong, DeLong & Clarke-Pearson 1988, in the O(n log n) form of Sun & Xu 2014):
  the exact AUC on the rows and the asymptotic variance of the paired difference from the per-row structural
  components; a normal interval. No resampling, so it is both exact in the point and cheap.
- every other metric: a paired bootstrap. One seeded index matrix (resamples x rows) is drawn once and both
  models are scored on the same resampled rows, so the correlation between them (most rows are easy for both)
  is kept and the interval is far narrower than two separate intervals would suggest. The metrics are computed
  for all resamples at once (vectorised over the matrix). Above ``max_rows`` rows each resample draws
  ``max_rows`` of the n rows (m-out-of-n bootstrap) and the spread is rescaled by sqrt(m/n), which is valid for
  these smooth, sqrt(n)-consistent metrics and bounds the cost at any holdout size.

``delta`` is signed so that positive always means "``a`` is better than ``b``", whatever the metric's direction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlplatform_assets.lib.model.training import compute_metrics, positive_class_probability, positive_label

RESAMPLES = 1000
# Rows per resample: the m-out-of-n rescaling keeps the interval valid; m = 5,000 is plenty for these metrics.
MAX_BOOTSTRAP_ROWS = 5_000
# Metrics without a vectorised form are recomputed per resample with scikit-learn: fewer resamples.
SLOW_METRIC_RESAMPLES = 200


@dataclass(frozen=True)
class PairedInterval:
    metric: str
    delta: float  # a - b, signed so that positive means a is better
    lower: float
    upper: float
    confidence: float
    rows: int
    method: str  # "delong" or "bootstrap"
    resamples: int | None = None  # bootstrap resamples (None for DeLong)
    resample_rows: int | None = None  # rows per resample when fewer than ``rows`` (m-out-of-n)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.lower) or math.isnan(self.upper))


def paired_interval(task: str, metric: str, direction: str, y_true: Any, predictions_a: pd.DataFrame,
                    predictions_b: pd.DataFrame, positive_class: Any = None, confidence: float = 0.95,
                    seed: int = 0, resamples: int = RESAMPLES, max_rows: int = MAX_BOOTSTRAP_ROWS) -> PairedInterval:
    """The interval of ``metric(a) - metric(b)`` (better-signed) on the same rows; NaN bounds when undefined
    (e.g. one class only, or fewer than two rows)."""
    y = np.asarray(y_true)
    n = len(y)
    sign = 1.0 if direction == "maximize" else -1.0
    a = compute_metrics(task, [metric], pd.Series(y), predictions_a, positive_class)[metric]
    b = compute_metrics(task, [metric], pd.Series(y), predictions_b, positive_class)[metric]
    delta = sign * (a - b)
    nan = float("nan")
    if n < 2 or math.isnan(delta):
        return PairedInterval(metric, delta, nan, nan, confidence, n, "none")
    if metric == "roc_auc":
        pos = positive_label(y, positive_class)
        scores = [_positive_proba(y, p, pos) for p in (predictions_a, predictions_b)]
        se = math.sqrt(max(_delong_difference_variance(y == pos, *scores), 0.0))
        z = _normal_quantile(confidence)
        return PairedInterval(metric, delta, delta - z * se, delta + z * se, confidence, n, "delong")
    rng = np.random.default_rng(seed)
    m = min(n, max_rows)
    slow = metric not in _VECTORISED
    b_count = min(resamples, SLOW_METRIC_RESAMPLES) if slow else resamples
    idx = rng.integers(0, n, size=(b_count, m), dtype=np.int32)  # half the memory traffic of int64
    scores_a = _resampled(task, metric, y, predictions_a, positive_class, idx)
    scores_b = _resampled(task, metric, y, predictions_b, positive_class, idx)
    deltas = sign * (scores_a - scores_b)
    deltas = deltas[~np.isnan(deltas)]
    if len(deltas) < b_count // 2:  # most resamples undefined (e.g. a rare class): no honest interval
        return PairedInterval(metric, delta, nan, nan, confidence, n, "bootstrap", b_count, m if m < n else None)
    alpha = (1.0 - confidence) / 2
    lo, hi = np.quantile(deltas, [alpha, 1 - alpha])
    scale = math.sqrt(m / n)  # m-out-of-n: the spread of a size-m resample is sqrt(n/m) times the full one's
    return PairedInterval(metric, delta, float(delta + scale * (lo - delta)), float(delta + scale * (hi - delta)),
                          confidence, n, "bootstrap", b_count, m if m < n else None)


def _normal_quantile(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - confidence) / 2))


def _positive_proba(y: np.ndarray, predictions: pd.DataFrame, pos: Any) -> np.ndarray:
    """P(positive class) per row, as compute_metrics scores it."""
    proba = positive_class_probability(y, predictions, pos)
    if proba is None:
        raise ValueError("roc_auc and log_loss need a binary classifier with predict_proba")
    return proba


def _delong_difference_variance(positive: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> float:
    """Variance of AUC(a) - AUC(b) on the same rows (DeLong), from midranks: O(n log n)."""
    from scipy.stats import rankdata

    m, n = int(positive.sum()), int((~positive).sum())
    if m < 2 or n < 2:
        return float("nan")
    v01, v10 = [], []
    for score in (score_a, score_b):
        sx, sy = score[positive], score[~positive]
        tx, ty, tz = rankdata(sx), rankdata(sy), rankdata(np.concatenate([sx, sy]))
        v01.append((tz[:m] - tx) / n)  # per positive: share of negatives scored below it (ties count half)
        v10.append(1.0 - (tz[m:] - ty) / m)  # per negative: share of positives scored above it
    s01, s10 = np.cov(np.vstack(v01)), np.cov(np.vstack(v10))
    cov = s01 / m + s10 / n
    return float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


# --- metrics on every resample at once: idx is (resamples, rows) --------------------------------------------
_VECTORISED = {"accuracy", "precision", "recall", "f1", "log_loss", "rmse", "mae", "r2", "mape"}


def _resampled(task: str, metric: str, y: np.ndarray, predictions: pd.DataFrame, positive_class: Any,
               idx: np.ndarray) -> np.ndarray:
    if metric not in _VECTORISED:
        out = np.empty(len(idx))
        for i, rows in enumerate(idx):
            sample = predictions.iloc[rows].reset_index(drop=True)
            out[i] = compute_metrics(task, [metric], pd.Series(y[rows]), sample, positive_class)[metric]
        return out
    pred = predictions["prediction"].to_numpy()
    if task == "regression":
        # Per-row losses first, then one gather per resample matrix: the cost is the gather, not the arithmetic.
        yf = y.astype(float)
        err = pred.astype(float) - yf
        if metric == "rmse":
            return np.sqrt(np.mean((err ** 2)[idx], axis=1))
        if metric == "mae":
            return np.mean(np.abs(err)[idx], axis=1)
        if metric == "mape":  # scikit-learn's definition: |error| / max(|y|, eps)
            return np.mean((np.abs(err) / np.maximum(np.abs(yf), np.finfo(np.float64).eps))[idx], axis=1)
        yt = yf[idx]
        sst = np.sum((yt - yt.mean(axis=1, keepdims=True)) ** 2, axis=1)  # centred: no cancellation at large y
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(sst > 0, 1.0 - np.sum((err ** 2)[idx], axis=1) / sst, np.nan)
    if metric == "accuracy":
        return np.mean((pred == y)[idx], axis=1)
    pos = positive_label(y, positive_class)
    if metric == "log_loss":
        p = np.clip(_positive_proba(y, predictions, pos), np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps)
        is_pos = y == pos
        loss = -np.where(is_pos, np.log(p), np.log(1 - p))
        return np.mean(loss[idx], axis=1)
    binary = len(np.unique(y)) <= 2 and "probability" in predictions
    labels = [pos] if binary else list(np.unique(np.concatenate([y, pred])))
    per_label = []
    for label in labels:  # precision/recall/f1 per label from resampled confusion counts; binary: the positive
        actual, predicted = (y == label)[idx], (pred == label)[idx]
        tp = np.sum(actual & predicted, axis=1).astype(float)
        fp = np.sum(~actual & predicted, axis=1)
        fn = np.sum(actual & ~predicted, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):  # zero_division=0, as compute_metrics uses
            if metric == "precision":
                per_label.append(np.where(tp + fp > 0, tp / (tp + fp), 0.0))
            elif metric == "recall":
                per_label.append(np.where(tp + fn > 0, tp / (tp + fn), 0.0))
            else:
                per_label.append(np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0))
    return np.mean(per_label, axis=0)
