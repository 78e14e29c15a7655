"""The production stack end to end, every component in its own process (mlplatform_assets.stack.LocalStack,
the same code as ``mlplatform stack up``): PostgreSQL, moto S3, an MLflow tracking server with proxied
artifacts, the Dagster gRPC code server + webserver + daemon on infra/dagster.yaml, two serving replicas.

The test talks to the stack only as its users do: GraphQL to the webserver, HTTP to MLflow and the
replicas, the ``mlplatform`` CLI in a subprocess, objects in S3. The first test is the happy path
(lifecycle -> drift -> automatic retrain and promotion -> rollback) under a load loop that must see
no failed request; the later tests inject faults into the running stack and check what must hold:
MLflow stopped mid-logging and a run worker SIGKILLed mid-logging (nothing half-registered, replicas
keep serving, a rerun succeeds), PostgreSQL and the code server restarted (sensors recover on their own,
no duplicate runs), S3 unavailable while the replicas serve (the prediction log catches up).
They share one stack (module scope) and run in file order; the faults need the happy path's champion.
Stage timings are printed (``-s``); see docs/operations.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.defs.names import ASSET_PARTITION_RANGE_END_TAG as RANGE_END_TAG
from mlplatform_assets.defs.names import ASSET_PARTITION_RANGE_START_TAG as RANGE_START_TAG
from mlplatform_assets.lib.data.example_data import customer_churn
from mlplatform_assets.lib.model.registry import (
    CHALLENGER,
    CHAMPION,
    LINEAGE_TAGS,
    TAG_DAGSTER_RUN,
)
from mlplatform_assets.stack import (
    DATA_BUCKET,
    LOCATION_NAME,
    MLFLOW_BUCKET,
    LocalStack,
    wait_until,
)
from mlplatform_assets.stack.command import write_client_env
from mlplatform_assets.stack.postgres import PostgresUnavailable
from mlplatform_tests.conftest import (
    SMALL_DAYS,
    SMALL_END,
    SMALL_NAME,
    SMALL_ROWS,
    small_spec_yaml,
)
from mlplatform_tests.integration.test_webserver_graphql import (
    LAUNCH_RUN,
    RUN_FAILURE_EVENTS,
    RUN_STATUS,
    Webserver,
)

pytestmark = [pytest.mark.integration, pytest.mark.topology, pytest.mark.slow]

NAME = SMALL_NAME
REPOSITORY = "__repository__"
RUN_TIMEOUT_S = 180
NOISY_LABEL_DAYS = 8
FEATURES = ["tenure_months", "monthly_charges", "total_charges", "usage_gb", "support_calls",
            "days_since_last_login", "age", "plan", "contract", "payment_method", "region"]

START_SENSOR = """
mutation StartSensor($sensorSelector: SensorSelector!) {
  startSensor(sensorSelector: $sensorSelector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on SensorNotFoundError { message }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

SENSOR_TICKS = """
query SensorTicks($sensorSelector: SensorSelector!) {
  sensorOrError(sensorSelector: $sensorSelector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 5) { status timestamp skipReason error { message } } } }
    ... on PythonError { message }
  }
}
"""

RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename
      ... on MessageEvent { message }
      ... on ExecutionStepFailureEvent { stepKey error { message causes { message } } }
    } }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId jobName status tags { key value } } }
    ... on PythonError { message }
  }
}
"""


# --- clients ----------------------------------------------------------------------------------

class Dagster(Webserver):
    """The webserver's GraphQL API, as the UI uses it."""

    def __init__(self, stack: LocalStack):
        super().__init__(stack.webserver_url, [])
        self.stack = stack

    def launch(self, job: str, tags: dict[str, str], run_config: dict | None = None) -> str:
        data = self.graphql(LAUNCH_RUN, executionParams={
            "selector": {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY, "jobName": job},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            "runConfigData": run_config or {}})["launchPipelineExecution"]
        assert data["__typename"] == "LaunchRunSuccess", data
        return data["run"]["runId"]

    def run(self, run_id: str) -> dict:
        run = self.graphql(RUN_STATUS, runId=run_id)["runOrError"]
        assert run["__typename"] == "Run", run
        return run

    def run_messages(self, run_id: str, n: int = 40) -> str:
        events = self.graphql(RUN_FAILURE_EVENTS, runId=run_id)["logsForRun"].get("events", [])
        return "\n".join(e.get("message", "") for e in events[-n:])

    def wait_run(self, run_id: str, want: str = "SUCCESS", timeout: float = RUN_TIMEOUT_S) -> dict:
        def done():  # noqa: ANN202
            run = self.run(run_id)
            return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

        run = wait_until(f"run {run_id} to finish", done, timeout, on_timeout=self.diagnostics)
        if run["status"] != want:
            pytest.fail(f"run {run_id} ended {run['status']}, expected {want}:\n{self.run_messages(run_id)}\n"
                        f"{self.diagnostics()}")
        return run

    def errors(self, run_id: str) -> str:
        """Every message and step error of a run, with causes (the user code's exception)."""
        events = self.graphql(RUN_ERRORS, runId=run_id)["logsForRun"].get("events", [])
        parts = []
        for e in events:
            parts.append(e.get("message") or "")
            err = e.get("error") or {}
            parts += [err.get("message") or ""] + [c.get("message") or "" for c in err.get("causes") or []]
        return "\n".join(p for p in parts if p)

    def runs(self, **tags: str) -> list[dict]:
        data = self.graphql(RUNS, filter={"tags": [{"key": k, "value": v} for k, v in tags.items()]})["runsOrError"]
        assert data["__typename"] == "Runs", data
        return data["results"]

    def _sensor(self, name: str) -> dict:
        return {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY, "sensorName": name}

    def start_sensor(self, name: str) -> None:
        data = self.graphql(START_SENSOR, sensorSelector=self._sensor(name))["startSensor"]
        assert data["__typename"] == "Sensor" and data["sensorState"]["status"] == "RUNNING", data

    def sensor_ticks(self, name: str) -> list[dict]:
        data = self.graphql(SENSOR_TICKS, sensorSelector=self._sensor(name))["sensorOrError"]
        assert data["__typename"] == "Sensor", data
        return data["sensorState"]["ticks"]

    def diagnostics(self) -> str:
        dead = self.stack.dead()
        logs = [self.stack.services[n].log_tail(2500) for n in ("daemon", "code_server", "mlflow")]
        return "\n".join((["DEAD: " + d for d in dead]) + logs)


