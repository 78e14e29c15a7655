"""Sensors on a real (temporary, persistent) Dagster instance with real materializations.

The drift/quality sensors read ``drift_report`` / ``model_performance`` materializations. Tests that
need exact metadata (a given drift share or data hash) materialize small stand-in assets with the
same keys and metadata contract as mlplatform_assets/defs/monitoring/assets.py, for real, on the
same instance. The integration test (mlplatform_tests/integration/test_daemon_loop.py) runs the
whole loop with the real monitoring assets under dagster-daemon.
"""

import datetime as dt
import json
import os
import sqlite3
import time
from pathlib import Path

import dagster as dg
import pytest

from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.defs import names
from mlplatform_assets.defs.lifecycle.assets import daily_partitions
from mlplatform_assets.defs.monitoring import sensors as S
from mlplatform_assets.defs.resources import build_resources
from mlplatform_assets.lib import config
from mlplatform_assets.lib.config import ensure_dirs
from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.monitoring.alerts import read_alerts
from mlplatform_assets.lib.spec import DriftSpec, load_specs
from mlplatform_tests.conftest import (
    SMALL_DAYS,
    SMALL_END,
    write_churn_days,
    write_small_spec,
)

NAME = "small_churn"
SHA_A = "a" * 64
SHA_B = "b" * 64


# --- fixtures and helpers ------------------------------------------------------------------

@pytest.fixture
def platform(platform_env):
    """The isolated platform of the shared ``platform_env`` fixture, with its local directories created."""
    ensure_dirs(platform_env)
    return platform_env


@pytest.fixture
def churn_source(tmp_path) -> Path:
    """Daily Parquet files of small churn data for SMALL_DAYS."""
    source = tmp_path / "monitoring_source"
    write_churn_days(source, SMALL_DAYS)
    return source


@pytest.fixture
def env(platform, churn_source, tmp_path):
    """Spec, definitions, resources and a persistent temporary instance."""
    write_small_spec(Path(platform.models_dir), str(churn_source))
    spec = load_specs(platform.models_dir, platform.state_dir)[0]
    (tmp_path / "dagster_instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_instance")) as instance:
        yield Env(platform, spec, instance, churn_source)


class Env:
    def __init__(self, config, spec, instance, source):
        self.config, self.spec, self.instance, self.source = config, spec, instance, source
        self.defs = build_definitions(config, [spec])
        self.resources = build_resources(config)

    def with_drift(self, **kw) -> "Env":
        self.spec = self.spec.model_copy(update={"drift": DriftSpec(**{**self.spec.drift.model_dump(), **kw})})
        self.defs = build_definitions(self.config, [self.spec])
        return self

    def sensor(self, kind: str) -> dg.SensorDefinition:
        return self.defs.get_sensor_def(f"{NAME}__{kind}")

    def tick(self, kind: str, cursor: str | None):
        with dg.build_sensor_context(instance=self.instance, cursor=cursor, resources=self.resources,
                                     definitions=self.defs) as ctx:
            return self.sensor(kind).evaluate_tick(ctx)

    def alerts(self, kind=None):
        return read_alerts(self.config.alerts_log_path, model=NAME, kind=kind)

    def launch_like_daemon(self, request: dg.RunRequest, sensor: str) -> dg.DagsterRun:
        """Create the run the daemon creates for a RunRequest (same tags, run_key, validated run config)."""
        job = self.defs.resolve_job_def(f"{NAME}__training")
        return self.instance.create_run_for_job(
            job_def=job, run_config=request.run_config,
            tags={**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": sensor})


class DriftMeta(dg.Config):
    dataset_drift: bool
    drift_share: float
    data_sha256: str
    n_drifted_columns: int = 0


class PerfMeta(dg.Config):
    realized: float
    below_floor: bool
    served_version: str


def _standins(spec):
    partitions = daily_partitions(spec)

    @dg.asset(key=[spec.name, "drift_report"], partitions_def=partitions)
    def drift_report(config: DriftMeta) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={
            "dataset_drift": dg.MetadataValue.bool(config.dataset_drift),
            "drift_share": dg.MetadataValue.float(config.drift_share),
            "n_drifted_columns": dg.MetadataValue.int(config.n_drifted_columns),
            "data_sha256": dg.MetadataValue.text(config.data_sha256),
            "prediction_drift_score": dg.MetadataValue.float(0.05)})

    @dg.asset(key=[spec.name, "model_performance"], partitions_def=partitions)
    def model_performance(config: PerfMeta) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={
            f"realized_{spec.metrics.primary}": dg.MetadataValue.float(config.realized),
            "below_floor": dg.MetadataValue.bool(config.below_floor),
            "served_version": dg.MetadataValue.text(config.served_version)})

    return drift_report, model_performance


