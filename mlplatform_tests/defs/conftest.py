"""Fixtures for Dagster-layer tests: a private platform state directory and a small, fast model spec."""

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from mlplatform_assets.lib import example_data
from mlplatform_assets.lib.config import ensure_dirs, load_config

SMALL_END = dt.date(2026, 3, 12)
SMALL_DAYS = [SMALL_END - dt.timedelta(days=i) for i in range(11, -1, -1)]  # 12 days

SMALL_SPEC = """\
name: {name}
task: classification
source:
  uri: {source}
  file_pattern: "{{date}}.parquet"
timestamp_column: event_time
partition_start: 2026-02-01
target: {{column: churned, classes: [0, 1], positive_class: 1}}
features:
  numeric: [tenure_months, monthly_charges, total_charges, usage_gb, support_calls, days_since_last_login, age]
  categorical: [plan, contract, payment_method, region]
estimator:
  class_path: {estimator}
  params: {params}
training: {{window_days: 12, holdout_days: 3, seed: 3}}
metrics: {{primary: roc_auc, additional: [accuracy]}}
promotion: {{min_improvement: 0.001, absolute_floor: {floor}}}
validation: {{max_null_share: 0.2, max_duplicate_share: 0.01, min_rows: 20}}
"""


def write_small_spec(models_dir: Path, source: Path | str, name: str = "small_churn",
                     estimator: str = "sklearn.linear_model.LogisticRegression",
                     params: str = "{max_iter: 500}", floor: str = "0.6") -> Path:
    models_dir.mkdir(parents=True, exist_ok=True)
    path = models_dir / f"{name}.yaml"
    path.write_text(SMALL_SPEC.format(name=name, source=source, estimator=estimator, params=params, floor=floor))
    return path


@pytest.fixture
def platform(tmp_path, monkeypatch):
    """An isolated platform: state dir, Dagster home, MLflow store and models dir under tmp_path."""
    home = tmp_path / "state"
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("MLPLATFORM_HOME", str(home))
    monkeypatch.setenv("MLPLATFORM_MODELS_DIR", str(models))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLPLATFORM_DATA_URI", "MLPLATFORM_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    config = load_config()
    ensure_dirs(config)
    return config


@pytest.fixture
def small_source(tmp_path) -> Path:
    """12 daily Parquet files of churn data, ~300 rows each."""
    src = tmp_path / "source"
    example_data.write_example_days("customer_churn", src, SMALL_DAYS, rows=300)
    return src
