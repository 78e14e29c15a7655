"""Model specs: one YAML file declares a model's whole lifecycle.

A spec is validated with pydantic; every problem is reported as
``<file>: <field>: <problem>`` so a data scientist can fix it without reading code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    uri: str = Field(description="CSV/Parquet file, or directory/prefix of daily files; local path or s3:// URI")
    format: Literal["csv", "parquet"] | None = None
    layout: Literal["single_file", "daily_files"] | None = None
    file_pattern: str = Field(
        default="{date}.parquet",
        description="Daily file name inside the directory; {date} is YYYY-MM-DD",
    )
    example_generator: str | None = Field(
        default=None, description="Name of a built-in example-data generator that fills missing days"
    )

    @field_validator("file_pattern")
    @classmethod
    def _pattern_has_date(cls, v: str) -> str:
        if "{date}" not in v:
            raise ValueError("must contain the placeholder {date}")
        return v

    @model_validator(mode="after")
    def _infer(self) -> "SourceSpec":
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


class FeaturesSpec(_Strict):
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    infer: bool = False
    exclude: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _declared_or_inferred(self) -> "FeaturesSpec":
        if not self.infer and not (self.numeric or self.categorical):
            raise ValueError("list numeric and/or categorical columns, or set infer: true")
        overlap = set(self.numeric or []) & set(self.categorical or [])
        if overlap:
            raise ValueError(f"columns listed as both numeric and categorical: {sorted(overlap)}")
        return self


class EstimatorSpec(_Strict):
    class_path: str = Field(description="e.g. sklearn.ensemble.HistGradientBoostingClassifier")
    params: dict[str, Any] = Field(default_factory=dict)
    scale_numeric: Literal["auto", "always", "never"] = "auto"

    @field_validator("class_path")
    @classmethod
    def _importable(cls, v: str) -> str:
        module, _, attr = v.rpartition(".")
        if not module:
            raise ValueError("must be a dotted path like sklearn.linear_model.LogisticRegression")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import {v!r}: {exc}") from None
        if not (hasattr(obj, "fit") and hasattr(obj, "predict")):
            raise ValueError(f"{v!r} is not an estimator (no fit/predict)")
        return v


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


class ValidationSpec(_Strict):
    max_null_share: float = Field(default=0.3, ge=0.0, le=1.0)
    max_duplicate_share: float = Field(default=0.01, ge=0.0, le=1.0)
    min_rows: int = Field(default=1, ge=1)


class DriftSpec(_Strict):
    numerical_stattest: Literal["ks", "wasserstein", "psi", "jensenshannon"] | None = Field(
        default=None, description="Test for numerical columns (default: Evidently's choice by sample size)")
    categorical_stattest: Literal["chisquare", "z", "psi", "jensenshannon"] | None = Field(
        default=None, description="Test for categorical columns (default: Evidently's choice by sample size)")
    stattest_threshold: float | None = Field(default=None, gt=0.0, description="Threshold for the chosen tests")
    drift_share: float = Field(default=0.5, gt=0.0, le=1.0)
    retrain_on_drift: bool = True
    cooldown_hours: float = Field(default=12.0, ge=0.0)
    max_retrains_per_day: int = Field(default=2, ge=0)
    quality_floor: float | None = None
    auto_rollback: bool = False


class ScheduleSpec(_Strict):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    enabled: bool = False

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"{v!r} is not a 5-field cron expression")
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
    endpoints: list[str] = Field(default_factory=list, description="Base URLs of services that serve this model")
    poll_interval_s: float = Field(default=10.0, gt=0.0)


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
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)

    @model_validator(mode="after")
    def _consistent(self) -> "ModelSpec":
        for m in [self.metrics.primary, *self.metrics.additional]:
            if METRICS[m][0] != self.task:
                raise ValueError(f"metrics: {m!r} is a {METRICS[m][0]} metric but task is {self.task!r}")
        est = self.estimator.class_path.rsplit(".", 1)[-1]
        if self.task == "classification" and est.endswith("Regressor"):
            raise ValueError(f"estimator: {est} is a regressor but task is classification")
        if self.task == "regression" and est.endswith("Classifier"):
            raise ValueError(f"estimator: {est} is a classifier but task is regression")
        cols = [*(self.features.numeric or []), *(self.features.categorical or [])]
        for reserved in (self.target.column, self.timestamp_column):
            if reserved in cols:
                raise ValueError(f"features: {reserved!r} is the target or timestamp column, not a feature")
        return self

    # --- derived values ---------------------------------------------------
    @property
    def primary_metric(self) -> str:
        return self.metrics.primary

    @property
    def higher_is_better(self) -> bool:
        return self.metrics.direction == "maximize"

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(text: str, variables: dict[str, str], path: str) -> str:
    def repl(m: re.Match[str]) -> str:
        key, default = m.group(1), m.group(2)
        if key in variables:
            return variables[key]
        if default is not None:
            return default
        raise SpecError(f"{path}: references ${{{key}}}, which is not set (use ${{{key}:-default}} for a default)")

    return _ENV_REF.sub(repl, text)


def _format_errors(path: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/adding-a-model.md)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{path}: {field}: {msg}")
    return "\n".join(lines)


def parse_spec(text: str, path: str = "<spec>", variables: dict[str, str] | None = None,
               base_dir: Path | None = None) -> ModelSpec:
    """Parse and validate spec text. ``variables`` fill ``${VAR}`` references."""
    text = _interpolate(text, dict(variables or {}), path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: (top level): expected a mapping of fields, got {type(raw).__name__}")
    source = raw.get("source")
    if base_dir is not None and isinstance(source, dict) and isinstance(source.get("uri"), str):
        uri = source["uri"]
        if "://" not in uri and not os.path.isabs(uri):
            source["uri"] = str((base_dir / uri).resolve())
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_errors(path, exc)) from None


def spec_variables(state_dir: str) -> dict[str, str]:
    """Variables a spec may reference: the environment plus MLPLATFORM_HOME."""
    variables = dict(os.environ)
    variables["MLPLATFORM_HOME"] = state_dir
    return variables


def load_spec(path: str | Path, state_dir: str | None = None) -> ModelSpec:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(f"{p}: cannot read spec file: {exc.strerror or exc}") from None
    from .config import load_config

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
