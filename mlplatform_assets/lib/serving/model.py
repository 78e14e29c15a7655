"""Loading a registered scikit-learn model without pickle, and running it on a batch.

The service never unpickles: ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` is set in the
serving process and only models saved with ``serialization_format="skops"`` are accepted. What a
model file may contain is decided by the platform's one model trust policy
(:mod:`mlplatform_assets.lib.model.model_io`, built by ``policy_from_environment``), extended only by the
operator's plugin modules (``MLPLATFORM_TRUSTED_MODULES``) and the exact class names listed in
``MLPLATFORM_SERVING_TRUSTED_TYPES`` - never by the ``skops_trusted_types`` the model artifact
declares about itself. (MLflow 3.17's own ``mlflow.sklearn.load_model`` refuses skops models too when
the flag is false, which is why the service reads the artifact itself.)
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

from mlplatform_assets.lib.model.model_io import (
    ModelFileError,
    ModelTrustError,
    TrustedTypeConfigError,
    load_skops_file,
    policy_from_environment,
    skops_path,
)
from mlplatform_assets.lib.serving.settings import ENV_TRUSTED_TYPES
from mlplatform_assets.lib.serving.validation import (
    Column,
    Validator,
    columns_from_signature,
)

log = logging.getLogger("mlplatform.serving.model")

# Final estimators whose predict() is exactly classes_[argmax(predict_proba())]; for these the
# service computes probabilities once and derives the class, others get both calls.
# LightGBM's predict is its label encoder over argmax(predict_proba); XGBoost's is argmax for multiclass and
# p > 0.5 for binary (argmax of [1-p, p] picks the same class, ties included) with classes_ = 0..n-1.
_ARGMAX_CLASSIFIERS = frozenset({
    "HistGradientBoostingClassifier", "RandomForestClassifier", "ExtraTreesClassifier",
    "DecisionTreeClassifier", "GradientBoostingClassifier", "LogisticRegression",
    "LGBMClassifier", "XGBClassifier",
})


class ModelLoadError(Exception):
    pass


@dataclass
class Prediction:
    predictions: np.ndarray
    proba: np.ndarray | None


@dataclass
class ModelHandle:
    """One loaded model version. Immutable once published; swapped as a single reference."""

    name: str
    version: str
    model: object
    columns: list[Column]
    validator: Validator
    classes: list | None
    has_proba: bool
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self):
        steps = getattr(self.model, "steps", None)
        if steps:
            self._pre = self.model[:-1] if len(steps) > 1 else None
            self._final = self.model[-1]
        else:
            self._pre, self._final = None, self.model
        self._argmax = type(self._final).__name__ in _ARGMAX_CLASSIFIERS
        _one_thread(self._final)
        self._classes_arr = np.asarray(self.classes) if self.classes is not None else None

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def binary(self) -> bool:
        return self.classes is not None and len(self.classes) == 2

    def build_frame(self, cols: dict[str, list]):
        import pandas as pd

        data = {}
        for col in self.columns:
            vals = cols[col.name]
            kind = col.kind
            if kind == "double":
                arr = np.array(vals, dtype=np.float64)
            elif kind == "float":
                arr = np.array(vals, dtype=np.float32)
            elif kind in ("long", "integer"):
                if None in vals:
                    arr = np.array(vals, dtype=np.float64)
                else:
                    arr = np.array(vals, dtype=np.int64 if kind == "long" else np.int32)
            elif kind == "boolean":
                arr = np.array(vals, dtype=object if None in vals else np.bool_)
            elif kind == "datetime":
                arr = np.array([np.datetime64("NaT") if v is None else v for v in vals], dtype="datetime64[ns]")
            else:
                arr = np.empty(len(vals), dtype=object)
                arr[:] = vals
            data[col.name] = arr
        return pd.DataFrame(data, copy=False)

    def predict(self, frame) -> Prediction:
        Xt = self._pre.transform(frame) if self._pre is not None else frame
        if self.has_proba:
            proba = self._final.predict_proba(Xt)
            if self._argmax:
                preds = self._classes_arr.take(np.argmax(proba, axis=1))
            else:
                preds = np.asarray(self._final.predict(Xt))
            return Prediction(preds, np.asarray(proba, dtype=np.float64))
        return Prediction(np.asarray(self._final.predict(Xt)), None)


def _one_thread(estimator) -> None:
    """Serving runs one thread per worker: an estimator with its own thread setting (``n_jobs``: forests,
    LightGBM; XGBoost maps it to its booster's ``nthread``) gets 1, so it never spawns a pool per request."""
    get_params = getattr(estimator, "get_params", None)
    if get_params is not None and "n_jobs" in get_params(deep=False):
        estimator.set_params(n_jobs=1)


def _client(config):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=config.mlflow_tracking_uri, registry_uri=config.mlflow_registry_uri)


