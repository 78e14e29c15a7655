"""Model specs: one YAML file declares a model's whole lifecycle.

A spec is validated with pydantic; every problem is reported as
``<file>: <field>: <problem>`` so a data scientist can fix it without reading code.

A spec is data, never code: validating one imports only estimator modules on an allow-list,
``${VAR}`` references fill string values after the YAML is parsed (an environment value can never
add fields), the recorded form of a spec keeps those references unexpanded (no environment value is
copied into MLflow or Dagster), and the YAML itself is bounded in size, depth and alias expansion.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping, Sequence
from urllib.parse import unquote

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mlplatform_assets.lib import config
from mlplatform_assets.lib.config import ENV_TRUSTED_MODULES
from mlplatform_assets.lib.model.model_io import DANGEROUS_MODULES
from mlplatform_assets.lib.serving.endpoints import check_endpoint_url

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

# metric name -> (task, direction). Direction is what "better" means.
METRICS: dict[str, tuple[str, str]] = {
    "roc_auc": ("classification", "maximize"),
    "accuracy": ("classification", "maximize"),
    "f1": ("classification", "maximize"),
    "precision": ("classification", "maximize"),
    "recall": ("classification", "maximize"),
    "log_loss": ("classification", "minimize"),
    "average_precision": ("classification", "maximize"),
    "rmse": ("regression", "minimize"),
    "mae": ("regression", "minimize"),
    "r2": ("regression", "maximize"),
    "mape": ("regression", "minimize"),
}


class SpecError(ValueError):
    """A spec file is missing, unreadable or invalid. The message names file, field and problem."""


# --- which estimators a spec may name --------------------------------------------------------------
# Importing a module runs its code, so a class path is checked against this list BEFORE anything is
# imported. scikit-learn: its public modules that hold classifiers and regressors.
SKLEARN_ESTIMATOR_MODULES = frozenset(f"sklearn.{m}" for m in (
    "calibration", "compose", "cross_decomposition", "discriminant_analysis", "dummy", "ensemble",
    "gaussian_process", "isotonic", "kernel_ridge", "linear_model", "multiclass", "multioutput",
    "naive_bayes", "neighbors", "neural_network", "semi_supervised", "svm", "tree"))
# Supported model families outside scikit-learn (their scikit-learn wrappers): module -> package to install.
MODEL_FAMILY_MODULES = {"lightgbm": "lightgbm", "lightgbm.sklearn": "lightgbm",
                        "xgboost": "xgboost", "xgboost.sklearn": "xgboost"}
# Operator-trusted plugin modules (ENV_TRUSTED_MODULES): platform configuration (never the spec),
# comma-separated module prefixes for estimators and feature transformers.
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def trusted_estimator_modules(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Module prefixes the operator trusts for estimator and transformer classes (``MLPLATFORM_TRUSTED_MODULES``);
    the same prefixes admit those classes in model files (lib/model_io.policy_from_environment)."""
    prefixes = config.read(config.ENV_TRUSTED_MODULES, environ)
    bad = [p for p in prefixes if not _DOTTED_NAME.match(p)]
    if bad:
        raise SpecError(f"{ENV_TRUSTED_MODULES}: {bad} are not module names; expected comma-separated "
                        "dotted module prefixes, e.g. acme_models,acme.ml.estimators")
    dangerous = [p for p in prefixes if p.split(".")[0] in DANGEROUS_MODULES]
    if dangerous:
        raise SpecError(f"{ENV_TRUSTED_MODULES}: {dangerous} can never be trusted (standard-library modules "
                        "that run code, start processes or touch files); list your plugin packages only")
    return prefixes


def _check_class_path(class_path: str, example: str) -> str:
    """The module part of a public dotted class path; raises ValueError for anything else."""
    module, _, attr = class_path.rpartition(".")
    if not module or not _DOTTED_NAME.match(class_path):
        raise ValueError(f"must be a dotted path like {example}")
    if attr.startswith("_"):
        raise ValueError(f"{class_path!r}: {attr} is private, not a public class")
    return module


