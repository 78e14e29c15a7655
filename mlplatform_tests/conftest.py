"""Fixtures and helpers shared by every test package.

Fixtures
--------
``platform_env``
    An isolated platform: MLPLATFORM_HOME, MLFLOW_TRACKING_URI (SQLite), DAGSTER_HOME and
    MLPLATFORM_MODELS_DIR all point into the test's tmp dir (set with monkeypatch, restored
    afterwards); other platform/AWS variables that could leak in from the shell are unset.
    Returns the resolved :class:`PlatformConfig`. The models dir exists and is empty.
``small_churn_spec``
    (needs ``platform_env``) A small classification model ``small_churn``: ten daily Parquet files
    of ~300 rows in a local source directory and its spec in the models dir. Returns a
    :class:`SmallSpec` (name, paths, days, ``end``). A lifecycle run over it takes a few seconds.

Helpers (import them: ``from mlplatform_tests.conftest import ...``)
-------
``free_port()``, ``wait_for_http(url)``, ``write_churn_days(dir, days)``,
``write_small_spec(models_dir, source_uri)``, ``SMALL_DAYS``/``SMALL_END``.
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlplatform_assets.lib.config import PlatformConfig, load_config

# A fixed window keeps tests deterministic and independent of today's date.
SMALL_START = dt.date(2026, 6, 1)
SMALL_END = dt.date(2026, 6, 10)
SMALL_DAYS = [SMALL_START + dt.timedelta(days=i) for i in range((SMALL_END - SMALL_START).days + 1)]
SMALL_ROWS = 300
SMALL_NAME = "small_churn"

# Variables that change where the platform reads or writes; unset so a developer's shell cannot leak in.
_ISOLATED_VARS = (
    "MLPLATFORM_DATA_URI", "MLPLATFORM_ARTIFACT_ROOT", "MLFLOW_REGISTRY_URI", "MLPLATFORM_MLFLOW_UI_URL",
    "MLPLATFORM_PREDICTION_LOG_URI", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_PROFILE",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0, proc=None) -> None:  # noqa: ANN001 - subprocess.Popen
    """Poll ``url`` until it answers 200. Fails early if ``proc`` (a Popen) has exited."""
    import httpx

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s (last: {last})")


def write_churn_days(directory: str | Path, days: list[dt.date] = SMALL_DAYS, rows: int = SMALL_ROWS) -> list[Path]:
    """Write ``<directory>/<YYYY-MM-DD>.parquet`` files of generated churn data; returns the paths."""
    from mlplatform_assets.lib.example_data import customer_churn

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in days:
        p = d / f"{day.isoformat()}.parquet"
        customer_churn(day, rows=rows).to_parquet(p, index=False)
        paths.append(p)
    return paths


def small_spec_yaml(source_uri: str, name: str = SMALL_NAME, estimator: str = "sklearn.linear_model.LogisticRegression",
                    params: str = "{max_iter: 300}", window_days: int = 10, holdout_days: int = 2) -> str:
    return f"""\
name: {name}
description: small churn model for tests
task: classification
source:
  uri: {source_uri}
  file_pattern: "{{date}}.parquet"
timestamp_column: event_time
partition_start: {SMALL_START.isoformat()}
target:
  column: churned
  classes: [0, 1]
  positive_class: 1
features:
  numeric: [tenure_months, monthly_charges, total_charges, usage_gb, support_calls, days_since_last_login, age]
  categorical: [plan, contract, payment_method, region]
estimator:
  class_path: {estimator}
  params: {params}
training:
  window_days: {window_days}
  holdout_days: {holdout_days}
  seed: 3
metrics:
  primary: roc_auc
  additional: [accuracy]
validation:
  max_null_share: 0.2
  min_rows: 50
"""


def write_small_spec(models_dir: str | Path, source_uri: str, name: str = SMALL_NAME, **kwargs) -> Path:
    """Write ``<models_dir>/<name>.yaml`` for the small churn model reading ``source_uri``."""
    p = Path(models_dir) / f"{name}.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(small_spec_yaml(source_uri, name=name, **kwargs))
    return p


@dataclass
class SmallSpec:
    name: str
    spec_path: Path
    source_dir: Path
    days: list[dt.date] = field(default_factory=lambda: list(SMALL_DAYS))

    @property
    def end(self) -> dt.date:
        return self.days[-1]


@pytest.fixture()
def platform_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformConfig:
    """Point every platform location at ``tmp_path`` (see module docstring); returns the config."""
    for var in _ISOLATED_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("MLPLATFORM_HOME", str(home))
    monkeypatch.setenv("MLPLATFORM_MODELS_DIR", str(models))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}")
    monkeypatch.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    (tmp_path / "dagster_home").mkdir()
    return load_config()


@pytest.fixture()
def small_churn_spec(platform_env: PlatformConfig, tmp_path: Path) -> SmallSpec:
    """A small local-source churn model (see module docstring)."""
    source = tmp_path / "source" / SMALL_NAME
    write_churn_days(source)
    spec_path = write_small_spec(platform_env.models_dir, str(source))
    return SmallSpec(name=SMALL_NAME, spec_path=spec_path, source_dir=source)
