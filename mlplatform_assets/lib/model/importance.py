"""Permutation importance of each input feature on the holdout, for the challenger and the champion.

A feature's importance is how much the primary metric gets worse when that column is shuffled (its link to
the target broken, its distribution kept), averaged over ``repeats`` shuffles; positive = the model relies on
it, whatever the metric's direction. It works on the raw input columns through the whole pipeline, so it
covers every estimator and custom transformer alike. Both models are scored on the same sampled rows with
the same shuffles, so "the challenger leans on X much more than the champion did" is a like-for-like
comparison that explains a changed model.

Cost is bounded: at most ``max_rows`` holdout rows (seeded sample), and one ``predict`` per feature on the
``repeats`` shuffled copies stacked together (vectorised), on the caller's thread budget (one thread in
evaluation). Limits: correlated features share credit (shuffling one while its twin stays intact shows
little loss for either), and shuffled rows can be combinations that never occur in real data.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from typing import Any

import numpy as np
import pandas as pd

from mlplatform_assets.lib.model.training import (
    compute_metrics,
    positive_class_probability,
    positive_label,
    predict_frame,
)
from mlplatform_assets.lib.spec import ModelSpec

IMPORTANCE_ARTIFACT = "evaluation/importance.json"


def _score(spec: ModelSpec, y: pd.Series, preds: pd.DataFrame) -> float:
    primary = spec.metrics.primary
    return compute_metrics(spec.task, [primary], y, preds, spec.target.positive_class)[primary]


def roc_auc_by_block(y_positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (blocks x rows) against the same 0/1 labels, by the rank-sum formula with
    average ranks for ties: what ``roc_auc_score`` returns, in one vectorised call. In importance every shuffled
    copy is one block; ``roc_auc_score``'s per-call input checks cost more than the model's predictions here."""
    from scipy.stats import rankdata

    positive = y_positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[0], np.nan)
    ranks = rankdata(scores, axis=1)
    return (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _block_scores(spec: ModelSpec, y: pd.Series, preds: pd.DataFrame, blocks: int) -> np.ndarray:
    """The primary metric of each consecutive block of ``len(y)`` rows of ``preds``."""
    n = len(y)
    if spec.metrics.primary == "roc_auc" and "probability" in preds:
        labels = y.to_numpy()
        positive = positive_label(labels, spec.target.positive_class)
        scores = positive_class_probability(labels, preds, positive)
        return roc_auc_by_block(labels == positive, scores.reshape(blocks, n))
    if spec.metrics.primary in _REGRESSION_BY_BLOCK:
        truth = y.to_numpy(dtype=float)
        return _REGRESSION_BY_BLOCK[spec.metrics.primary](truth, preds["prediction"].to_numpy(dtype=float)
                                                          .reshape(blocks, n))
    return np.array([_score(spec, y, preds.iloc[b * n:(b + 1) * n].reset_index(drop=True)) for b in range(blocks)])


# The same formulas as sklearn's mean_squared_error (root), mean_absolute_error and r2_score, per block at once.
_REGRESSION_BY_BLOCK = {
    "rmse": lambda y, p: np.sqrt(np.mean((p - y) ** 2, axis=1)),
    "mae": lambda y, p: np.mean(np.abs(p - y), axis=1),
    "r2": lambda y, p: 1 - np.sum((p - y) ** 2, axis=1) / np.sum((y - y.mean()) ** 2),
}


def _predict(spec: ModelSpec, pipeline: Any, X: pd.DataFrame) -> pd.DataFrame:
    """``predict_frame`` with one model call for a probabilistic classifier: the label is the most probable
    class (what its ``predict`` returns), which halves the cost of every shuffled copy."""
    if spec.task != "classification" or not hasattr(pipeline, "predict_proba"):
        return predict_frame(pipeline, X, spec.task)
    proba = pipeline.predict_proba(X)
    out = pd.DataFrame({"prediction": np.asarray(pipeline.classes_)[np.argmax(proba, axis=1)]})
    if proba.shape[1] == 2:
        out["probability"] = proba[:, 1]
    return out


def sample_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Positions of at most ``max_rows`` of ``n`` rows, seeded, in their original order."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


MAX_BATCH_ROWS = 100_000  # shuffled rows scored per model call: few calls, bounded memory


def permutation_importance(spec: ModelSpec, pipeline: Any, X: pd.DataFrame, y: pd.Series, repeats: int,
                           seed: int) -> dict[str, dict[str, float]]:
    """feature -> {importance, std} for every column of ``X`` (rows already sampled). The shuffles of a
    feature depend only on ``seed`` and its name, so two models given the same rows see the same shuffles.
    The shuffled copies of many features are stacked and scored in one model call (the pipeline's per-call
    overhead dominates at these sizes)."""
    X = X.reset_index(drop=True)
    y = y.reset_index(drop=True)
    n = len(X)
    sign = 1.0 if spec.metrics.direction == "maximize" else -1.0
    baseline = _score(spec, y, _predict(spec, pipeline, X))
    columns = [str(c) for c in X.columns]
    per_batch = max(1, MAX_BATCH_ROWS // max(1, n * repeats))
    out = {}
    for first in range(0, len(columns), per_batch):
        batch = columns[first:first + per_batch]
        blocks = []
        for column in batch:
            rng = np.random.default_rng([seed, zlib.crc32(column.encode())])
            values = X[column].to_numpy()
            for _ in range(repeats):
                block = X.copy()
                block[column] = values[rng.permutation(n)]
                blocks.append(block)
        preds = _predict(spec, pipeline, pd.concat(blocks, ignore_index=True))
        drops = (sign * (baseline - _block_scores(spec, y, preds, len(blocks)))).reshape(len(batch), repeats)
        for column, feature_drops in zip(batch, drops):
            out[column] = {"importance": float(np.mean(feature_drops)), "std": float(np.std(feature_drops))}
    return out


def compare(challenger: dict[str, dict[str, float]],
            champion: dict[str, dict[str, float]] | None) -> list[dict[str, Any]]:
    """One row per feature, most important (challenger) first, with the champion's value, rank and the change."""
    rank_of = {f: i + 1 for i, f in enumerate(sorted(champion, key=lambda f: -champion[f]["importance"]))} \
        if champion else {}
    rows = []
    for rank, feature in enumerate(sorted(challenger, key=lambda f: -challenger[f]["importance"]), start=1):
        row = {"feature": feature, "rank": rank, **challenger[feature]}
        if champion is not None:
            theirs = champion.get(feature)
            row["champion_importance"] = theirs["importance"] if theirs else None
            row["champion_rank"] = rank_of.get(feature)
            row["change"] = row["importance"] - theirs["importance"] if theirs else None
        rows.append(row)
    return rows


def importance_report(spec: ModelSpec, X: pd.DataFrame, y: pd.Series, challenger: Any, champion: Any | None,
                      champion_version: str | None = None) -> dict[str, Any]:
    """Importance of each feature for the challenger and (when given) the champion, on the same sampled rows."""
    cfg = spec.evaluation.importance
    started = time.monotonic()
    rows = sample_rows(len(X), cfg.max_rows, spec.training.seed)
    Xs, ys = X.iloc[rows], y.iloc[rows]
    seed = spec.training.seed
    ours = permutation_importance(spec, challenger, Xs, ys, cfg.repeats, seed)
    theirs = permutation_importance(spec, champion, Xs, ys, cfg.repeats, seed) if champion is not None else None
    return {"metric": spec.metrics.primary, "direction": spec.metrics.direction, "rows": len(rows),
            "holdout_rows": len(X), "repeats": cfg.repeats, "seed": seed, "top_k": cfg.top_k,
            "champion_version": champion_version if champion is not None else None,
            "features": compare(ours, theirs), "seconds": round(time.monotonic() - started, 3)}


def metric_key(feature: str) -> str:
    """An MLflow metric name for a feature (MLflow allows letters, digits and _ - . / and space)."""
    return "importance." + re.sub(r"[^A-Za-z0-9_\-./ ]", "_", feature)[:200]


def measure_and_log(spec: ModelSpec, registry: Any, challenger_version: str, X: pd.DataFrame, y: pd.Series,
                    champion_version: str | None) -> dict[str, Any] | None:
    """The importance report of the challenger (vs ``champion_version`` when it could be scored on this holdout),
    logged on the challenger's run: ``evaluation/importance.json`` and the top-k as ``importance.<feature>``
    metrics (``importance_change.<feature>`` against the champion). None when disabled."""
    if not spec.evaluation.importance.enabled or len(X) == 0:
        return None
    challenger = registry.load_pipeline(spec.name, challenger_version)
    champion = registry.load_pipeline(spec.name, champion_version) if champion_version else None
    report = importance_report(spec, X, y, challenger, champion, champion_version)
    run_id = registry.get_version(spec.name, challenger_version).run_id
    client = registry.client
    client.log_text(run_id, json.dumps(report, indent=2), IMPORTANCE_ARTIFACT)
    for row in report["features"][:report["top_k"]]:
        if row["importance"] != row["importance"]:  # undefined (NaN) on these rows: not a metric
            continue
        client.log_metric(run_id, metric_key(row["feature"]), row["importance"])
        if row.get("change") is not None and row["change"] == row["change"]:
            client.log_metric(run_id, metric_key(row["feature"]).replace("importance.", "importance_change.", 1),
                              row["change"])
    return report