def materialize_drift(env: Env, day, drift: bool, share: float, sha: str) -> None:
    asset = _standins(env.spec)[0]
    cfg = {"dataset_drift": drift, "drift_share": share, "data_sha256": sha, "n_drifted_columns": int(share * 11)}
    res = dg.materialize([asset], instance=env.instance, partition_key=str(day),
                         run_config={"ops": {f"{NAME}__drift_report": {"config": cfg}}})
    assert res.success


def materialize_perf(env: Env, day, realized: float, below: bool, served: str) -> None:
    asset = _standins(env.spec)[1]
    res = dg.materialize([asset], instance=env.instance, partition_key=str(day), run_config={
        "ops": {f"{NAME}__model_performance": {"config": {"realized": realized, "below_floor": below,
                                                           "served_version": served}}}})
    assert res.success


D1, D2, D3 = SMALL_END - dt.timedelta(days=2), SMALL_END - dt.timedelta(days=1), SMALL_END


# --- drift sensor -------------------------------------------------------------------------------

def test_drift_requests_one_training_run_with_run_key_and_as_of(env):
    materialize_drift(env, D3, True, 0.64, SHA_A)
    out = env.tick("drift_sensor", None)
    assert out.skip_message is None
    [req] = out.run_requests
    assert req.run_key == f"{NAME}:drift:{D3}:{SHA_A}"
    assert req.job_name in (None, f"{NAME}__training")
    assert req.run_config == {"ops": {f"{NAME}__features": {"config": {"as_of": str(D3)}}}}
    assert req.tags[S.TRIGGER_TAG] == "drift" and req.tags[S.MODEL_TAG] == NAME
    assert json.loads(out.cursor)["after_storage_id"] > 0
    # The run the daemon would create from it is valid for the training job (config validated).
    run = env.launch_like_daemon(req, "small_churn__drift_sensor")
    assert run.run_config["ops"][f"{NAME}__features"]["config"]["as_of"] == str(D3)
    [alert] = env.alerts("drift")
    assert alert["partition"] == str(D3) and "0.64 >= threshold 0.5" in alert["message"]
    assert alert["details"]["data_sha256"] == SHA_A


def test_no_drift_skips_with_share_versus_threshold(env):
    materialize_drift(env, D2, False, 0.18, SHA_A)
    out = env.tick("drift_sensor", None)
    assert not out.run_requests
    assert "no dataset drift" in out.skip_message
    assert f"{D2}: drift share 0.18 < threshold 0.5" in out.skip_message
    assert env.alerts() == []
    # Nothing new afterwards: the cursor moved past the event.
    again = env.tick("drift_sensor", out.cursor)
    assert not again.run_requests and "no new small_churn/drift_report" in again.skip_message


def test_retrain_on_drift_false_alerts_but_does_not_retrain(env):
    env.with_drift(retrain_on_drift=False)
    materialize_drift(env, D3, True, 0.7, SHA_A)
    out = env.tick("drift_sensor", None)
    assert not out.run_requests and "retrain_on_drift is false" in out.skip_message
    assert len(env.alerts("drift")) == 1


def test_same_drift_event_launches_exactly_one_run(env):
    materialize_drift(env, D3, True, 0.64, SHA_A)
    first = env.tick("drift_sensor", None)
    [req] = first.run_requests
    run = env.launch_like_daemon(req, "small_churn__drift_sensor")
    # The tick is evaluated again from the old cursor (e.g. the daemon died before storing it): no second run.
    replay = env.tick("drift_sensor", None)
    assert not replay.run_requests
    assert f"already launched run {run.run_id}" in replay.skip_message
    assert env.alerts("retrain_storm_blocked") == []
    # And from the stored cursor the event is simply not new.
    nxt = env.tick("drift_sensor", first.cursor)
    assert not nxt.run_requests and "no new" in nxt.skip_message
    runs = env.instance.get_runs(filters=dg.RunsFilter(tags={S.TRIGGER_TAG: "drift", S.MODEL_TAG: NAME}))
    assert len(runs) == 1