def _in_trusted(module: str, trusted_modules: Sequence[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in trusted_modules)


def _import_class(class_path: str) -> Any:
    module, _, attr = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as exc:  # an allowed module may still fail to import (missing attribute, broken plugin)
        raise ValueError(f"cannot import {class_path!r}: {exc.__class__.__name__}: {exc}") from None


def _is_estimator_class(obj: Any, *methods: str) -> bool:
    from sklearn.base import BaseEstimator

    return (isinstance(obj, type) and issubclass(obj, BaseEstimator)
            and all(callable(getattr(obj, m, None)) for m in methods))


def load_estimator_class(class_path: str, trusted_modules: Sequence[str] = ()) -> type:
    """The estimator class ``class_path`` names. Its module is imported only when it is on the allow-list
    (scikit-learn estimator modules, the lightgbm/xgboost wrappers, or a ``trusted_modules`` prefix), and the
    class must be a scikit-learn estimator with ``fit`` and ``predict``. Raises ValueError saying why not."""
    module = _check_class_path(class_path, "sklearn.linear_model.LogisticRegression")
    if not _in_trusted(module, trusted_modules):
        if module in MODEL_FAMILY_MODULES:
            package = MODEL_FAMILY_MODULES[module]
            if importlib.util.find_spec(package) is None:  # looks the package up without running it
                raise ValueError(f"{class_path!r}: {package} is not installed (pip install 'mlplatform[{package}]')")
        elif module not in SKLEARN_ESTIMATOR_MODULES:
            raise ValueError(
                f"{class_path!r} is not an allowed estimator: use a scikit-learn estimator "
                f"(sklearn.<module>.<Class>, modules: {', '.join(sorted(m[8:] for m in SKLEARN_ESTIMATOR_MODULES))}), "
                f"a lightgbm/xgboost scikit-learn wrapper, or a module the operator trusts in {ENV_TRUSTED_MODULES}")
    obj = _import_class(class_path)
    if not _is_estimator_class(obj, "fit", "predict"):
        raise ValueError(f"{class_path!r} is not an estimator (a scikit-learn estimator class with fit and predict)")
    return obj


def load_transformer_class(class_path: str, trusted_modules: Sequence[str] = ()) -> type:
    """A custom feature transformer class. Only modules under a ``trusted_modules`` prefix
    (``MLPLATFORM_TRUSTED_MODULES``) are imported; the class must be a scikit-learn ``BaseEstimator``
    subclass with ``fit`` and ``transform``. Raises ValueError saying why not."""
    module = _check_class_path(class_path, "acme_features.HolidayFlags")
    if not _in_trusted(module, trusted_modules):
        raise ValueError(f"{class_path!r} is not in a trusted module: custom transformers are imported only from "
                         f"modules the operator lists in {ENV_TRUSTED_MODULES} "
                         f"(trusted now: {', '.join(trusted_modules) or 'none'})")
    obj = _import_class(class_path)
    if not _is_estimator_class(obj, "fit", "transform"):
        raise ValueError(f"{class_path!r} is not a transformer (a scikit-learn BaseEstimator subclass with fit "
                         "and transform)")
    return obj


def build_estimator(cls: type, params: Mapping[str, Any]) -> Any:
    """``cls(**params)`` after the estimator's own parameter validation (names, types, ranges); nothing is fitted."""
    signature = inspect.signature(cls)
    accepted = [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown} for {cls.__name__}; it accepts {sorted(accepted)}")
    try:
        estimator = cls(**params)
        # scikit-learn's type and range checks, for classes that declare constraints (plugins and other
        # families often do not, and BaseEstimator._validate_params then fails on the missing attribute).
        if hasattr(estimator, "_parameter_constraints") and hasattr(estimator, "_validate_params"):
            estimator._validate_params()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{cls.__name__}: {exc}") from None
    return estimator


def _trusted(info: ValidationInfo) -> tuple[str, ...]:
    context = info.context or {}
    return context["trusted_modules"] if "trusted_modules" in context else trusted_estimator_modules()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlSourceSpec(_Strict):
    url: str = Field(description="SQLAlchemy database URL; put it in an environment variable (${ORDERS_DB_URL}) "
                                 "so the password never sits in the spec")
    table: str | None = Field(default=None, description="Table (or schema.table) read one day at a time "
                                                        "by the spec's timestamp_column")
    query: str | None = Field(default=None, description="SELECT returning one day's rows for the bound "
                                                        "parameters :start (inclusive) and :end (exclusive)")

    @field_validator("url")
    @classmethod
    def _sqlalchemy_url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(v)
        except (ArgumentError, ValueError):
            # The value may hold a password: name the problem, never echo the URL.
            raise ValueError("is not a SQLAlchemy database URL (dialect+driver://user:password@host/database)") from None
        return v

    @field_validator("table")
    @classmethod
    def _plain_table_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?", v):
            raise ValueError("must be a table name or schema.table (letters, digits, _ and $)")
        return v

    @model_validator(mode="after")
    def _table_or_query(self) -> "SqlSourceSpec":
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of table or query")
        if self.query is not None:
            missing = [p for p in (":start", ":end") if not re.search(re.escape(p) + r"\b", self.query)]
            if missing:
                raise ValueError(f"query must bind the day bounds as {' and '.join(missing)} "
                                 "(e.g. WHERE ts >= :start AND ts < :end)")
        return self


class SourceSpec(_Strict):
    uri: str | None = Field(default=None, description="CSV/Parquet file, or directory/prefix of daily files; "
                                                      "local path or s3:// URI")
    sql: SqlSourceSpec | None = Field(default=None, description="A database table or query, read through SQLAlchemy")
    format: Literal["csv", "parquet"] | None = None
    layout: Literal["single_file", "daily_files"] | None = None
    file_pattern: str = Field(
        default="{date}.parquet",
        description="Daily file name inside the directory; {date} is YYYY-MM-DD",
    )
    example_generator: str | None = Field(
        default=None, description="Name of a built-in example-data generator that fills missing days"
    )

    @field_validator("uri")
    @classmethod
    def _supported_uri(cls, v: str) -> str:
        if not v or "\x00" in v:
            raise ValueError("must be a non-empty path or URI")
        scheme, sep, rest = v.partition("://")
        if not sep:
            return v  # a local path
        scheme = scheme.lower()
        if scheme == "s3":
            if not rest.partition("/")[0]:
                raise ValueError("s3:// URI has no bucket")
            return v
        if scheme == "file":
            host, _, path = rest.partition("/")
            if host not in ("", "localhost"):
                raise ValueError("file:// URIs must name a local path (file:///path)")
            return unquote("/" + path)  # the rest of the platform reads local paths
        raise ValueError(f"unsupported scheme {scheme}://; use a local path, file:///path or s3://bucket/prefix")

    @field_validator("file_pattern")
    @classmethod
    def _pattern_inside_source(cls, v: str) -> str:
        if v.count("{date}") != 1 or v.count("{") != 1 or v.count("}") != 1:
            raise ValueError("must contain the placeholder {date} exactly once and no other {...} placeholder")
        if v.startswith("/") or "\\" in v or "\x00" in v:
            raise ValueError("must be a relative path inside the source directory (no leading /, no backslash)")
        if ".." in v.split("/"):
            raise ValueError("must not contain '..': daily files live inside the source directory")
        return v

    @model_validator(mode="after")
    def _infer(self) -> "SourceSpec":
        if (self.uri is None) == (self.sql is None):
            raise ValueError("set exactly one of uri (files) or sql (a database)")
        if self.sql is not None:
            set_file_fields = [f for f in ("format", "layout", "example_generator") if getattr(self, f) is not None]
            if set_file_fields:
                raise ValueError(f"{', '.join(set_file_fields)} only apply to file sources, not sql")
            return self
        uri = self.uri.rstrip("/")
        suffix = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
        layout = self.layout or ("single_file" if suffix in ("csv", "parquet", "pq") else "daily_files")
        fmt = self.format
        if fmt is None:
            probe = uri if layout == "single_file" else self.file_pattern
            ext = probe.rsplit(".", 1)[-1].lower()
            fmt = {"csv": "csv", "parquet": "parquet", "pq": "parquet"}.get(ext)
            if fmt is None:
                raise ValueError("cannot infer format from the file name; set format: csv or parquet")
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "format", fmt)
        return self


