"""Fitting a spec's pipeline and scoring it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mlplatform_assets.lib.model.features import (
    TrainingDataset,
    build_pipeline,
    fit_pipeline,
)
from mlplatform_assets.lib.spec import ModelSpec


@dataclass
class FitResult:
    pipeline: Pipeline
    metrics: dict[str, float]
    holdout_predictions: pd.DataFrame  # column "prediction" (+ "probability" for binary classification)
    search: Any = None  # lib/model/search.SearchResult when estimator.search chose the params


def predict_frame(pipeline: Pipeline, X: pd.DataFrame, task: str) -> pd.DataFrame:
    """Predictions as a frame: ``prediction`` and, for binary classifiers, ``probability`` of the positive class."""
    out = pd.DataFrame({"prediction": pipeline.predict(X)})
    if task == "classification" and hasattr(pipeline, "predict_proba"):
        proba = pipeline.predict_proba(X)
        if proba.shape[1] == 2:
            out["probability"] = proba[:, 1]
    return out


def positive_label(y_true: Any, positive_class: Any) -> Any:
    """The class a binary metric treats as positive: the spec's ``positive_class``, else the larger label."""
    y = np.asarray(y_true)
    return positive_class if positive_class is not None else (np.unique(y).max() if len(y) else 1)


def positive_class_probability(y_true: Any, predictions: pd.DataFrame, positive_class: Any) -> np.ndarray | None:
    """P(``positive_class``) per row, from a frame of :func:`predict_frame`: its ``probability`` column is
    P(the larger of the two labels) (scikit-learn orders ``classes_``), so when the positive class is the
    smaller label ("churned" vs "stayed") the ranking flips. None without probabilities."""
    if "probability" not in predictions:
        return None
    proba = predictions["probability"].to_numpy(dtype=float)
    labels = set(np.unique(np.asarray(y_true)).tolist()) | {positive_class}
    return proba if positive_class == max(labels) else 1.0 - proba


def compute_metrics(task: str, names: list[str], y_true: pd.Series, predictions: pd.DataFrame,
                    positive_class: Any | None = None) -> dict[str, float]:
    y_pred = predictions["prediction"].to_numpy()
    y = y_true.to_numpy()
    out: dict[str, float] = {}
    for name in dict.fromkeys(names):
        if task == "regression":
            value = {
                "rmse": lambda: float(np.sqrt(skm.mean_squared_error(y, y_pred))),
                "mae": lambda: float(skm.mean_absolute_error(y, y_pred)),
                "r2": lambda: float(skm.r2_score(y, y_pred)),
                "mape": lambda: float(skm.mean_absolute_percentage_error(y, y_pred)),
            }[name]()
        else:
            binary = len(np.unique(y)) <= 2 and "probability" in predictions
            pos = positive_label(y, positive_class)
            proba = positive_class_probability(y, predictions, pos)
            if name == "accuracy":
                value = float(skm.accuracy_score(y, y_pred))
            elif name in ("f1", "precision", "recall"):
                fn = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[name]
                kwargs = {"pos_label": pos} if binary else {"average": "macro"}
                value = float(fn(y, y_pred, zero_division=0, **kwargs))
            elif name in ("roc_auc", "average_precision", "log_loss"):
                if proba is None:
                    raise ValueError(f"metric {name!r} needs a binary classifier with predict_proba")
                y_bin = (y == pos).astype(int)
                if len(np.unique(y_bin)) < 2 and name != "log_loss":
                    value = float("nan")
                elif name == "roc_auc":
                    value = float(skm.roc_auc_score(y_bin, proba))
                elif name == "average_precision":
                    value = float(skm.average_precision_score(y_bin, proba))
                else:
                    value = float(skm.log_loss(y_bin, proba, labels=[0, 1]))
            else:
                raise ValueError(f"unknown metric {name!r}")
        out[name] = value
    return out


def metric_names(spec: ModelSpec) -> list[str]:
    return list(dict.fromkeys([spec.metrics.primary, *spec.metrics.additional]))


def training_threads() -> int:
    """OpenMP/BLAS threads for fitting: ``MLPLATFORM_TRAIN_THREADS`` (default 1)."""
    from mlplatform_assets.lib import config

    return config.read(config.ENV_TRAIN_THREADS)


def fit(spec: ModelSpec, dataset: TrainingDataset) -> FitResult:
    # OpenMP spin-waits badly when cores are shared (measured here: HistGradientBoosting fit 4 s with one
    # thread vs 16-50 s with two while other work runs), so training uses a fixed, configurable thread count.
    with threadpool_limits(training_threads()):
        search = None
        if spec.estimator.search is not None:  # choose the params on the training rows, then fit with them
            from mlplatform_assets.lib.model.search import run_search, with_params

            search = run_search(spec, dataset)
            spec = with_params(spec, search.chosen)
        pipeline = build_pipeline(spec, dataset.numeric, dataset.categorical)
        fit_pipeline(spec, pipeline, dataset.X("train"), dataset.y("train"))
        preds = predict_frame(pipeline, dataset.X("holdout"), spec.task)
    scores = compute_metrics(spec.task, metric_names(spec), dataset.y("holdout"), preds, spec.target.positive_class)
    return FitResult(pipeline=pipeline, metrics=scores, holdout_predictions=preds, search=search)