def _registry_client(stack: LocalStack):  # noqa: ANN202
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=stack.mlflow_url, registry_uri=stack.mlflow_url)


def _alias(client, alias: str) -> str | None:  # noqa: ANN001
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(NAME, alias).version)
    except MlflowException:
        return None


def _ready_versions(stack: LocalStack) -> list[str | None]:
    out = []
    for url in stack.replica_urls:
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            out.append(r.json().get("model_version") if r.status_code == 200 else None)
        except httpx.HTTPError:
            out.append(None)
    return out


def _wait_replicas_serve(stack: LocalStack, version: str, timeout: float = 60) -> None:
    wait_until(f"both replicas to serve v{version}", lambda: _ready_versions(stack) == [version] * stack.replicas,
               timeout, interval=0.5, on_timeout=lambda: f"replicas report {_ready_versions(stack)}")


def _cli(stack: LocalStack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``mlplatform ...`` as an operator runs it: its own process and home, the stack's MLflow URL."""
    return subprocess.run([sys.executable, "-m", "mlplatform_assets.cli", *args], env=env or stack.cli_env("cli"),
                          cwd=stack.root, capture_output=True, text=True, timeout=120)


def _env_file_environment(stack: LocalStack) -> dict[str, str]:
    """What ``set -a; . stack.env`` gives a shell (written by ``mlplatform stack up``)."""
    path = write_client_env(stack)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    # A client is given the MLflow URL and the platform's S3 identity; never the MLflow server's keys or database.
    assert stack.mlflow_s3.secret_access_key not in text and "MLFLOW_BACKEND_STORE_URI" not in text
    pairs = [shlex.split(line)[0].split("=", 1) for line in text.splitlines() if line.strip()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLPLATFORM_", "MLFLOW_", "AWS_", "DAGSTER_"))}
    return {**env, **dict(pairs)}


class Stages:
    """Seconds per scenario step, printed at the end (``-s``) to keep the test's budget visible."""

    def __init__(self):
        self.t0 = self.last = time.monotonic()
        self.times: list[tuple[str, float]] = []

    def done(self, what: str) -> None:
        now = time.monotonic()
        self.times.append((what, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{w} {t:.0f}s" for w, t in self.times) + f"; total {time.monotonic() - self.t0:.0f}s"


class LoadLoop(threading.Thread):
    """Predictions against the replicas in turn, with the API key, for as long as the scenario runs."""

    def __init__(self, stack: LocalStack):
        super().__init__(name="stack-load-loop", daemon=True)
        self.urls = stack.replica_urls
        self.headers = {"Authorization": f"Bearer {stack.api_key}"}
        frame = customer_churn(SMALL_END, rows=5)[FEATURES]
        self.body = {"dataframe_split": json.loads(frame.to_json(orient="split", index=False))}
        self.ok = 0
        self.failures: list[str] = []
        self.versions: dict[str, Counter] = {u: Counter() for u in self.urls}
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop_event.is_set():
                url = self.urls[i % len(self.urls)]
                i += 1
                try:
                    if i % 10 == 0:
                        ready = client.get(f"{url}/readyz")
                        if ready.status_code != 200:
                            self.failures.append(f"{url}/readyz: HTTP {ready.status_code} {ready.text[:200]}")
                    r = client.post(f"{url}/invocations", json=self.body, headers=self.headers)
                    if r.status_code == 200 and len(r.json()["predictions"]) == 5:
                        self.ok += 1
                        self.versions[url][r.headers["x-model-version"]] += 1
                    else:
                        self.failures.append(f"{url}: HTTP {r.status_code} {r.text[:200]}")
                except Exception as exc:  # noqa: BLE001 - every failure is a finding
                    self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)


def history_day(day: dt.date) -> pd.DataFrame:
    """The source history. Its first days come from a broken labelling job (labels shuffled: no signal), so v1,
    trained on them, is weak; the drift-triggered retrain has correctly labelled days in its window and beats
    it on the same holdout by a wide margin (0.68 vs 0.45 ROC AUC): the gate decides the promotion, not chance."""
    frame = customer_churn(day, rows=SMALL_ROWS)
    if day < SMALL_DAYS[NOISY_LABEL_DAYS]:
        rng = np.random.default_rng(day.toordinal())
        frame["churned"] = rng.permutation(frame["churned"].to_numpy())
    return frame


# --- the stack ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    st = LocalStack(tmp_path_factory.mktemp("stack"), model=NAME, replicas=2, sensor_interval_s=2,
                    serving_poll_interval_s=1, prediction_log_flush_s=1,
                    # MLflow's client retries a dead server for minutes by default; the outage test needs seconds.
                    platform_overrides={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"})
    # v1 is trained on shuffled labels on purpose (no better than the baselines): the baseline check is off so it
    # becomes the weak champion the drift-triggered retrain replaces.
    st.write_spec(NAME, small_spec_yaml(st.source_uri(NAME), promotion="{must_beat_baseline: false}")
                  + st.serving_block())
    try:
        try:
            st.up()
        except PostgresUnavailable as exc:
            (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))
        for day in SMALL_DAYS:
            st.put_source_day(NAME, history_day(day), day)
        yield st
    finally:
        st.down()


@pytest.fixture(scope="module")
def dagster(stack) -> Dagster:
    return Dagster(stack)


def test_lifecycle_drift_retrain_and_rollback_under_load(stack, dagster):
    client = _registry_client(stack)
    stages = Stages()

    # 1. The lifecycle, launched through the webserver (queued, dequeued by the daemon, run by a worker the
    #    code server starts) -> champion v1 with full lineage; both replicas load it.
    run_id = dagster.launch(f"{NAME}__lifecycle", {RANGE_START_TAG: SMALL_DAYS[0].isoformat(),
                                                   RANGE_END_TAG: SMALL_END.isoformat(), "mlplatform/trigger": "test"})
    dagster.wait_run(run_id)
    stages.done("lifecycle run")
    assert _alias(client, CHAMPION) == "1"
    v1 = client.get_model_version(NAME, "1")
    tags = client.get_run(v1.run_id).data.tags
    assert all(tags.get(t) for t in LINEAGE_TAGS), {t: tags.get(t) for t in LINEAGE_TAGS}
    assert tags[TAG_DAGSTER_RUN] == run_id
    # Artifacts went through the MLflow server into its bucket, never onto a platform process's disk.
    experiment = client.get_experiment(client.get_run(v1.run_id).info.experiment_id)
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    assert v1.source.startswith(("models:/", "mlflow-artifacts:")), v1.source
    mlflow_objects = stack.s3_client(stack.mlflow_s3).list_objects_v2(Bucket=MLFLOW_BUCKET)
    assert any(o["Key"].endswith("MLmodel") for o in mlflow_objects.get("Contents", []))
    assert not list((stack.root / "homes").rglob("MLmodel")), "a platform process wrote model files locally"
    _wait_replicas_serve(stack, "1")

    load = LoadLoop(stack)
    load.start()
    try:
        # 2. Sensors on (as an operator does in the UI); their first ticks adopt the ingested history.
        sensors = [f"{NAME}__new_data_sensor", f"{NAME}__monitoring_sensor", f"{NAME}__drift_sensor"]
        for sensor in sensors:
            dagster.start_sensor(sensor)
        wait_until("the first tick of every sensor", lambda: all(dagster.sensor_ticks(s) for s in sensors), 90,
                   on_timeout=dagster.diagnostics)
        assert not dagster.runs(**{"mlplatform/trigger": "new_data"}), "history must not be re-ingested"
        stages.done("sensors on")

        # A drifted day lands in the S3 source. From here on, nothing is called by the test.
        drifted_day = SMALL_END + dt.timedelta(days=1)
        stack.put_source_day(NAME, customer_churn(drifted_day, rows=SMALL_ROWS, drift=True), drifted_day)

        def finished(trigger: str):  # noqa: ANN202
            def check():  # noqa: ANN202
                runs = dagster.runs(**{"mlplatform/trigger": trigger, "mlplatform/model": NAME})
                failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
                assert not failed, f"{trigger} run failed:\n{dagster.run_messages(failed[0]['runId'])}"
                return [r for r in runs if r["status"] == "SUCCESS"]
            return check

        [ingest] = wait_until("the ingest run of the drifted day", finished("new_data"), RUN_TIMEOUT_S,
                              on_timeout=dagster.diagnostics)
        assert {t["key"]: t["value"] for t in ingest["tags"]}["dagster/partition"] == str(drifted_day)
        stages.done("ingest")
        wait_until("the monitoring run of the drifted day", finished("validated_data"), RUN_TIMEOUT_S,
                   on_timeout=dagster.diagnostics)
        stages.done("monitoring")
        [retrain] = wait_until("the drift-triggered training run", finished("drift"), RUN_TIMEOUT_S,
                               on_timeout=dagster.diagnostics)
        stages.done("retrain")
        retrain_tags = {t["key"]: t["value"] for t in retrain["tags"]}
        assert retrain["jobName"] == f"{NAME}__training"
        assert retrain_tags["dagster/run_key"].startswith(f"{NAME}:drift:{drifted_day}:")
        # The gate promoted the retrained model (see history_day: the data decides it).
        assert _alias(client, CHAMPION) == "2", client.get_model_version(NAME, "2").tags
        _wait_replicas_serve(stack, "2")
        stages.done("replicas on v2")

        # 3. Rollback by an operator, through the MLflow server; both replicas follow; the audit shows both moves.
        res = _cli(stack, "rollback", NAME, "--reason", "stack test: back to v1")
        assert res.returncode == 0, res.stderr
        assert _alias(client, CHAMPION) == "1"
        _wait_replicas_serve(stack, "1")
        res = _cli(stack, "audit", NAME, "--json", env=_env_file_environment(stack))
        assert res.returncode == 0, res.stderr
        audit = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
        promote, rollback = audit[-2:]
        assert (promote["decision"], promote["from_version"], promote["to_version"]) == ("promoted", "1", "2")
        assert promote["actor"] == f"dagster:{retrain['runId']}" and promote["reason"]
        assert (rollback["decision"], rollback["from_version"], rollback["to_version"]) == ("rolled_back", "2", "1")
        assert rollback["actor"].startswith("cli:") and rollback["reason"] == "stack test: back to v1"
        stages.done("rollback")
        time.sleep(2)
    finally:
        load.stop()
    assert not load.failures, load.failures[:10]
    for url in stack.replica_urls:
        assert set(load.versions[url]) == {"1", "2"}, (url, load.versions[url])
    assert not stack.dead(), stack.dead()
    print(f"happy path: {stages}; {load.ok} predictions, none failed")


# --- faults -----------------------------------------------------------------------------------------

def _versions(client) -> dict[str, list[str]]:  # noqa: ANN001
    """Every registered version of the model with its aliases."""
    return {str(v.version): list(v.aliases or []) for v in client.search_model_versions(f"name='{NAME}'")}


def _experiment_id(client) -> str:  # noqa: ANN001
    return client.get_experiment_by_name(f"mlplatform/{NAME}").experiment_id


def _wait_for_mlflow_run_logging(client, since_ms: int, timeout: float = RUN_TIMEOUT_S) -> str:  # noqa: ANN001
    """The MLflow run a training step opened after ``since_ms`` and is still logging to."""
    def running():  # noqa: ANN202
        runs = client.search_runs([_experiment_id(client)], filter_string="attributes.status = 'RUNNING'",
                                  max_results=5)
        return next((r.info.run_id for r in runs if r.info.start_time >= since_ms), None)

    return wait_until("a training step to start logging to MLflow", running, timeout, interval=0.2)


def _run_worker_pid(stack: LocalStack) -> int:
    """The run worker the code server started (DefaultRunLauncher: a multiprocessing child per run)."""
    from mlplatform_assets.stack.processes import child_processes

    workers = [pid for pid, cmd in child_processes(stack.services["code_server"].proc.pid)
               if "multiprocessing" in cmd and "resource_tracker" not in cmd]
    assert len(workers) == 1, workers
    return workers[0]


def test_mlflow_outage_and_killed_run_worker_leave_nothing_half_registered(stack, dagster):
    """MLflow stopped mid-logging: the run fails naming the tracking server, nothing is registered or aliased,
    both replicas keep serving the champion. Then a run worker SIGKILLed mid-logging: Dagster marks the run
    failed, nothing is registered. After both, a rerun succeeds and registers a complete version."""
    import signal

    client = _registry_client(stack)
    champion = _alias(client, CHAMPION)
    assert champion is not None, "needs the champion of the happy path"
    before = _versions(client)
    load = LoadLoop(stack)
    load.start()
    try:
        # MLflow goes away while a training step logs its run.
        started_ms = int(time.time() * 1000)
        run_a = dagster.launch(f"{NAME}__training", {"mlplatform/trigger": "test-mlflow-outage"})
        _wait_for_mlflow_run_logging(client, started_ms)
        stack.services["mlflow"].stop()
        dagster.wait_run(run_a, want="FAILURE")
        errors = dagster.errors(run_a)
        assert stack.mlflow_url.removeprefix("http://") in errors, errors[-3000:]
        assert _ready_versions(stack) == [champion] * stack.replicas
        stack.services["mlflow"].start()
        assert _versions(client) == before, "a version was registered or aliased by the failed run"
        assert _alias(client, CHAMPION) == champion

        # The run worker is killed (OOM killer, node loss) while it logs to MLflow.
        started_ms = int(time.time() * 1000)
        run_b = dagster.launch(f"{NAME}__training", {"mlplatform/trigger": "test-worker-killed"})
        _wait_for_mlflow_run_logging(client, started_ms)
        os.kill(_run_worker_pid(stack), signal.SIGKILL)
        dagster.wait_run(run_b, want="FAILURE", timeout=60)
        assert "SIGKILL" in dagster.errors(run_b) or "signal 9" in dagster.errors(run_b), dagster.errors(run_b)
        assert _versions(client) == before, "a version was registered or aliased by the killed run"

        # Rerun: a complete version, with the challenger alias and every lineage tag.
        run_c = dagster.launch(f"{NAME}__training", {"mlplatform/trigger": "test-rerun"})
        dagster.wait_run(run_c)
        new = sorted(set(_versions(client)) - set(before), key=int)
        assert len(new) == 1, _versions(client)
        version = client.get_model_version(NAME, new[0])
        tags = client.get_run(version.run_id).data.tags
        assert tags[TAG_DAGSTER_RUN] == run_c and all(tags.get(t) for t in LINEAGE_TAGS)
        assert _alias(client, CHALLENGER) == new[0]
        _wait_replicas_serve(stack, _alias(client, CHAMPION))
    finally:
        load.stop()
    assert not load.failures, load.failures[:10]
    assert not stack.dead(), stack.dead()


def test_postgres_and_code_server_restarts_recover_on_their_own(stack, dagster):
    """PostgreSQL restarts under the running daemon, then the code server restarts (a new deployment): with no
    help, the sensors tick again and a new source day is ingested and monitored exactly once."""
    sensors = [f"{NAME}__new_data_sensor", f"{NAME}__monitoring_sensor", f"{NAME}__drift_sensor"]
    run_id = dagster.runs()[0]["runId"]
    stack.postgres.stop(mode="fast")  # drops every connection, as a failover or a minor-version upgrade does
    time.sleep(5)  # the daemon's ticks and heartbeats hit a dead database meanwhile
    stack.postgres.start()
    # dagster-webserver keeps one pooled connection per storage without a liveness check: each dies with the
    # server and fails one request (HTTP 500) before SQLAlchemy replaces it. The UI recovers within a few.
    failed = 0
    for read in (dagster.runs, lambda: dagster.sensor_ticks(sensors[0]), lambda: dagster.errors(run_id)):
        for _ in range(3):
            try:
                read()
                break
            except httpx.HTTPStatusError:
                failed += 1
        else:
            pytest.fail("the webserver does not recover from a PostgreSQL restart")
    assert failed <= 3, failed
    stack.services["code_server"].restart()
    restarted = time.time()

    day = SMALL_END + dt.timedelta(days=2)
    stack.put_source_day(NAME, customer_churn(day, rows=SMALL_ROWS), day)

    def for_day(trigger: str):  # noqa: ANN202
        def check():  # noqa: ANN202
            runs = [r for r in dagster.runs(**{"mlplatform/trigger": trigger, "mlplatform/model": NAME})
                    if {t["key"]: t["value"] for t in r["tags"]}.get("dagster/partition") == str(day)]
            failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
            assert not failed, f"{trigger} run failed:\n{dagster.errors(failed[0]['runId'])[-3000:]}"
            return [r for r in runs if r["status"] == "SUCCESS"]
        return check

    wait_until(f"the ingest run of {day}", for_day("new_data"), RUN_TIMEOUT_S, on_timeout=dagster.diagnostics)
    wait_until(f"the monitoring run of {day}", for_day("validated_data"), RUN_TIMEOUT_S,
               on_timeout=dagster.diagnostics)
    time.sleep(10)  # a few more ticks: nothing is launched twice
    assert len(for_day("new_data")()) == len(for_day("validated_data")()) == 1
    run_keys = Counter({t["key"]: t["value"] for t in r["tags"]}.get("dagster/run_key") for r in dagster.runs())
    run_keys.pop(None, None)
    assert all(n == 1 for n in run_keys.values()), [k for k, n in run_keys.items() if n > 1]
    for sensor in sensors:
        ticks = [t for t in dagster.sensor_ticks(sensor) if t["timestamp"] > restarted and t["status"] != "STARTED"]
        assert ticks and ticks[0]["status"] in ("SUCCESS", "SKIPPED"), (sensor, ticks[:2])
    assert not stack.dead(), stack.dead()


def _prediction_log_request_ids(stack: LocalStack) -> set[str]:
    import io

    import pyarrow.parquet as pq

    s3 = stack.s3_client()
    ids: set[str] = set()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=DATA_BUCKET, Prefix=f"predictions/{NAME}/")
    for obj in (o for page in pages for o in page.get("Contents", [])):
        if obj["Key"].endswith(".parquet"):
            body = s3.get_object(Bucket=DATA_BUCKET, Key=obj["Key"])["Body"].read()
            ids.update(pq.read_table(io.BytesIO(body), columns=["request_id"]).column("request_id").to_pylist())
    return ids


def _dropped_log_rows(url: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text)
               if f.name == "mlplatform_serving_prediction_log_rows_dropped" for s in f.samples
               if s.name.endswith("_total"))


def test_prediction_log_survives_an_s3_outage(stack):
    """S3 stops answering while the replicas serve: every prediction is still answered, and the prediction
    log holds the rows in memory and writes them once S3 is back; nothing is counted as dropped."""
    import signal

    headers = {"Authorization": f"Bearer {stack.api_key}"}
    body = LoadLoop(stack).body
    dropped_before = [_dropped_log_rows(url) for url in stack.replica_urls]
    s3 = stack.services["s3"]
    sent = []
    os.killpg(s3.proc.pid, signal.SIGSTOP)  # S3 stops answering (connections hang), its data is kept
    try:
        with httpx.Client(timeout=10) as client:
            for i in range(40):
                rid = f"s3-outage-{i}"
                url = stack.replica_urls[i % stack.replicas]
                r = client.post(f"{url}/invocations", json=body, headers={**headers, "X-Request-Id": rid})
                assert r.status_code == 200, (url, r.status_code, r.text[:300])
                sent.append(rid)
                time.sleep(0.1)  # the outage spans several flush intervals (1 s)
    finally:
        os.killpg(s3.proc.pid, signal.SIGCONT)
    wait_until("the outage's predictions in the S3 prediction log",
               lambda: set(sent) <= _prediction_log_request_ids(stack), 90,
               on_timeout=lambda: f"missing: {sorted(set(sent) - _prediction_log_request_ids(stack))[:10]}")
    assert [_dropped_log_rows(url) for url in stack.replica_urls] == dropped_before
    assert not stack.dead(), stack.dead()