class TargetSpec(_Strict):
    column: str
    classes: list[Any] | None = Field(default=None, description="Allowed labels (classification)")
    positive_class: Any | None = None
    min_value: float | None = None
    max_value: float | None = None
    labels_delayed: bool = Field(
        default=False,
        description="Labels arrive days later: a day whose target is still entirely null is valid "
                    "(scored and monitored, not trained on) until its labels land.",
    )


class AddedColumns(_Strict):
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)

    @property
    def all(self) -> list[str]:
        return [*self.numeric, *self.categorical]


class _TrustedClass(_Strict):
    """A class named by its dotted path, allowed by the trust list before anything is imported, and the
    parameters of its constructor (checked by the class itself). Subclasses say how to load the class."""

    _load_class: ClassVar  # (class_path, trusted module prefixes) -> class; raises ValueError naming the problem

    @field_validator("class_path", check_fields=False)
    @classmethod
    def _class_allowed(cls, v: str, info: ValidationInfo) -> str:
        cls._load_class(v, _trusted(info))
        return v

    @field_validator("params", check_fields=False)
    @classmethod
    def _params_accepted(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "class_path" in info.data:  # otherwise class_path itself was reported
            build_estimator(cls._load_class(info.data["class_path"], _trusted(info)), v)
        return v


class TransformerSpec(_TrustedClass):
    """A custom feature transformer from an operator-trusted module, run before the standard preprocessing.

    It receives the model's input features as a DataFrame and must return a DataFrame that still holds
    them plus the columns listed in ``adds``; those columns are imputed/encoded/scaled like declared ones.
    """

    class_path: str = Field(description="e.g. acme_features.HolidayFlags (module in MLPLATFORM_TRUSTED_MODULES)")
    params: dict[str, Any] = Field(default_factory=dict)
    adds: AddedColumns = Field(default_factory=AddedColumns,
                               description="Columns the transformer adds: numeric and/or categorical")
    _load_class: ClassVar = staticmethod(load_transformer_class)

    def build(self) -> Any:
        """A new, unfitted instance (the trust list applies here too: the environment decides)."""
        return build_estimator(load_transformer_class(self.class_path, trusted_estimator_modules()), self.params)


class FeaturesSpec(_Strict):
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    infer: bool = False
    exclude: list[str] = Field(default_factory=list)
    transformers: list[TransformerSpec] = Field(
        default_factory=list, description="Custom transformers applied in order before the standard preprocessing")

    @model_validator(mode="after")
    def _declared_or_inferred(self) -> "FeaturesSpec":
        if not self.infer and not (self.numeric or self.categorical):
            raise ValueError("list numeric and/or categorical columns, or set infer: true")
        overlap = set(self.numeric or []) & set(self.categorical or [])
        if overlap:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(overlap)}")
        seen = set(self.numeric or []) | set(self.categorical or [])
        for i, transformer in enumerate(self.transformers):
            clash = sorted(set(transformer.adds.all) & seen)
            if clash or len(set(transformer.adds.all)) != len(transformer.adds.all):
                raise ValueError(f"transformers.{i}.adds: {clash or transformer.adds.all} already named: added "
                                 "columns must be new, each listed once")
            seen |= set(transformer.adds.all)
        return self

    @property
    def added_numeric(self) -> list[str]:
        return [c for t in self.transformers for c in t.adds.numeric]

    @property
    def added_categorical(self) -> list[str]:
        return [c for t in self.transformers for c in t.adds.categorical]

# --- hyperparameter search (estimator.search; run by lib/model/search.py) ---------------------------------
class SearchRange(_Strict):
    """A numeric range to sample from: integers when ``low`` and ``high`` are both integers (and not ``log``)."""

    low: float | int
    high: float | int
    log: bool = Field(default=False, description="Sample uniformly in log space (low must be > 0)")

    @model_validator(mode="after")
    def _ordered(self) -> "SearchRange":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low})")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not self.log


