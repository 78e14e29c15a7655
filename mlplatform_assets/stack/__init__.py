"""The production stack on one machine: every component in its own process on 127.0.0.1.

``mlplatform stack up`` and ``mlplatform_tests/integration/test_production_stack.py`` both use
:class:`LocalStack`. What starts (see docs/operations.md for the topology):

* PostgreSQL (initdb + pg_ctl): database ``dagster`` (Dagster runs, events, schedules/sensors) and
  database ``mlflow`` (MLflow's backend store);
* moto's S3 server: bucket ``mlplatform-data`` (model sources, the platform's data store, the prediction
  log, the audit/alert records) and bucket ``mlplatform-mlflow`` (MLflow's artifacts, written only by the
  MLflow server);
* ``mlflow server`` with the PostgreSQL backend and proxied artifacts (``--serve-artifacts``): clients
  only ever see ``http://`` and ``mlflow-artifacts:`` URIs;
* the Dagster code server (``dagster api grpc``, the user code, which also starts the run workers:
  DefaultRunLauncher), ``dagster-webserver`` and ``dagster-daemon``, all on ``infra/dagster.yaml``
  (PostgreSQL storage from ``DAGSTER_PG_*``, QueuedRunCoordinator);
* N ``mlplatform serve`` replicas of one model, with an API key.

Every process is configured through the documented environment variables only, gets its own throwaway
``MLPLATFORM_HOME`` and ``DAGSTER_HOME`` (nothing is shared through the local filesystem) and logs to
``<root>/logs/<name>.log`` (PostgreSQL's log is copied there when the stack stops).
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .postgres import PgServer, ThrowawayPostgres
from .processes import Service, free_port

REPO_INFRA = Path(__file__).resolve().parents[2] / "infra"
DATA_BUCKET = "mlplatform-data"
MLFLOW_BUCKET = "mlplatform-mlflow"
LOCATION_NAME = "mlplatform"
# The webserver's view of its code locations, and the reload a person triggers with "Reload" in the UI.
LOCATION_STATUS = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RELOAD_LOCATION = """mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) {
  __typename } }"""
REGION = "us-east-1"
# A developer's shell must not leak into a stack process: every variable with these prefixes is dropped
# from the inherited environment and only what the stack sets is passed on.
_PLATFORM_PREFIXES = ("MLPLATFORM_", "MLFLOW_", "DAGSTER_", "AWS_")


def _bin(name: str) -> str:
    """A console script of this Python environment (the stack runs the same versions as the caller)."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PLATFORM_PREFIXES)}
    env.update(PYTHONUNBUFFERED="1", DAGSTER_DISABLE_TELEMETRY="1")
    return env


@dataclass(frozen=True)
class S3Credentials:
    access_key_id: str
    secret_access_key: str

    def env(self, endpoint: str) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": endpoint}