def test_cooldown_blocks_then_allows(env):
    env.with_drift(cooldown_hours=12, max_retrains_per_day=5)
    materialize_drift(env, D2, True, 0.6, SHA_A)
    first = env.tick("drift_sensor", None)
    env.launch_like_daemon(first.run_requests[0], "small_churn__drift_sensor")

    materialize_drift(env, D3, True, 0.7, SHA_B)
    blocked = env.tick("drift_sensor", first.cursor)
    assert not blocked.run_requests
    assert "cool-down" in blocked.skip_message and "cooldown_hours=12" in blocked.skip_message
    [storm] = env.alerts("retrain_storm_blocked")
    assert storm["partition"] == str(D3) and storm["details"]["run_key"] == f"{NAME}:drift:{D3}:{SHA_B}"
    assert json.loads(blocked.cursor)["after_storage_id"] > json.loads(first.cursor)["after_storage_id"]

    # With a cool-down shorter than the time since that run (the policy's edges are in
    # lib/monitoring/test_retrain_policy.py), the same kind of event now retrains.
    env.with_drift(cooldown_hours=1e-9, max_retrains_per_day=5)
    materialize_drift(env, D3, True, 0.71, SHA_A)
    allowed = env.tick("drift_sensor", blocked.cursor)
    assert [r.run_key for r in allowed.run_requests] == [f"{NAME}:drift:{D3}:{SHA_A}"]


def test_max_retrains_per_day(env):
    env.with_drift(cooldown_hours=0, max_retrains_per_day=2)
    cursor = None
    for day, sha in ((D1, SHA_A), (D2, SHA_A)):
        materialize_drift(env, day, True, 0.6, sha)
        out = env.tick("drift_sensor", cursor)
        [req] = out.run_requests
        env.launch_like_daemon(req, "small_churn__drift_sensor")
        cursor = out.cursor
    materialize_drift(env, D3, True, 0.6, SHA_A)
    capped = env.tick("drift_sensor", cursor)
    assert not capped.run_requests
    assert "daily cap: 2 drift-triggered retrain(s) in the last 24 h" in capped.skip_message
    assert env.alerts("retrain_storm_blocked")[0]["details"]["retrains_last_24h"] == 2
    # Zero means never.
    env.with_drift(cooldown_hours=0, max_retrains_per_day=0)
    materialize_drift(env, D3, True, 0.6, SHA_B)
    never = env.tick("drift_sensor", capped.cursor)
    assert not never.run_requests and "max_retrains_per_day is 0" in never.skip_message


def test_backfill_of_drift_reports_retrains_once_on_the_latest_day(env):
    env.with_drift(cooldown_hours=0, max_retrains_per_day=10)
    for day in (D1, D2, D3):
        materialize_drift(env, day, True, 0.6, SHA_A)
    out = env.tick("drift_sensor", None)
    assert [r.run_key for r in out.run_requests] == [f"{NAME}:drift:{D3}:{SHA_A}"]
    assert len(env.alerts("drift")) == 3


def test_cursor_does_not_advance_when_the_tick_errors(env):
    materialize_drift(env, D3, True, 0.64, SHA_A)
    runs_db = Path(env.instance.root_directory) / "history" / "runs.db"
    assert runs_db.exists()
    # The run storage breaks after the events were read (a real failure of a real component).
    with sqlite3.connect(runs_db) as conn:
        conn.execute("ALTER TABLE runs RENAME TO runs_unavailable")
    with dg.build_sensor_context(instance=env.instance, cursor=None, resources=env.resources,
                                 definitions=env.defs) as ctx:
        with pytest.raises(Exception, match="runs"):
            env.sensor("drift_sensor").evaluate_tick(ctx)
    assert ctx.cursor is None
    assert env.alerts() == []  # side effects only after everything was computed
    with sqlite3.connect(runs_db) as conn:
        conn.execute("ALTER TABLE runs_unavailable RENAME TO runs")
    # Storage is back: the same event is still there to be handled.
    out = env.tick("drift_sensor", None)
    assert [r.run_key for r in out.run_requests] == [f"{NAME}:drift:{D3}:{SHA_A}"]
    assert len(env.alerts("drift")) == 1