class SearchSpec(_Strict):
    """Hyperparameter search before the final fit: time-ordered CV inside the training rows (never the holdout)."""

    method: Literal["random", "halving"] = "random"
    space: dict[str, list[Any] | SearchRange] = Field(
        description="param -> list of values, or {low, high, log} to sample from")
    trials: int = Field(default=20, ge=1, le=1000, description="Parameter settings to try")
    max_seconds: float = Field(default=600.0, gt=0, description="No new trial starts after this many seconds")
    cv_splits: int = Field(default=3, ge=2, le=10, description="Time-ordered folds of the training rows")

    @field_validator("space", mode="before")
    @classmethod
    def _space_shape(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("must map at least one estimator parameter to a list of values or {low, high, log}")
        for name, values in v.items():
            if isinstance(values, list):
                if not values:
                    raise ValueError(f"{name}: the list of values is empty")
            elif not (isinstance(values, dict) and {"low", "high"} <= set(values) <= {"low", "high", "log"}):
                raise ValueError(f"{name}: expected a list of values or a mapping with low, high (and optional log)")
            else:
                try:
                    SearchRange(**values)
                except ValidationError as exc:
                    problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
                    raise ValueError(f"{name}: {problems}") from None
        return v


def _check_search_space(cls: type, params: Mapping[str, Any], search: SearchSpec) -> None:
    """Every searched parameter exists and every candidate value (range ends) is accepted by the estimator."""
    fixed = sorted(set(search.space) & set(params))
    if fixed:
        raise ValueError(f"search.space: {fixed} also set in params; a parameter is either fixed or searched")
    for name, values in search.space.items():
        candidates = [values.low, values.high] if isinstance(values, SearchRange) else values
        for value in candidates:
            try:
                build_estimator(cls, {**params, name: value})
            except ValueError as exc:
                raise ValueError(f"search.space.{name}: value {value!r}: {exc}") from None
# --- end of hyperparameter search -------------------------------------------------------------------------


class EstimatorSpec(_TrustedClass):
    class_path: str = Field(description="e.g. sklearn.ensemble.HistGradientBoostingClassifier")
    params: dict[str, Any] = Field(default_factory=dict)
    scale_numeric: Literal["auto", "always", "never"] = "auto"
    search: SearchSpec | None = Field(default=None, description="Optional hyperparameter search (lib/model/search.py)")
    _load_class: ClassVar = staticmethod(load_estimator_class)

    @model_validator(mode="after")
    def _search_space_accepted(self, info: ValidationInfo) -> "EstimatorSpec":
        if self.search is not None:
            _check_search_space(load_estimator_class(self.class_path, _trusted(info)), self.params, self.search)
        return self

    def load_class(self) -> type:
        """The estimator class (the allow-list applies here too: the environment decides what is trusted)."""
        return load_estimator_class(self.class_path, trusted_estimator_modules())


class TrainingSpec(_Strict):
    window_days: int = Field(default=60, ge=2, le=3650)
    holdout_days: int = Field(default=7, ge=1)
    min_partitions: int | None = Field(default=None, ge=2)
    seed: int = 0
    max_rows: int | None = Field(default=None, ge=100)

    @model_validator(mode="after")
    def _holdout_inside_window(self) -> "TrainingSpec":
        if self.holdout_days >= self.window_days:
            raise ValueError(f"holdout_days ({self.holdout_days}) must be smaller than window_days ({self.window_days})")
        return self


class MetricsSpec(_Strict):
    primary: str
    direction: Literal["maximize", "minimize"] | None = None
    additional: list[str] = Field(default_factory=list)

    @field_validator("primary")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; choose one of {sorted(METRICS)}")
        return v

    @field_validator("additional")
    @classmethod
    def _known_all(cls, v: list[str]) -> list[str]:
        unknown = [m for m in v if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS)}")
        return v

    @model_validator(mode="after")
    def _direction(self) -> "MetricsSpec":
        natural = METRICS[self.primary][1]
        if self.direction is None:
            object.__setattr__(self, "direction", natural)
        elif self.direction != natural:
            raise ValueError(f"direction {self.direction!r} contradicts metric {self.primary!r} (better is {natural})")
        return self


class PromotionSpec(_Strict):
    min_improvement: float = Field(default=0.0, ge=0.0, description="Required gain over the champion")
    absolute_floor: float | None = Field(default=None, description="The primary metric must reach this")
    # --- the gate with uncertainty, baselines and slices (lib/model/rigor.py; docs/evaluation.md) ---
    require: Literal["significant", "point"] = Field(
        default="significant", description="significant: the lower bound of the paired confidence interval of the "
                                           "gain must clear min_improvement; point: the point estimate must")
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0, description="Confidence level of every interval")
    must_beat_baseline: bool = Field(
        default=True, description="Refuse a challenger that is not better than a simple baseline (prior/mean, "
                                  "and no baseline may be significantly better), also without a champion")
    max_slice_regression: float | None = Field(
        default=None, ge=0.0, description="Refuse a challenger whose primary metric is worse than the champion's "
                                          "by more than this on any slice of evaluation.slices (unset: report only)")
    min_slice_rows: int = Field(default=200, ge=1, description="Slices with fewer holdout rows are reported, "
                                                               "never gated")


class ImportanceSpec(_Strict):
    """Permutation importance of each input feature on the holdout, challenger and champion (lib/model/importance.py)."""

    enabled: bool = True
    # Defaults keep it cheap (measured at 100k rows: see docs/evaluation.md): ~ 2 * features * repeats * max_rows
    # predictions, for challenger and champion.
    max_rows: int = Field(default=1000, ge=100, le=1_000_000, description="Holdout rows sampled (seeded)")
    repeats: int = Field(default=2, ge=1, le=50, description="Shuffles per feature")
    top_k: int = Field(default=10, ge=1, le=1000, description="Features logged as MLflow metrics")


