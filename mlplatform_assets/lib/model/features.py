"""Training datasets: a window of validated days, a time-ordered holdout, and the preprocessing pipeline.

Preprocessing lives inside the scikit-learn Pipeline, so it is fitted on training rows
only (no leakage into the holdout) and travels with the model to serving.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlplatform_assets.lib.data.hashing import frame_sha256
from mlplatform_assets.lib.spec import ModelSpec

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
    quarantined_days: list[dt.date] = field(default_factory=list)  # window days left out (validation.on_failure)
    # Slice columns that are no feature (evaluation.slices, e.g. a sensitive attribute): in train/holdout for
    # evaluation only; X() never returns them, so the model never sees them.
    evaluation_columns: list[str] = field(default_factory=list)

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


def required_partitions(spec: ModelSpec) -> int:
    """How many days with data a training window needs (training.min_partitions, default half the window)."""
    return spec.training.min_partitions or max(2, spec.training.window_days // 2)


def build_dataset(spec: ModelSpec, frames: dict[dt.date, pd.DataFrame], numeric: list[str],
                  categorical: list[str]) -> TrainingDataset:
    """Concatenate validated days in time order; the last ``holdout_days`` days with data are the holdout."""
    # Unlabeled rows (labels not arrived yet, or missing) are scored and monitored but never trained on.
    frames = {d: f[f[spec.target.column].notna()] for d, f in frames.items()}
    days = sorted(d for d, f in frames.items() if len(f))
    min_parts = required_partitions(spec)
    if len(days) < min_parts:
        raise DatasetError(f"training window has {len(days)} validated day(s) with data; "
                           f"at least {min_parts} are required (training.min_partitions)")
    holdout_n = min(spec.training.holdout_days, len(days) - 1)
    train_days, holdout_days = days[:-holdout_n], days[-holdout_n:]
    cols = [spec.timestamp_column, *numeric, *categorical, spec.target.column]
    evaluation_columns = [s.column for s in spec.evaluation.slices if s.column not in cols]
    absent = sorted({c for c in evaluation_columns for d in days if c not in frames[d].columns})
    if absent:
        raise DatasetError(f"evaluation.slices: column(s) {absent} are not in the validated data (re-materialize "
                           "raw_data after adding a slice column)")
    cols += evaluation_columns
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
                           train_days=train_days, holdout_days=holdout_days, data_sha256=frame_sha256(whole),
                           evaluation_columns=evaluation_columns)


def needs_scaling(spec: ModelSpec) -> bool:
    if spec.estimator.scale_numeric != "auto":
        return spec.estimator.scale_numeric == "always"
    return spec.estimator.class_path.startswith(_SCALE_SENSITIVE_MODULES)


# Defaults for model families outside scikit-learn, unless the spec sets them: LightGBM otherwise prints
# a line per tree ("No further splits...") into every training log.
_FAMILY_DEFAULT_PARAMS = {"lightgbm": {"verbose": -1}}
CUSTOM_STEP_PREFIX = "custom_"


def build_pipeline(spec: ModelSpec, numeric: list[str], categorical: list[str]) -> Pipeline:
    """The spec's custom transformers (``features.transformers``, in order), then imputation, one-hot for
    categoricals and scaling where the estimator needs it, then the estimator.

    Custom transformers see the input feature columns as a DataFrame and add the columns their ``adds``
    declares; those join ``numeric``/``categorical`` in the standard preprocessing.
    """
    added = spec.features.added_numeric + spec.features.added_categorical
    numeric = [c for c in numeric if c not in added] + spec.features.added_numeric
    categorical = [c for c in categorical if c not in added] + spec.features.added_categorical
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
    cls = spec.estimator.load_class()
    params = {**_FAMILY_DEFAULT_PARAMS.get(cls.__module__.split(".")[0], {}), **spec.estimator.params}
    # Seeds are part of the spec: estimators that take one get it, so retraining is reproducible.
    if "random_state" in cls().get_params() and "random_state" not in params:
        params["random_state"] = spec.training.seed
    try:
        estimator = cls(**params)
    except TypeError as exc:
        raise ValueError(f"estimator.params: {exc}") from None
    custom = [(f"{CUSTOM_STEP_PREFIX}{i}", t.build()) for i, t in enumerate(spec.features.transformers)]
    return Pipeline([*custom, ("preprocess", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)])


def fit_pipeline(spec: ModelSpec, pipeline: Pipeline, X: pd.DataFrame, y: pd.Series) -> Pipeline:
    """``pipeline.fit(X, y)``, checking each custom transformer's output on the way (what Pipeline.fit does,
    step by step), so a plugin that drops a column or returns an array fails naming itself and the column."""
    n_custom = len(spec.features.transformers)
    Xt = X
    for i, transformer_spec in enumerate(spec.features.transformers):
        step = pipeline.steps[i][1]
        Xt = step.fit_transform(Xt, y)
        _check_custom_output(i, transformer_spec.class_path, Xt, [*X.columns, *transformer_spec.adds.all])
    pipeline[n_custom:].fit(Xt, y)
    return pipeline


def _check_custom_output(index: int, class_path: str, output: object, expected: list[str]) -> None:
    where = f"features.transformers.{index} ({class_path})"
    if not isinstance(output, pd.DataFrame):
        raise ValueError(f"{where}: transform returned {type(output).__name__}; it must return a pandas "
                         "DataFrame holding its input columns plus the columns it adds")
    missing = [c for c in expected if c not in output.columns]
    if missing:
        raise ValueError(f"{where}: transform output lacks column(s) {missing} (its input columns must pass "
                         "through, and every column in adds must be present)")
