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
    :class:`SmallSpec` (name, paths, days, ``end``). A full lifecycle run over it takes ~10-30 s here,
    most of it MLflow model logging; pass ``end=spec.end`` to ``run_lifecycle``.
``postgres_server`` (session)
    A PostgreSQL server for the whole session, as a :class:`PgServer` (host, port, superuser, password).
    Reuses the server of ``MLPLATFORM_TEST_POSTGRES_DSN`` (``postgresql://user:pass@host:port/db``; the
    user must be allowed to create databases) when set; otherwise initdb + pg_ctl a throwaway server in
    a temp dir on a free port (as the ``postgres`` OS user when running as root), stopped and deleted at
    the end. Without PostgreSQL binaries the test is skipped locally and fails under ``CI``.
``postgres_db``
    A fresh, empty database on ``postgres_server`` for one test (dropped afterwards); returns its name.

Helpers (import them: ``from mlplatform_tests.conftest import ...``)
-------
``free_port()``, ``wait_for_http(url)``, ``stop_process_group(proc)`` (from
:mod:`mlplatform_assets.stack.processes`), ``write_churn_days(dir, days)``,
``write_small_spec(models_dir, source_uri)``, ``SMALL_DAYS``/``SMALL_END``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlplatform_assets.lib.config import PlatformConfig, load_config
from mlplatform_assets.stack.postgres import (
    PgServer,
    PostgresUnavailable,
    start_throwaway_postgres,
)
from mlplatform_assets.stack.processes import (
    free_port,
    stop_process_group,
    wait_for_http,
)

__all__ = ["PgServer", "free_port", "stop_process_group", "wait_for_http"]  # re-exported for the tests

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


def write_churn_days(directory: str | Path, days: list[dt.date] = SMALL_DAYS, rows: int = SMALL_ROWS) -> list[Path]:
    """Write ``<directory>/<YYYY-MM-DD>.parquet`` files of generated churn data; returns the paths."""
    from mlplatform_assets.lib.data.example_data import customer_churn

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in days:
        p = d / f"{day.isoformat()}.parquet"
        customer_churn(day, rows=rows).to_parquet(p, index=False)
        paths.append(p)
    return paths


def small_spec_yaml(source_uri: str, name: str = SMALL_NAME, estimator: str = "sklearn.linear_model.LogisticRegression",
                    params: str = "{max_iter: 300}", window_days: int = 10, holdout_days: int = 2,
                    promotion: str | None = None, evaluation: str | None = None) -> str:
    """The small churn spec; ``promotion`` is a YAML flow mapping, e.g. ``{absolute_floor: 0.6}``."""
    extra = f"promotion: {promotion}\n" if promotion else ""
    extra += f"evaluation: {evaluation}\n" if evaluation else ""
    return extra + f"""\
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
def small_source(tmp_path: Path) -> Path:
    """Daily Parquet files of the small churn data (``SMALL_DAYS``), without a spec."""
    source = tmp_path / "source" / SMALL_NAME
    write_churn_days(source)
    return source


@pytest.fixture()
def small_churn_spec(platform_env: PlatformConfig, tmp_path: Path) -> SmallSpec:
    """A small local-source churn model (see module docstring)."""
    source = tmp_path / "source" / SMALL_NAME
    write_churn_days(source)
    spec_path = write_small_spec(platform_env.models_dir, str(source))
    return SmallSpec(name=SMALL_NAME, spec_path=spec_path, source_dir=source)


# --- PostgreSQL --------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session (see module docstring)."""
    dsn = os.environ.get("MLPLATFORM_TEST_POSTGRES_DSN")
    if dsn:
        from psycopg2.extensions import parse_dsn

        p = parse_dsn(dsn)
        yield PgServer(p.get("host", "127.0.0.1"), int(p.get("port", 5432)), p.get("user", "postgres"),
                       p.get("password", ""), p.get("dbname", "postgres"))
        return
    base = Path(tempfile.mkdtemp(prefix="mlplatform-pg-"))
    pg = None
    try:
        try:
            server, pg = start_throwaway_postgres(base)
        except PostgresUnavailable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"{exc} (or set MLPLATFORM_TEST_POSTGRES_DSN)")
            pytest.skip(f"{exc} (or set MLPLATFORM_TEST_POSTGRES_DSN)")
        yield server
    finally:
        if pg is not None:
            pg.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def postgres_db(postgres_server: PgServer):
    """A fresh database on ``postgres_server`` for one test; dropped afterwards. Returns its name."""
    name = f"mlplatform_test_{uuid.uuid4().hex[:12]}"
    postgres_server.execute_admin(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        postgres_server.execute_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the mark into the test's group
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``topology`` start whole topologies (dagster-webserver and daemon, code servers, an MLflow
    server, a browser): with ``-n 2 --dist loadgroup`` (pyproject) they run one after another, in order, on one
    worker (module-scoped stacks are built once), never two at once on a 2-core machine. They are the longest
    chain, so they are collected first: xdist hands that group out before anything else, and the other worker
    runs the rest beside it. Other ``integration`` tests (a single server or process) stay together per module,
    so a module-scoped server or trained home is built once, not once per worker."""
    topology, rest = [], []
    for item in items:
        if item.get_closest_marker("topology"):
            item.add_marker(pytest.mark.xdist_group("topology"))
            topology.append(item)
            continue
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))  # its module's path
        rest.append(item)
    items[:] = topology + rest