def resolve_alias(config, name: str, alias: str) -> str | None:
    """The version the alias points at, or None if the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client(config).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_version(config, name: str, version: str, max_rows: int, extra_trusted=frozenset()) -> ModelHandle:
    """Download, verify and load one registered version, then warm it up. Raises ModelLoadError.

    ``extra_trusted``: exact class names an operator added (``MLPLATFORM_SERVING_TRUSTED_TYPES``);
    an entry naming a function, a metaclass or a class from a dangerous module fails the load.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model
    from threadpoolctl import threadpool_limits

    try:
        policy = policy_from_environment(sorted(extra_trusted), ENV_TRUSTED_TYPES)
    except TrustedTypeConfigError as exc:
        raise ModelLoadError(str(exc)) from None
    tmp = tempfile.mkdtemp(prefix="mlplatform-serving-")
    try:
        try:
            # Resolve the version's own artifact location through OUR client (explicit URIs: no
            # reliance on MLflow's process-global registry URI), then fetch that location.
            source = _client(config).get_model_version_download_uri(name, str(version))
            local = download_artifacts(artifact_uri=source, dst_path=tmp,
                                       tracking_uri=config.mlflow_tracking_uri)
            mlmodel = Model.load(os.path.join(local, "MLmodel"))
        except Exception as exc:  # noqa: BLE001 - any failure here is a failed load
            raise ModelLoadError(f"cannot fetch {name} version {version}: {type(exc).__name__}: {exc}") from exc
        what = f"{name} version {version}"
        try:
            model = load_skops_file(skops_path(local, mlmodel.flavors, what), what, policy)
        except ModelTrustError as exc:
            raise ModelLoadError(f"{exc} ({ENV_TRUSTED_TYPES} can add reviewed classes, MLPLATFORM_TRUSTED_MODULES "
                                 "plugin modules; functions are never loaded)") from exc
        except ModelFileError as exc:
            raise ModelLoadError(str(exc)) from exc
        try:
            columns = columns_from_signature(mlmodel.signature)
        except ValueError as exc:
            raise ModelLoadError(f"{name} version {version}: {exc}") from exc
        classes = getattr(model, "classes_", None)
        handle = ModelHandle(
            name=name, version=str(version), model=model, columns=columns,
            validator=Validator(columns, max_rows),
            classes=list(classes.tolist() if hasattr(classes, "tolist") else classes) if classes is not None else None,
            has_proba=classes is not None and hasattr(model, "predict_proba"),
        )
        example = None
        try:
            example = mlmodel.load_input_example(local)
        except Exception:  # noqa: BLE001 - the example is optional
            example = None
        with threadpool_limits(1):
            try:
                if example is not None and hasattr(example, "columns"):
                    handle.predict(example)
                else:
                    handle.predict(handle.build_frame(_synthetic_row(columns)))
            except Exception as exc:  # noqa: BLE001
                if example is not None:
                    raise ModelLoadError(f"{name} version {version}: warm-up prediction on the input example "
                                         f"failed: {type(exc).__name__}: {exc}") from exc
                log.warning("warm-up prediction on a synthetic row failed for %s version %s: %s",
                            name, version, type(exc).__name__)
        return handle
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _synthetic_row(columns: list[Column]) -> dict[str, list]:
    row = {}
    for c in columns:
        if c.kind in ("double", "float", "long", "integer"):
            row[c.name] = [0]
        elif c.kind == "boolean":
            row[c.name] = [False]
        elif c.kind == "datetime":
            row[c.name] = [np.datetime64("2000-01-01", "ns")]
        else:
            row[c.name] = [None if not c.required else ""]
    return row