# --- slices of the holdout (evaluation.slices; lib/model/rigor.py) ---
class SliceSpec(_Strict):
    """A column whose values (categorical) or bins (numeric) split the holdout for per-slice metrics."""

    column: str = Field(min_length=1)
    bins: list[float] | None = Field(default=None, description="Numeric bin edges, e.g. [18, 30, 50]: slices "
                                                               "below the first, between edges and above the last")
    quantiles: int | None = Field(default=None, ge=2, le=20, description="Numeric: this many equal-count bins")
    sensitive: bool = Field(default=False, description="A protected attribute: never a model feature, carried "
                                                       "through the data for evaluation only (parity)")

    @model_validator(mode="after")
    def _one_binning(self) -> "SliceSpec":
        if self.bins is not None and self.quantiles is not None:
            raise ValueError(f"slice {self.column!r}: give bins or quantiles, not both")
        if self.bins is not None and (not self.bins or any(b >= a for b, a in zip(self.bins, self.bins[1:]))
                                      or not all(math.isfinite(b) for b in self.bins)):
            raise ValueError(f"slice {self.column!r}: bins must be finite, strictly increasing edges (at least one)")
        return self

    @property
    def numeric(self) -> bool:
        return self.bins is not None or self.quantiles is not None


class EvaluationSpec(_Strict):
    importance: ImportanceSpec = Field(default_factory=ImportanceSpec)
    slices: list[SliceSpec] = Field(default_factory=list, description="Columns to slice the holdout by: a name, "
                                                                      "or {column, bins|quantiles, sensitive}")

    @field_validator("slices", mode="before")
    @classmethod
    def _names_are_slices(cls, v: Any) -> Any:
        return [{"column": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @field_validator("slices")
    @classmethod
    def _each_column_once(cls, v: list[SliceSpec]) -> list[SliceSpec]:
        names = [s.column for s in v]
        twice = sorted({c for c in names if names.count(c) > 1})
        if twice:
            raise ValueError(f"slice column(s) {twice} listed more than once")
        return v

    @property
    def sensitive_columns(self) -> list[str]:
        return [s.column for s in self.slices if s.sensitive]


def _check_slices(evaluation: EvaluationSpec, features: "FeaturesSpec", target: str, timestamp: str) -> None:
    """Slices name data columns other than the target and timestamp; a sensitive one is never a feature."""
    declared = {*(features.numeric or []), *(features.categorical or [])}
    added = {*features.added_numeric, *features.added_categorical}
    for i, s in enumerate(evaluation.slices):
        where = f"slices.{i}"
        if s.column in (target, timestamp):
            raise ValueError(f"{where}: {s.column!r} is the target or timestamp column; slice by a data column")
        if s.column in added:
            raise ValueError(f"{where}: {s.column!r} is added by a feature transformer; slices read the data's columns")
        if s.sensitive and s.column in declared:
            raise ValueError(f"{where}: {s.column!r} is sensitive but listed as a model feature; a sensitive "
                             "attribute is for evaluation only (remove it from features or set sensitive: false)")
        if s.numeric and s.column in set(features.categorical or []):
            raise ValueError(f"{where}: bins/quantiles need a numeric column; {s.column!r} is categorical")
# --- end of slices ---


# --- per-column data rules and quarantine (validation.columns, validation.on_failure; lib/data/validation.py) ---
COLUMN_RULES = ("max_null_share", "min", "max", "allowed", "unique")


class ColumnRuleSpec(_Strict):
    """Rules on one column of each day's raw rows. Every rule given in one entry shares its ``severity``;
    a column may have several entries (e.g. a blocking ``min`` and a warning ``max``)."""

    column: str = Field(min_length=1)
    max_null_share: float | None = Field(default=None, ge=0.0, le=1.0,
                                         description="Share of null rows allowed (overrides validation.max_null_share)")
    min: float | None = Field(default=None, description="Smallest value allowed (numeric columns)")
    max: float | None = Field(default=None, description="Largest value allowed (numeric columns)")
    allowed: list[str | int | float | bool] | None = Field(default=None, description="The only values allowed")
    unique: bool = Field(default=False, description="No non-null value may repeat within the day")
    severity: Literal["block", "warn"] = Field(
        default="block", description="block: the day fails (blocked or quarantined); warn: reported only")

    @model_validator(mode="after")
    def _meaningful(self) -> "ColumnRuleSpec":
        if not self.rules:
            raise ValueError(f"column {self.column!r}: give at least one rule: {', '.join(COLUMN_RULES[:-1])} "
                             "or unique: true")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.column!r}: min ({self.min:g}) is larger than max ({self.max:g})")
        if self.allowed is not None and not self.allowed:
            raise ValueError(f"column {self.column!r}: allowed is empty; list at least one value")
        return self

    @property
    def rules(self) -> dict[str, Any]:
        """Rule name -> its threshold, for the rules this entry sets (in COLUMN_RULES order)."""
        return {r: getattr(self, r) for r in COLUMN_RULES
                if getattr(self, r) is not None and getattr(self, r) is not False}


class ValidationSpec(_Strict):
    max_null_share: float = Field(default=0.3, ge=0.0, le=1.0)
    max_duplicate_share: float = Field(default=0.01, ge=0.0, le=1.0)
    min_rows: int = Field(default=1, ge=1)
    on_failure: Literal["block", "quarantine"] = Field(
        default="block", description="block: a failing day stops the run; quarantine: the day is left out of "
                                     "training and monitoring, recorded and alerted, and the run goes on")
    columns: list[ColumnRuleSpec] = Field(default_factory=list, description="Per-column rules with a severity")

    @model_validator(mode="after")
    def _one_threshold_per_rule(self) -> "ValidationSpec":
        first: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(self.columns):
            for rule in entry.rules:
                if (entry.column, rule) in first:
                    raise ValueError(f"columns.{i}: {rule} of {entry.column!r} is already set in "
                                     f"columns.{first[entry.column, rule]}; give each rule of a column once")
                first[entry.column, rule] = i
        return self

    def own_null_share_columns(self) -> set[str]:
        """Columns whose null share has their own rule (the global max_null_share does not apply to them)."""
        return {e.column for e in self.columns if e.max_null_share is not None}


def _check_column_rules(validation: ValidationSpec, features: "FeaturesSpec", target: str, timestamp: str) -> None:
    """Rules must name columns of the raw data; with declared features, those are known here."""
    added = set(features.added_numeric) | set(features.added_categorical)
    numeric = set(features.numeric or [])
    known = numeric | set(features.categorical or []) | {target, timestamp}
    for i, entry in enumerate(validation.columns):
        where = f"columns.{i}.column"
        if entry.column in added:
            raise ValueError(f"{where}: {entry.column!r} is added by a feature transformer; rules check the raw "
                             "data's columns")
        if not features.infer and entry.column not in known:
            raise ValueError(f"{where}: {entry.column!r} is not a column of this model; rules apply to the "
                             f"declared features, the target and the timestamp: {sorted(known)}")
        ranged = [r for r in ("min", "max") if r in entry.rules]
        if ranged and (entry.column == timestamp or entry.column in set(features.categorical or [])):
            raise ValueError(f"columns.{i}: {' and '.join(ranged)} only apply to numeric columns; {entry.column!r} is "
                             f"{'the timestamp' if entry.column == timestamp else 'a categorical feature'}")


class DriftSpec(_Strict):
    # Choices come from the drift test registry (lib/monitoring/drift/stattests.py): a new test is selectable here
    # without editing this file.
    numerical_stattest: str | None = Field(
        default=None, description="Test for numerical columns (default: Evidently's choice by sample size)")
    categorical_stattest: str | None = Field(
        default=None, description="Test for categorical columns (default: Evidently's choice by sample size)")
    stattest_threshold: float | None = Field(default=None, gt=0.0, description="Threshold for the chosen tests")
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    retrain_on_drift: bool = True
    cooldown_hours: float = Field(default=12.0, ge=0.0)
    max_retrains_per_day: int = Field(default=2, ge=0)
    quality_floor: float | None = None
    auto_rollback: bool = False

    @field_validator("numerical_stattest", "categorical_stattest")
    @classmethod
    def _registered_stattest(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Imported here: the registry pulls in NumPy/SciPy, which loading a spec otherwise does not need.
        from mlplatform_assets.lib.monitoring.drift.stattests import stattest_names

        choices = stattest_names(info.field_name.split("_")[0])
        if v is not None and v not in choices:
            raise ValueError(f"unknown test {v!r}; choose one of: {', '.join(choices)}")
        return v


class ScheduleSpec(_Strict):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    enabled: bool = False

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        # Dagster builds the schedule, so its own cron parser decides (through its public API; imported
        # only here so the rest of lib/ stays free of Dagster).
        import dagster as dg

        try:
            dg.ScheduleDefinition(name="cron_check", cron_schedule=v, job_name="cron_check")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError(f"{v!r} is not a valid cron expression (5 fields: minute hour day-of-month month "
                             "day-of-week, e.g. '0 2 * * *')") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {v!r}") from None
        return v


class ServingSpec(_Strict):
    endpoints: list[Annotated[str, AfterValidator(check_endpoint_url)]] = Field(
        default_factory=list, description="Base URLs (http/https) of services that serve this model")
    poll_interval_s: float = Field(default=10.0, gt=0.0)


# --- monitoring: staleness backtest and offline-vs-online agreement (lib/model/staleness.py, batch.py) ---
class StalenessSpec(_Strict):
    """The backtest run at training: how fast quality decays with the model's age (lib/model/staleness.py)."""

    enabled: bool = Field(default=True, description="Run the backtest at training (cheap: refits are subsampled)")
    # Default: the real cut only (free). A refit of a boosted-tree pipeline costs 30-50% of the full training even
    # on 2,000 rows (per-iteration overhead), measured by benchmarks/lifecycle.py --rigor (docs/performance.md).
    cuts: int = Field(default=1, ge=1, le=10, description="Training cuts, the real one included (it costs no refit); "
                                                        "each further cut refits the pipeline once")
    horizon_days: int = Field(default=14, ge=2, le=365, description="Ages (days after a refit cut) scored per cut")
    max_train_rows: int = Field(default=2000, ge=100, description="Rows each refit trains on (sampled)")
    max_rows_per_day: int = Field(default=500, ge=50, description="Rows scored per refit and day (sampled)")
    tolerance: float | None = Field(
        default=None, gt=0.0, description="Allowed drop of the primary metric (its units) before retraining; "
                                          "default: 1% of the fresh model's value, at least promotion.min_improvement")


class MonitoringSpec(_Strict):
    staleness: StalenessSpec = Field(default_factory=StalenessSpec)
    max_offline_online_gap: float | None = Field(
        default=None, gt=0.0, description="Alert when |realized - holdout| of the primary metric exceeds this "
                                          "(metric units); unset: the gap is recorded, never alerted")
    offline_online_min_rows: int = Field(
        default=200, ge=1, description="Labeled rows a version needs on a day before its gap can alert")
# --- end of staleness and offline-vs-online ---------------------------------------------------------------


class ModelSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    owner: str | None = None
    task: Literal["classification", "regression"]
    source: SourceSpec
    timestamp_column: str
    partition_start: dt.date
    target: TargetSpec
    features: FeaturesSpec
    estimator: EstimatorSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    metrics: MetricsSpec
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    # field path -> the string as the spec wrote it, for values that held ${VAR} references (see parse_spec)
    _as_written: dict[tuple[str | int, ...], str] = PrivateAttr(default_factory=dict)

    @field_validator("evaluation", "validation")
    @classmethod
    def _name_data_columns(cls, v: EvaluationSpec | ValidationSpec, info: ValidationInfo) -> Any:
        """Slices and column rules must name columns of the data (checked against features, target, timestamp)."""
        if {"features", "target", "timestamp_column"} <= set(info.data):  # otherwise those were reported
            check = _check_slices if info.field_name == "evaluation" else _check_column_rules
            check(v, info.data["features"], info.data["target"].column, info.data["timestamp_column"])
        return v

    @field_validator("partition_start")
    @classmethod
    def _not_in_future(cls, v: dt.date) -> dt.date:
        today = dt.datetime.now(dt.timezone.utc).date()
        if v > today:
            raise ValueError(f"{v} is in the future (today is {today} UTC); the first partition must be a day "
                             "that has begun")
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> "ModelSpec":
        for m in [self.metrics.primary, *self.metrics.additional]:
            if METRICS[m][0] != self.task:
                raise ValueError(f"metrics: {m!r} is a {METRICS[m][0]} metric but task is {self.task!r}")
        from sklearn.base import is_classifier, is_regressor

        cls = load_estimator_class(self.estimator.class_path, _trusted(info))
        estimator = build_estimator(cls, self.estimator.params)
        kind = ("a classifier" if is_classifier(estimator) else "a regressor" if is_regressor(estimator)
                else "neither a classifier nor a regressor")
        if kind != {"classification": "a classifier", "regression": "a regressor"}[self.task]:
            raise ValueError(f"estimator: {cls.__name__} is {kind} but task is {self.task}")
        cols = [*(self.features.numeric or []), *(self.features.categorical or []),
                *self.features.added_numeric, *self.features.added_categorical]
        for reserved in (self.target.column, self.timestamp_column):
            if reserved in cols:
                raise ValueError(f"features: {reserved!r} is the target or timestamp column, not a feature")
        return self

    # --- derived values ---------------------------------------------------
    @property
    def higher_is_better(self) -> bool:
        return self.metrics.direction == "maximize"

    def as_written(self, *path: str | int) -> Any:
        """The value at ``path`` (e.g. ``"source", "uri"``) as the spec wrote it: ``${VAR}`` references stay
        unexpanded. Use it for anything recorded or displayed (metadata, params, descriptions)."""
        value: Any = self._recorded()
        for key in path:
            value = value[key]
        return value

    def _recorded(self, exclude_none: bool = False) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=exclude_none)
        for path, written in self._as_written.items():
            node = data
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = written
        return data

    def canonical_json(self) -> str:
        """The spec as written (references unexpanded), canonically serialized: the same file gives the same
        JSON in every environment, and no environment value is in it."""
        return json.dumps(self._recorded(), sort_keys=True, separators=(",", ":"))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_yaml(self) -> str:
        """The recorded spec (what MLflow stores): every field, references unexpanded, so ``parse_spec`` of it
        resolves them again from the reader's environment."""
        return yaml.safe_dump(self._recorded(exclude_none=True), sort_keys=False)


# --- reading the YAML -----------------------------------------------------------------------------------
MAX_SPEC_BYTES = 1 << 20  # a spec is a short text file; this bounds parsing time and memory
MAX_YAML_DEPTH = 50
MAX_YAML_NODES = 100_000  # after alias expansion ("billion laughs" expands 10 aliases per level)


class _YamlTooComplex(yaml.YAMLError):
    pass


class _BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses deep nesting and documents whose aliases expand beyond
    MAX_YAML_NODES values. It measures while composing (an alias is a shared node, not a copy), so
    the check itself costs no more than the file's own size."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values when expanded, expanded depth)

    def compose_node(self, parent: Any, index: Any) -> Any:
        is_alias = self.check_event(yaml.AliasEvent)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _YamlTooComplex(f"nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if is_alias:
            if id(node) not in self._measured:
                raise _YamlTooComplex("an alias refers to the node that contains it (recursive alias)")
            return node
        children = (node.value if isinstance(node, yaml.SequenceNode) else
                    [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        sizes = [self._measured[id(c)] for c in children]
        count = 1 + sum(n for n, _ in sizes)
        depth = 1 + max((d for _, d in sizes), default=0)
        if count > MAX_YAML_NODES:
            raise _YamlTooComplex(f"expands to more than {MAX_YAML_NODES} values (YAML aliases?)")
        if depth > MAX_YAML_DEPTH:
            raise _YamlTooComplex(f"nested deeper than {MAX_YAML_DEPTH} levels (through aliases)")
        self._measured[id(node)] = (count, depth)
        return node


def _too_large(path: str) -> SpecError:
    return SpecError(f"{path}: (top level): larger than {MAX_SPEC_BYTES // 1024} KiB; a spec is a short YAML file")


def _load_yaml(text: str, path: str) -> Any:
    if len(text) > MAX_SPEC_BYTES:
        raise _too_large(path)
    try:
        return yaml.load(text, Loader=_BoundedSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlTooComplex as exc:
        raise SpecError(f"{path}: (top level): {exc}") from None
    except yaml.YAMLError as exc:
        hint = ("\n(a ${VAR} reference inside {...} or [...] must be quoted: \"s3://${BUCKET}/x\")"
                if "${" in text else "")
        raise SpecError(f"{path}: (top level): not valid YAML: {exc}{hint}") from None


# --- ${VAR} references ------------------------------------------------------------------------------------
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
FieldPath = tuple[str | int, ...]


def _field_name(path: FieldPath) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _substitute(node: Any, variables: Mapping[str, str], spec_path: str, path: FieldPath,
                substituted: dict[FieldPath, tuple[str, str]]) -> Any:
    """Fill ``${VAR}`` references in string values (never in keys) of the parsed document. A value can only
    become a string: whatever it contains (newlines, colons), it cannot add or change other fields.
    ``substituted`` collects path -> (as written, expanded)."""
    if isinstance(node, dict):
        return {k: _substitute(v, variables, spec_path, (*path, k), substituted) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, variables, spec_path, (*path, i), substituted) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def repl(m: re.Match[str]) -> str:
        key, default = m.group(1), m.group(2)
        if key in variables:
            return variables[key]
        if default is not None:
            return default
        raise SpecError(f"{spec_path}: {_field_name(path)}: references ${{{key}}}, which is not set "
                        f"(use ${{{key}:-default}} for a default)")

    expanded = _ENV_REF.sub(repl, node)
    if expanded != node:
        substituted[path] = (node, expanded)
    return expanded


def _mask(text: str, substituted: dict[FieldPath, tuple[str, str]]) -> str:
    """Error messages show referenced values as written (``${VAR}``), never expanded."""
    for written, expanded in sorted(substituted.values(), key=lambda we: -len(we[1])):
        if len(expanded) >= 4:  # shorter values would mask unrelated text and hide nothing secret
            text = text.replace(expanded, written)
    return text


def _format_errors(path: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = _field_name(tuple(err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/adding-a-model.md)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{path}: {field}: {msg}")
    return "\n".join(lines)


def parse_spec(text: str, path: str = "<spec>", variables: Mapping[str, str] | None = None,
               base_dir: Path | None = None) -> ModelSpec:
    """Parse and validate spec text. ``variables`` fill ``${VAR}`` references in string values (default: the
    environment plus MLPLATFORM_HOME, see :func:`spec_variables`)."""
    raw = _load_yaml(text, path)
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: (top level): expected a mapping of fields, got {type(raw).__name__}")
    if variables is None:
        from mlplatform_assets.lib.config import load_config

        variables = spec_variables(load_config().state_dir)
    substituted: dict[FieldPath, tuple[str, str]] = {}
    raw = _substitute(raw, variables, path, (), substituted)
    source = raw.get("source")
    if base_dir is not None and isinstance(source, dict) and isinstance(source.get("uri"), str):
        uri = source["uri"]
        if "://" not in uri and not os.path.isabs(uri):
            source["uri"] = str((base_dir / uri).resolve())
    context = {"trusted_modules": trusted_estimator_modules()}
    try:
        spec = ModelSpec.model_validate(raw, context=context)
    except ValidationError as exc:
        raise SpecError(_mask(_format_errors(path, exc), substituted)) from None
    spec._as_written = {p: written for p, (written, _) in substituted.items()}
    searched = [_field_name(p) for p in spec._as_written if p[:2] == ("estimator", "search")]
    if searched:
        # Every trial's values are recorded (MLflow child runs, search.json): an environment value would be too.
        raise SpecError(f"{path}: {searched[0]}: estimator.search values are recorded with every trial; write them "
                        "literally, not as ${VAR} references")
    sql = spec.source.sql
    if sql is not None and ("source", "sql", "url") not in spec._as_written:
        from sqlalchemy.engine import make_url

        if make_url(sql.url).password:
            # The spec is recorded (MLflow, Dagster metadata): a literal password would be recorded with it.
            raise SpecError(f"{path}: source.sql.url: holds a password; put the URL in an environment variable "
                            "and write source.sql.url: ${ORDERS_DB_URL}")
    return spec


def spec_variables(state_dir: str) -> dict[str, str]:
    """Variables a spec may reference: the environment plus MLPLATFORM_HOME."""
    variables = dict(config.environment())
    variables["MLPLATFORM_HOME"] = state_dir
    return variables


def load_spec(path: str | Path, state_dir: str | None = None) -> ModelSpec:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(f"{p}: cannot read spec file: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise _too_large(str(p))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p}: (top level): not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "save the spec as UTF-8") from None
    from mlplatform_assets.lib.config import load_config

    variables = spec_variables(state_dir or load_config().state_dir)
    spec = parse_spec(text, str(p), variables, base_dir=p.parent)
    if spec.name != p.stem:
        raise SpecError(f"{p}: name: {spec.name!r} must match the file name {p.stem!r}")
    return spec


def load_specs(models_dir: str | Path, state_dir: str | None = None) -> list[ModelSpec]:
    """All ``*.yaml``/``*.yml`` specs in a directory, sorted by name. Errors from every file are reported together."""
    d = Path(models_dir)
    if not d.is_dir():
        raise SpecError(f"{d}: models directory does not exist")
    specs, errors = [], []
    for p in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
        try:
            specs.append(load_spec(p, state_dir))
        except SpecError as exc:
            errors.append(str(exc))
    if errors:
        raise SpecError("\n".join(errors))
    return specs
