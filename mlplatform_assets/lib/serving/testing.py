"""Helpers for tests and the benchmark: a throw-away MLflow store and platform-style models.

Models are registered exactly like the platform's training code does it: a scikit-learn
``Pipeline`` (ColumnTransformer + estimator) logged with ``mlflow.sklearn.log_model(...,
serialization_format="skops", skops_trusted_types=[...], registered_model_name=NAME)``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np


def make_config(root: str | os.PathLike):
    """A PlatformConfig whose MLflow store, artifacts and prediction log all live under ``root``."""
    from mlplatform_assets.lib.config import load_config

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return load_config({"MLPLATFORM_HOME": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",
                        "MLPLATFORM_PREDICTION_LOG_URI": str(root / "predictions")})


@contextlib.contextmanager
def mlflow_uris(config):
    """Point MLflow's fluent API at ``config`` for the block, then restore the previous state."""
    import mlflow
    from mlflow.tracking._model_registry import utils as reg_utils
    from mlflow.tracking._tracking_service import utils as trk_utils

    saved = (trk_utils._tracking_uri, reg_utils._registry_uri,
             os.environ.get("MLFLOW_TRACKING_URI"), os.environ.get("MLFLOW_REGISTRY_URI"))
    mlflow.set_tracking_uri(config.mlflow_tracking_uri)
    mlflow.set_registry_uri(config.mlflow_registry_uri)
    try:
        yield
    finally:
        trk_utils._tracking_uri, reg_utils._registry_uri = saved[0], saved[1]
        for key, val in (("MLFLOW_TRACKING_URI", saved[2]), ("MLFLOW_REGISTRY_URI", saved[3])):
            if val is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = val


# Explicit requirements: MLflow's inference of them starts a subprocess (~15 s per model).
_PIP = ["scikit-learn", "skops", "pandas", "numpy"]
MIXED_NUMERIC = ["age", "income", "score"]
MIXED_CATEGORICAL = ["city", "plan"]


def mixed_frame(n: int, seed: int = 0):
    """Numeric (double and long) + string categorical columns, some categoricals missing."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "age": rng.integers(18, 90, n).astype(np.int64),
        "income": rng.normal(50_000, 15_000, n),
        "score": rng.uniform(0, 1, n),
        "city": rng.choice(["paris", "lyon", "nice", None], n),
        "plan": rng.choice(["basic", "pro"], n),
    })
    y = ((df["score"] + (df["plan"] == "pro") * 0.3 + rng.normal(0, 0.1, n)) > 0.65).astype(np.int64)
    return df, y


def _pipeline(kind: str, numeric, categorical, seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts = [("num", Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]), numeric)]
    if categorical:
        parts.append(("cat", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                                       ("onehot", OneHotEncoder(handle_unknown="ignore"))]), categorical))
    est = {
        "hgb": lambda: HistGradientBoostingClassifier(max_iter=50, random_state=seed),
        "hgb_regressor": lambda: HistGradientBoostingRegressor(max_iter=50, random_state=seed),
        "logreg": lambda: LogisticRegression(max_iter=500),
        "rf": lambda: RandomForestClassifier(n_estimators=20, random_state=seed),
    }[kind]()
    return Pipeline([("preprocess", ColumnTransformer(parts)), ("model", est)])


def register_model(config, name: str, kind: str = "hgb", *, n_rows: int = 2_000, seed: int = 0,
                   n_features: int | None = None, alias: str | None = "champion",
                   serialization_format: str = "skops", optional_numeric: bool = False) -> str:
    """Train and register one model version; point ``alias`` at it. Returns the version string.

    ``kind``: hgb, logreg, rf (binary classifiers), hgb_multiclass, hgb_regressor.
    ``n_features``: if given, a purely numeric model on ``f0..f{n-1}`` (the benchmark's model);
    otherwise the mixed numeric + categorical frame of :func:`mixed_frame`.
    ``optional_numeric``: make ``income`` nullable in the data (signature ``required: false``).
    """
    import mlflow
    import pandas as pd
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    rng = np.random.default_rng(seed)
    if n_features:
        cols = [f"f{i}" for i in range(n_features)]
        X = pd.DataFrame(rng.normal(size=(n_rows, n_features)), columns=cols)
        y = ((X["f0"] + X["f1"] - X["f2"] + rng.normal(0, 0.5, n_rows)) > 0).astype(np.int64)
        numeric, categorical = cols, []
    else:
        X, y = mixed_frame(n_rows, seed)
        if optional_numeric:
            X.loc[X.sample(frac=0.1, random_state=seed).index, "income"] = np.nan
        numeric, categorical = MIXED_NUMERIC, MIXED_CATEGORICAL
    model_kind = kind
    if kind == "hgb_multiclass":
        y = pd.Series(np.digitize(X[numeric[0]].to_numpy(dtype=float), np.quantile(X[numeric[0]], [0.33, 0.66])))
        y = y.map({0: "low", 1: "mid", 2: "high"})
        model_kind = "hgb"
    elif kind == "hgb_regressor":
        y = X[numeric[1]].to_numpy(dtype=float) * 0.001 + rng.normal(0, 1, n_rows)
    pipe = _pipeline(model_kind, numeric, categorical, seed).fit(X, y)
    signature = infer_signature(X, pipe.predict(X.head(50)))
    with mlflow_uris(config):
        client = MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri)
        exp = client.get_experiment_by_name("serving")
        exp_id = exp.experiment_id if exp else client.create_experiment(
            "serving", artifact_location=str(Path(config.state_dir) / "artifacts"))
        with mlflow.start_run(experiment_id=exp_id):
            kwargs = {}
            if serialization_format == "skops":
                kwargs["skops_trusted_types"] = skops.io.get_untrusted_types(data=skops.io.dumps(pipe))
            info = mlflow.sklearn.log_model(pipe, name="model", signature=signature, input_example=X.head(3),
                                            serialization_format=serialization_format,
                                            registered_model_name=name, pip_requirements=_PIP, **kwargs)
        version = str(info.registered_model_version)
        if alias:
            client.set_registered_model_alias(name, alias, version)
    return version


def set_alias(config, name: str, version: str, alias: str = "champion") -> None:
    from mlflow import MlflowClient

    MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri).set_registered_model_alias(
        name, alias, str(version))


def model_artifact_dir(config, name: str, version: str) -> Path:
    """Local directory holding the registered version's files (MLmodel, model.skops)."""
    from mlflow import MlflowClient

    client = MlflowClient(config.mlflow_tracking_uri, config.mlflow_registry_uri)
    mv = client.get_model_version(name, str(version))
    model_id = getattr(mv, "model_id", None)
    if model_id:
        location = client.get_logged_model(model_id).artifact_location
    else:
        location = client.get_model_version_download_uri(name, str(version))
    location = location[len("file://"):] if location.startswith("file://") else location
    return Path(location)