class LocalStack:
    """The stack under ``root``. Ports and credentials are chosen at construction; :meth:`up` starts it.

    Before :meth:`up`, put model specs into :attr:`models_dir` (:meth:`write_spec`); sources live in the
    object store (:meth:`source_uri`, :meth:`put_source_day`).
    """

    def __init__(self, root: str | Path, *, model: str, replicas: int = 2, sensor_interval_s: int = 30,
                 sensors_running: bool = False, serving_poll_interval_s: float = 2.0,
                 prediction_log_flush_s: float = 10.0, platform_overrides: Mapping[str, str] | None = None):
        self.root = Path(root).resolve()
        self.model = model
        self.replicas = replicas
        self.sensor_interval_s = sensor_interval_s
        self.sensors_running = sensors_running
        self.serving_poll_interval_s = serving_poll_interval_s
        self.prediction_log_flush_s = prediction_log_flush_s
        # Extra variables for every platform process (e.g. shorter MLflow client retries in tests).
        self.platform_overrides = dict(platform_overrides or {})
        self.models_dir = self.root / "models"
        self.logs_dir = self.root / "logs"
        self.workspace_yaml = self.root / "workspace.yaml"
        self.ports = {name: free_port() for name in ("s3", "mlflow", "code_server", "webserver")}
        self.replica_ports = [free_port() for _ in range(replicas)]
        self.api_key = secrets.token_urlsafe(24)
        # Two identities: the platform's (data bucket) and the MLflow server's (artifact bucket). moto does not
        # enforce IAM, so the separation is by configuration: no platform process is given the MLflow keys.
        self.platform_s3 = S3Credentials("platform-" + secrets.token_hex(4), secrets.token_urlsafe(18))
        self.mlflow_s3 = S3Credentials("mlflow-" + secrets.token_hex(4), secrets.token_urlsafe(18))
        self.postgres: ThrowawayPostgres | None = None
        self.services: dict[str, Service] = {}

    # --- addresses ----------------------------------------------------------------------
    @property
    def s3_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def webserver_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['webserver']}"

    @property
    def replica_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.replica_ports]

    @property
    def pg(self) -> PgServer:
        assert self.postgres is not None, "the stack is not up"
        return self.postgres.server

    def source_uri(self, model: str) -> str:
        return f"s3://{DATA_BUCKET}/sources/{model}"

    @property
    def data_uri(self) -> str:
        return f"s3://{DATA_BUCKET}/platform"

    @property
    def prediction_log_uri(self) -> str:
        return f"s3://{DATA_BUCKET}/predictions"

    # --- environments ---------------------------------------------------------------------
    def _home(self, process: str) -> Path:
        home = self.root / "homes" / process
        home.mkdir(parents=True, exist_ok=True)
        return home

    def dagster_env(self, process: str) -> dict[str, str]:
        """DAGSTER_HOME (a private copy of infra/dagster.yaml) and the PostgreSQL variables it reads."""
        dagster_home = self._home(process) / "dagster"
        dagster_home.mkdir(exist_ok=True)
        shutil.copy(REPO_INFRA / "dagster.yaml", dagster_home / "dagster.yaml")
        return {"DAGSTER_HOME": str(dagster_home), "DAGSTER_PG_HOST": self.pg.host,
                "DAGSTER_PG_PORT": str(self.pg.port), "DAGSTER_PG_USERNAME": self.pg.user,
                "DAGSTER_PG_PASSWORD": self.pg.password, "DAGSTER_PG_DB": "dagster"}

    def platform_env(self, process: str) -> dict[str, str]:
        """What a platform process (code server, run workers, serving, the CLI) is given: the MLflow server's
        URL, the platform's S3 identity and locations, its own MLPLATFORM_HOME. No database, no artifact bucket."""
        return {**_clean_env(), **self.platform_s3.env(self.s3_endpoint),
                "MLPLATFORM_HOME": str(self._home(process)), "MLPLATFORM_MODELS_DIR": str(self.models_dir),
                "MLFLOW_TRACKING_URI": self.mlflow_url, "MLPLATFORM_DATA_URI": self.data_uri,
                "MLPLATFORM_PREDICTION_LOG_URI": self.prediction_log_uri,
                "MLPLATFORM_MLFLOW_UI_URL": self.mlflow_url, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                **self.platform_overrides}

    def cli_env(self, process: str = "cli") -> dict[str, str]:
        """The environment for running ``mlplatform ...`` commands against the stack."""
        return self.platform_env(process)

    # --- model specs and source data ------------------------------------------------------
    def write_spec(self, name: str, text: str) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        path = self.models_dir / f"{name}.yaml"
        path.write_text(text)
        return path

    def serving_block(self) -> str:
        """The spec's ``serving:`` section pointing at this stack's replicas (YAML)."""
        urls = ", ".join(self.replica_urls)
        return f"serving:\n  endpoints: [{urls}]\n  poll_interval_s: {self.serving_poll_interval_s:g}\n"

    def s3_client(self, credentials: S3Credentials | None = None):  # noqa: ANN201 - boto3 S3 client
        import boto3

        creds = credentials or self.platform_s3
        return boto3.client("s3", endpoint_url=self.s3_endpoint, region_name=REGION,
                            aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key)

    def put_source_day(self, model: str, frame, day) -> str:  # noqa: ANN001 - DataFrame, date
        """Write one day of source data as ``<source_uri>/<YYYY-MM-DD>.parquet``; returns the key."""
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        key = f"sources/{model}/{day.isoformat()}.parquet"
        self.s3_client().put_object(Bucket=DATA_BUCKET, Key=key, Body=buf.getvalue())
        return key

    # --- lifecycle ------------------------------------------------------------------------
    def up(self) -> "LocalStack":
        """Start every component; on any failure stop what was started and raise.

        Processes start concurrently where nothing depends on them (start-up is mostly Python imports), and
        the stack waits for each to answer: PostgreSQL and S3 first, then MLflow, the Dagster instance's tables
        and the replicas, then the code server, and only once it serves the webserver and the daemon on the
        migrated instance. It returns when the webserver has loaded the code location, so a run launched
        right after ``up()`` finds its job."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            s3 = self._service("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(self.ports["s3"])],
                               _clean_env(), ready_url=f"{self.s3_endpoint}/moto-api/data.json")
            # Its own temp dir, not under root: as root, PostgreSQL runs as the postgres OS user, which may
            # not be allowed into root's parents (pytest's tmp dirs are 0700).
            self.postgres = ThrowawayPostgres(tempfile.mkdtemp(prefix="mlplatform-stack-pg-")).init().start()
            for db in ("dagster", "mlflow"):
                self.pg.create_database(db)
            s3.wait_ready()
            client = self.s3_client()
            for bucket in (DATA_BUCKET, MLFLOW_BUCKET):
                client.create_bucket(Bucket=bucket)
            migrate = self._dagster_migrate()
            starting = [self._start_mlflow()] + [self.start_replica(i, wait=False) for i in range(self.replicas)]
            # Every Dagster process (the code server too) creates missing tables when it opens the instance.
            if migrate.proc.wait(timeout=180) != 0:
                raise RuntimeError(f"dagster instance migrate failed\n{migrate.log_tail()}")
            # The webserver and the daemon load the location once at start: started beside a code server still
            # importing the user code, they hold a load error until a later refresh, and a run launched in that
            # window fails with PipelineNotFoundError.
            code_server = self._start_code_server()
            code_server.wait_ready()
            starting += self._start_webserver_and_daemon()
            for service in starting:
                service.wait_ready()
            self.wait_location_loaded()
        except BaseException:
            self.down()
            raise
        return self

    def _service(self, name: str, argv: list[str], env: Mapping[str, str], **kwargs) -> Service:
        service = Service(name, argv, env, self.logs_dir / f"{name}.log", cwd=self.root, **kwargs)
        self.services[name] = service
        return service.start(wait=False)

    def _start_mlflow(self) -> Service:
        env = {**_clean_env(), **self.mlflow_s3.env(self.s3_endpoint), "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
               # The backend URI holds the database password: an environment variable, never an argument.
               "MLFLOW_BACKEND_STORE_URI": self.pg.dsn("mlflow"),
               "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{MLFLOW_BUCKET}/artifacts",
               # The server's job runner (GenAI evaluation, trace roll-ups: unused here) is eight more Python
               # processes; without it the server starts in half the time on a small machine.
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        return self._service("mlflow", [_bin("mlflow"), "server", "--serve-artifacts", "--host", "127.0.0.1",
                                        "--port", str(self.ports["mlflow"]), "--workers", "1"],
                             env, ready_url=f"{self.mlflow_url}/health", start_timeout=180)

    def _dagster_migrate(self) -> Service:
        """Create the instance's tables once, before the webserver and the daemon race to migrate them."""
        migrate = Service("dagster-migrate", [_bin("dagster"), "instance", "migrate"],
                          {**_clean_env(), **self.dagster_env("migrate")}, self.logs_dir / "dagster-migrate.log",
                          cwd=self.root)
        return migrate.start(wait=False)

    def code_server_env(self) -> dict[str, str]:
        return {**self.platform_env("code_server"), **self.dagster_env("code_server"),
                "MLPLATFORM_SENSOR_INTERVAL_S": str(self.sensor_interval_s),
                "MLPLATFORM_SENSORS_DEFAULT": "running" if self.sensors_running else "stopped"}

    def _start_code_server(self) -> Service:
        self.workspace_yaml.write_text(
            "# Generated by mlplatform stack: the webserver and the daemon load the user code from the\n"
            "# gRPC code server, as in the Helm chart's user-code deployment.\n"
            f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {self.ports['code_server']}\n"
            f"      location_name: {LOCATION_NAME}\n")
        return self._service("code_server", [
            _bin("dagster"), "api", "grpc", "-m", "mlplatform_assets.definitions", "--location-name", LOCATION_NAME,
            "-h", "127.0.0.1", "-p", str(self.ports["code_server"])],
            self.code_server_env(), ready_port=self.ports["code_server"], start_timeout=180)

    def _start_webserver_and_daemon(self) -> list[Service]:
        # The webserver and the daemon never import the user code: they get only the Dagster instance.
        return [
            self._service("webserver", [_bin("dagster-webserver"), "-w", str(self.workspace_yaml),
                                        "-h", "127.0.0.1", "-p", str(self.ports["webserver"])],
                          {**_clean_env(), **self.dagster_env("webserver")},
                          ready_url=f"{self.webserver_url}/server_info", start_timeout=180),
            self._service("daemon", [_bin("dagster-daemon"), "run", "-w", str(self.workspace_yaml)],
                          {**_clean_env(), **self.dagster_env("daemon")})]

    def wait_location_loaded(self, timeout: float = 120.0) -> None:
        """Block until the webserver serves the code location's repository; a load error it still holds is
        reloaded every few seconds, and raised (with the code server's message) when ``timeout`` passes."""
        import httpx

        last_error, reloaded_at = "none", 0.0

        def loaded() -> bool:
            nonlocal last_error, reloaded_at
            response = httpx.post(f"{self.webserver_url}/graphql", json={"query": LOCATION_STATUS}, timeout=30)
            response.raise_for_status()
            workspace = response.json()["data"]["workspaceOrError"]
            entry = next((e for e in workspace.get("locationEntries", []) if e["name"] == LOCATION_NAME), None)
            location = (entry or {}).get("locationOrLoadError") or {}
            if entry and entry["loadStatus"] == "LOADED" and location.get("__typename") == "RepositoryLocation":
                return True
            if location.get("__typename") == "PythonError":
                last_error = location.get("message", "")
                if time.monotonic() - reloaded_at > 5:
                    reloaded_at = time.monotonic()
                    httpx.post(f"{self.webserver_url}/graphql", timeout=60,
                               json={"query": RELOAD_LOCATION, "variables": {"name": LOCATION_NAME}})
            return False

        wait_until(f"the webserver to load code location {LOCATION_NAME!r}", loaded, timeout, interval=0.5,
                   on_timeout=lambda: f"last load error: {last_error}")

    def start_replica(self, index: int, wait: bool = True) -> Service:
        port = self.replica_ports[index]
        env = {**self.platform_env(f"serving-{index}"), "MLPLATFORM_API_KEYS": self.api_key,
               "MLPLATFORM_SERVING_LOG_FLUSH_INTERVAL_S": f"{self.prediction_log_flush_s:g}"}
        service = self._service(f"serving-{index}", [
            sys.executable, "-m", "mlplatform_assets.cli", "serve", "--model", self.model, "--host", "127.0.0.1",
            "--port", str(port), "--poll-interval", f"{self.serving_poll_interval_s:g}", "--log-level", "info"],
            env, ready_url=f"http://127.0.0.1:{port}/healthz", start_timeout=120)
        if wait:
            service.wait_ready()
        return service

    def down(self) -> None:
        """Stop every process (newest first), then PostgreSQL. Safe to call twice."""
        for service in reversed(list(self.services.values())):
            try:
                service.stop()
            except Exception:  # noqa: BLE001 - keep stopping the rest
                pass
        if self.postgres is not None:
            self.postgres.stop(mode="immediate")
            if self.postgres.log.exists():
                self.logs_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(self.postgres.log, self.logs_dir / "postgres.log")
            shutil.rmtree(self.postgres.base, ignore_errors=True)
            self.postgres = None

    def dead(self) -> list[str]:
        """Services that exited on their own (each with its log tail)."""
        return [s.log_tail() for s in self.services.values() if s.proc is not None and s.proc.poll() is not None]

    def summary(self) -> str:
        lines = [f"stack root:      {self.root}",
                 f"dagster UI:      {self.webserver_url}",
                 f"mlflow:          {self.mlflow_url}",
                 f"s3 (moto):       {self.s3_endpoint}  buckets {DATA_BUCKET}, {MLFLOW_BUCKET}",
                 f"postgres:        127.0.0.1:{self.pg.port} (databases dagster, mlflow; log {self.postgres.log})",
                 f"code server:     127.0.0.1:{self.ports['code_server']} (gRPC, location {LOCATION_NAME})"]
        lines += [f"serving {i}:       {url} (model {self.model})" for i, url in enumerate(self.replica_urls)]
        lines.append(f"logs:            {self.logs_dir}")
        return "\n".join(lines)


def wait_until(what: str, predicate, timeout: float, interval: float = 1.0, on_timeout=None):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)
