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
``free_port()``, ``wait_for_http(url)``, ``write_churn_days(dir, days)``,
``write_small_spec(models_dir, source_uri)``, ``SMALL_DAYS``/``SMALL_END``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


def stop_process_group(proc, term_timeout: float = 15.0) -> None:  # noqa: ANN001 - subprocess.Popen
    """Stop a server started with ``start_new_session=True`` and everything it spawned (code server,
    run workers): TERM the process group, wait, then KILL whatever is left."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


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
                    params: str = "{max_iter: 300}", window_days: int = 10, holdout_days: int = 2,
                    promotion: str | None = None) -> str:
    """The small churn spec; ``promotion`` is a YAML flow mapping, e.g. ``{absolute_floor: 0.6}``."""
    extra = f"promotion: {promotion}\n" if promotion else ""
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

def _pg_bin_dirs() -> list[str]:
    """Debian/Ubuntu install server binaries outside PATH, one directory per major version (newest first)."""
    import glob

    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]) if
                  d.split("/")[-2].isdigit() else 0, reverse=True)


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str
    admin_db: str = "postgres"

    def dsn(self, db: str | None = None, scheme: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL (``postgresql+psycopg2://user:pass@host:port/db``). The driver is explicit because
        SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, which the project does not install;
        pass ``scheme="postgresql"`` for a plain libpq URI."""
        from urllib.parse import quote

        return f"{scheme}://{quote(self.user)}:{quote(self.password)}@{self.host}:{self.port}/{db or self.admin_db}"

    def connect(self, db: str | None = None):  # noqa: ANN201 - psycopg2 connection
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=db or self.admin_db, connect_timeout=10)

    def execute_admin(self, sql: str) -> None:
        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()


def _pg_bin(name: str) -> str | None:
    for d in _pg_bin_dirs():
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name)


def _start_throwaway_postgres(base: Path) -> tuple[PgServer, Callable[[], None]]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        msg = "PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql or set MLPLATFORM_TEST_POSTGRES_DSN"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    # initdb refuses to run as root: hand the directory to the postgres OS user and run through runuser.
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    password = uuid.uuid4().hex
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if as_user:
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    data, sock, log = base / "data", base / "sock", base / "postgres.log"

    def run(*cmd: str) -> None:
        res = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{tail}")

    run("mkdir", "-p", str(sock))
    run(initdb, "-D", str(data), "-U", "mlplatform", f"--pwfile={pwfile}", "--auth=scram-sha-256",
        "-E", "UTF8", "--no-sync", "--locale=C")
    port = free_port()
    opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200")
    run(pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")

    def stop() -> None:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)

    return PgServer("127.0.0.1", port, "mlplatform", password), stop


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
    stop = None
    try:
        server, stop = _start_throwaway_postgres(base)
        yield server
    finally:
        if stop is not None:
            stop()
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