# --- new-data and monitoring sensors ----------------------------------------------------------

def test_new_data_sensor_requests_each_day_once_per_content(env, monkeypatch):
    monkeypatch.setenv(config.ENV_NEW_DATA_MAX, "6")  # bounded per tick, oldest first
    out = env.tick("new_data_sensor", None)
    requested = sorted(r.partition_key for r in out.run_requests)
    assert requested == [str(d) for d in SMALL_DAYS[:6]]
    for r in out.run_requests:
        assert r.run_key.startswith(f"{NAME}:ingest:{r.partition_key}:") and len(r.run_key.split(":")[-1]) == 16
        assert r.tags[S.TRIGGER_TAG] == "new_data"
    second = env.tick("new_data_sensor", out.cursor)
    assert sorted(r.partition_key for r in second.run_requests) == [str(d) for d in SMALL_DAYS[6:]]
    monkeypatch.delenv(config.ENV_NEW_DATA_MAX)
    quiet = env.tick("new_data_sensor", second.cursor)
    assert not quiet.run_requests and "no new or changed files" in quiet.skip_message

    # A new day lands; an old file is touched without a content change; another is rewritten.
    new_day = SMALL_END + dt.timedelta(days=1)
    example_data.write_example_days("customer_churn", env.source, [new_day], rows=300)
    touched = env.source / f"{SMALL_DAYS[3]}.parquet"
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    rewritten = SMALL_DAYS[5]
    example_data.write_example_days("customer_churn", env.source, [rewritten], rows=300, drift=True, overwrite=True)
    changed = env.tick("new_data_sensor", quiet.cursor)
    keys = {r.partition_key: r.run_key for r in changed.run_requests}
    assert sorted(keys) == [str(rewritten), str(new_day)]
    old_key = next(r.run_key for r in out.run_requests if r.partition_key == str(rewritten))
    assert keys[str(rewritten)] != old_key  # new content, new run_key
    assert not env.tick("new_data_sensor", changed.cursor).run_requests

    # The run config is valid for the partitioned ingest job.
    job = env.defs.resolve_job_def(f"{NAME}__ingest")
    req = changed.run_requests[0]
    run = env.instance.create_run_for_job(job_def=job, tags={**req.tags, "dagster/partition": req.partition_key})
    assert run.tags["dagster/partition"] == req.partition_key

    # The default bound is 10 per tick.
    assert len(env.tick("new_data_sensor", None).run_requests) == 10


def test_new_data_sensor_adopts_already_ingested_days_and_waits_for_future_partitions(env):
    ingest = env.defs.resolve_job_def(f"{NAME}__ingest")
    assert ingest.execute_in_process(instance=env.instance, partition_key=str(SMALL_DAYS[0])).success
    tomorrow = dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1)
    example_data.write_example_days("customer_churn", env.source, [tomorrow], rows=50)
    out = env.tick("new_data_sensor", None)
    requested = {r.partition_key for r in out.run_requests}
    assert str(SMALL_DAYS[0]) not in requested and str(tomorrow) not in requested
    assert str(SMALL_DAYS[1]) in requested
    state = json.loads(out.cursor)["days"]
    assert str(SMALL_DAYS[0]) in state and str(tomorrow) not in state


def test_monitoring_sensor_requests_each_new_validated_partition(env):
    first = env.tick("monitoring_sensor", None)
    assert not first.run_requests and "first tick" in first.skip_message
    ingest = env.defs.resolve_job_def(f"{NAME}__ingest")
    for day in (D2, D3):
        assert ingest.execute_in_process(instance=env.instance, partition_key=str(day)).success
    out = env.tick("monitoring_sensor", first.cursor)
    assert sorted(r.partition_key for r in out.run_requests) == [str(D2), str(D3)]
    assert all(r.run_key.startswith(f"{NAME}:monitoring:") for r in out.run_requests)
    assert not env.tick("monitoring_sensor", out.cursor).run_requests
    # Re-ingesting a day (new content) produces a new validated materialization: monitored again.
    assert ingest.execute_in_process(instance=env.instance, partition_key=str(D3)).success
    again = env.tick("monitoring_sensor", out.cursor)
    assert [r.partition_key for r in again.run_requests] == [str(D3)]
    assert again.run_requests[0].run_key not in {r.run_key for r in out.run_requests}


