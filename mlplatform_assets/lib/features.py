"""Training datasets: a window of validated days, a time-ordered holdout, and the preprocessing pipeline.

Preprocessing lives inside the scikit-learn Pipeline, so it is fitted on training rows
only (no leakage into the holdout) and travels with the model to serving.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from .hashing import frame_sha256
from .spec import ModelSpec

MISSING_CATEGORY = "__missing__"
# Estimators whose fit depends on feature scale; trees do not care.
_SCALE_SENSITIVE_MODULES = ("sklearn.linear_model", "sklearn.svm", "sklearn.neighbors", "sklearn.neural_network")


@dataclass
class TrainingDataset:
    train: pd.DataFrame
    holdout: pd.DataFrame
    numeric: list[str]
    categorical: list[str]
    target: str
    timestamp: str
    train_days: list[dt.date]
    holdout_days: list[dt.date]
    data_sha256: str

    @property
    def feature_columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def days(self) -> list[dt.date]:
        return [*self.train_days, *self.holdout_days]

    @property
    def partition_range(self) -> str:
        return f"{self.days[0].isoformat()}..{self.days[-1].isoformat()}"

    def X(self, part: str) -> pd.DataFrame:
        return getattr(self, part)[self.feature_columns]

    def y(self, part: str) -> pd.Series:
        return getattr(self, part)[self.target]


class DatasetError(ValueError):
    """The window does not hold enough usable data to train."""


def window_days(end: dt.date, spec: ModelSpec) -> list[dt.date]:
    """The training window's days, ending at (and including) ``end``, clipped to the partition start."""
    start = max(spec.partition_start, end - dt.timedelta(days=spec.training.window_days - 1))
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def build_dataset(spec: ModelSpec, frames: dict[dt.date, pd.DataFrame], numeric: list[str],
                  categorical: list[str]) -> TrainingDataset:
    """Concatenate validated days in time order; the last ``holdout_days`` days with data are the holdout."""
    # Unlabeled rows (labels not arrived yet, or missing) are scored and monitored but never trained on.
    frames = {d: f[f[spec.target.column].notna()] for d, f in frames.items()}
    days = sorted(d for d, f in frames.items() if len(f))
    min_parts = spec.training.min_partitions or max(2, spec.training.window_days // 2)
    if len(days) < min_parts:
        raise DatasetError(f"training window has {len(days)} validated day(s) with data; "
                           f"at least {min_parts} are required (training.min_partitions)")
    holdout_n = min(spec.training.holdout_days, len(days) - 1)
    train_days, holdout_days = days[:-holdout_n], days[-holdout_n:]
    cols = [spec.timestamp_column, *numeric, *categorical, spec.target.column]
    train = pd.concat([frames[d][cols] for d in train_days], ignore_index=True)
    holdout = pd.concat([frames[d][cols] for d in holdout_days], ignore_index=True)
    if spec.training.max_rows and len(train) > spec.training.max_rows:
        train = train.sample(n=spec.training.max_rows, random_state=spec.training.seed).sort_index()
        train = train.reset_index(drop=True)
    if spec.task == "classification":
        classes = train[spec.target.column].nunique()
        if classes < 2:
            raise DatasetError(f"training rows hold {classes} class(es) of {spec.target.column!r}; need at least 2")
    whole = pd.concat([train, holdout], ignore_index=True)
    return TrainingDataset(train=train, holdout=holdout, numeric=list(numeric), categorical=list(categorical),
                           target=spec.target.column, timestamp=spec.timestamp_column,
                           train_days=train_days, holdout_days=holdout_days, data_sha256=frame_sha256(whole))


def needs_scaling(spec: ModelSpec) -> bool:
    if spec.estimator.scale_numeric != "auto":
        return spec.estimator.scale_numeric == "always"
    return spec.estimator.class_path.startswith(_SCALE_SENSITIVE_MODULES)


def build_pipeline(spec: ModelSpec, numeric: list[str], categorical: list[str]) -> Pipeline:
    """Imputation, one-hot for categoricals, scaling where the estimator needs it, then the estimator."""
    num_steps: list = [("impute", SimpleImputer(strategy="median"))]
    if needs_scaling(spec):
        num_steps.append(("scale", StandardScaler()))
    cat_steps = [
        # Missing categories arrive as NaN (pandas) or None (JSON null): two imputers cover both,
        # NaN first because the None-imputer rejects NaN input.
        ("impute_nan", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
        ("impute_none", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, missing_values=None)),
        ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=50,
                                 sparse_output=False, dtype=np.float64)),
    ]
    transformers = []
    if numeric:
        transformers.append(("numeric", Pipeline(num_steps), list(numeric)))
    if categorical:
        transformers.append(("categorical", Pipeline(cat_steps), list(categorical)))
    params = dict(spec.estimator.params)
    cls = spec.estimator.load_class()
    # Seeds are part of the spec: estimators that take one get it, so retraining is reproducible.
    if "random_state" in cls().get_params() and "random_state" not in params:
        params["random_state"] = spec.training.seed
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ValueError(f"estimator.params: {exc}") from None
    return Pipeline([("preprocess", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)])