# --- quality sensor and rollback ----------------------------------------------------------------

def _register_two_versions(config):
    """Two tiny sklearn models in the real MLflow SQLite store; v2 is champion after v1 (audited)."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from mlplatform_assets.lib.model.registry import (
        MlflowSettings,
        Registry,
        mlflow_uris,
    )

    registry = Registry(MlflowSettings.from_config(config), config.audit_log_path)
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    with mlflow_uris(registry.settings):
        exp = registry.experiment_id(NAME)
        for _ in range(2):
            with mlflow.start_run(experiment_id=exp):
                info = mlflow.sklearn.log_model(LogisticRegression().fit(X, y), name="model",
                                                serialization_format="skops")
            mlflow.register_model(info.model_uri, NAME)
    registry.move_champion(NAME, "1", action="promote", reason="first", actor="test")
    registry.move_champion(NAME, "2", action="promote", reason="better", actor="test")
    return registry


def test_quality_sensor_rolls_back_once(env):
    env.with_drift(quality_floor=0.7, auto_rollback=True)
    registry = _register_two_versions(env.config)
    assert str(registry.champion(NAME).version) == "2"
    materialize_perf(env, D3, realized=0.55, below=True, served="2")

    out = env.tick("quality_sensor", None)
    assert not out.run_requests and "rolled_back" in out.skip_message
    assert str(registry.champion(NAME).version) == "1"
    last = registry.audit_records(NAME)[-1]
    assert (last["decision"], last["from_version"], last["to_version"]) == ("rolled_back", "2", "1")
    assert last["actor"] == "sensor:small_churn__quality_sensor" and "below the floor" in last["reason"]
    [q] = env.alerts("quality_floor")
    assert q["partition"] == str(D3) and q["details"]["rollback"]["status"] == "rolled_back"
    [rb] = env.alerts("rollback")
    assert "v2 -> v1" in rb["message"]

    # Replayed from the old cursor: no second rollback, no new audit record.
    n_audit = len(registry.audit_records(NAME))
    replay = env.tick("quality_sensor", None)
    assert "already_rolled_back" in replay.skip_message
    assert len(registry.audit_records(NAME)) == n_audit and str(registry.champion(NAME).version) == "1"
    assert len(env.alerts("rollback")) == 1
    assert "no new" in env.tick("quality_sensor", out.cursor).skip_message

    # A later bad day for a version that is no longer champion: alert only.
    materialize_perf(env, D3 + dt.timedelta(days=1), realized=0.5, below=True, served="2")
    later = env.tick("quality_sensor", out.cursor)
    assert "skipped" in later.skip_message and str(registry.champion(NAME).version) == "1"
    assert len(registry.audit_records(NAME)) == n_audit


def test_quality_sensor_without_auto_rollback_only_alerts(env):
    env.with_drift(quality_floor=0.7, auto_rollback=False)
    materialize_perf(env, D2, realized=0.9, below=False, served="1")
    ok = env.tick("quality_sensor", None)
    assert "none below the floor" in ok.skip_message and env.alerts() == []
    materialize_perf(env, D3, realized=0.6, below=True, served="1")
    bad = env.tick("quality_sensor", ok.cursor)
    [q] = env.alerts("quality_floor")
    assert "0.6 on" in q["message"] and "rollback" not in q["details"]
    assert "alerted" in bad.skip_message


# --- run failure sensor -----------------------------------------------------------------------

def test_run_failure_sensor_alerts_with_model_asset_and_error(env):
    training = env.defs.resolve_job_def(f"{NAME}__training")
    # No validated data yet: the features step fails with a clear error.
    result = training.execute_in_process(instance=env.instance, raise_on_error=False,
                                         tags={S.MODEL_TAG: NAME, S.TRIGGER_TAG: "drift"})
    assert not result.success
    sensor = env.defs.get_sensor_def(names.RUN_FAILURE_SENSOR)
    ctx = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_event=result.get_run_failure_event(), dagster_instance=env.instance,
        dagster_run=result.dagster_run, resources=env.resources).for_run_failure()
    with ctx:
        sensor(ctx)
    [alert] = env.alerts("run_failure")
    assert alert["model"] == NAME and alert["asset"] == f"{NAME}/features"
    assert alert["details"]["failed_steps"] == [f"{NAME}__features"]
    assert alert["details"]["run_id"] == result.run_id and alert["details"]["trigger"] == "drift"
    assert "small_churn" in alert["details"]["errors"][f"{NAME}__features"]
    assert f"failed in {NAME}/features" in alert["message"]


# --- definitions-level settings -------------------------------------------------------------------

def test_sensor_defaults_interval_and_descriptions(env, monkeypatch):
    sensors = {s.name: s for s in env.defs.get_repository_def().sensor_defs}
    assert set(sensors) == {f"{NAME}__{k}" for k in ("new_data_sensor", "monitoring_sensor", "drift_sensor",
                                                     "quality_sensor")} | {names.RUN_FAILURE_SENSOR}
    for s in sensors.values():
        assert s.description and len(s.description) > 40
    assert sensors[f"{NAME}__drift_sensor"].default_status == dg.DefaultSensorStatus.STOPPED
    assert sensors[names.RUN_FAILURE_SENSOR].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors[f"{NAME}__drift_sensor"].minimum_interval_seconds == 30
    monkeypatch.setenv(config.ENV_SENSORS_DEFAULT, "running")
    monkeypatch.setenv(config.ENV_SENSOR_INTERVAL, "5")
    fresh = {s.name: s for s in build_definitions(env.config, [env.spec]).get_repository_def().sensor_defs}
    assert fresh[f"{NAME}__new_data_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert fresh[f"{NAME}__new_data_sensor"].minimum_interval_seconds == 5


# --- other source layouts -----------------------------------------------------------------------

def test_new_data_sensor_on_an_s3_source(platform, tmp_path, monkeypatch):
    """An s3:// source listed through the data_store resource's client (moto's real HTTP server)."""
    import io

    import boto3
    from moto.server import ThreadedMotoServer

    from mlplatform_tests.conftest import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                     "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(k, v)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="src")

        def put(day, drift=False):
            buf = io.BytesIO()
            example_data.customer_churn(day, rows=60, drift=drift).to_parquet(buf, index=False)
            client.put_object(Bucket="src", Key=f"churn/{day}.parquet", Body=buf.getvalue())

        for day in (D1, D2):
            put(day)
        client.put_object(Bucket="src", Key="churn/README.txt", Body=b"not a day")
        write_small_spec(Path(platform.models_dir), "s3://src/churn")
        spec = load_specs(platform.models_dir, platform.state_dir)[0]
        (tmp_path / "inst").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp_path / "inst")) as instance:
            env = Env(platform, spec, instance, None)
            out = env.tick("new_data_sensor", None)
            assert sorted(r.partition_key for r in out.run_requests) == [str(D1), str(D2)]
            assert not env.tick("new_data_sensor", out.cursor).run_requests
            put(D2, drift=True)  # corrected upload: new ETag
            put(D3)
            nxt = env.tick("new_data_sensor", out.cursor)
            assert sorted(r.partition_key for r in nxt.run_requests) == [str(D2), str(D3)]
    finally:
        server.stop()


def test_new_data_sensor_on_a_single_file_source(platform, tmp_path):
    src = tmp_path / "single" / "churn.csv"
    src.parent.mkdir()
    frames = [example_data.customer_churn(d, rows=40) for d in (D1, D2)]
    import pandas as pd

    pd.concat(frames).to_csv(src, index=False)
    write_small_spec(Path(platform.models_dir), str(src))
    spec = load_specs(platform.models_dir, platform.state_dir)[0]
    assert spec.source.layout == "single_file"
    (tmp_path / "inst").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "inst")) as instance:
        env = Env(platform, spec, instance, None)
        out = env.tick("new_data_sensor", None)
        assert sorted(r.partition_key for r in out.run_requests) == [str(D1), str(D2)]
        # Rows for a new day are appended: only that day is new; the old days' rows are unchanged.
        pd.concat([*frames, example_data.customer_churn(D3, rows=40)]).to_csv(src, index=False)
        nxt = env.tick("new_data_sensor", out.cursor)
        assert [r.partition_key for r in nxt.run_requests] == [str(D3)]
        assert not env.tick("new_data_sensor", nxt.cursor).run_requests
