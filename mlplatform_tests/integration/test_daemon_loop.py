"""The closed loop under the real ``dagster-daemon``: a drifted day lands, and without anyone clicking
anything it is ingested, its drift report is produced, the drift sensor launches one retraining run,
a new version is registered and evaluated against the champion (audited) - exactly once.

Sensors start RUNNING because the daemon's environment sets ``MLPLATFORM_SENSORS_DEFAULT=running``
(the code location reads it when it loads); ``MLPLATFORM_SENSOR_INTERVAL_S=2`` shortens their
minimum interval. The instance is the default SQLite one the CLI writes (QueuedRunCoordinator,
DefaultRunLauncher: each run in its own process).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.monitoring.alerts import read_alerts
from mlplatform_tests.conftest import stop_process_group

pytestmark = [pytest.mark.integration, pytest.mark.topology, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOP_TIMEOUT_S = 240
SETTLE_S = 15


def _stop(proc: subprocess.Popen) -> None:
    stop_process_group(proc, term_timeout=20)


def _sensor_cursors(instance: dg.DagsterInstance) -> dict[str, str | None]:
    from dagster._core.scheduler.instigation import InstigatorType

    return {s.instigator_name: getattr(s.instigator_data, "cursor", None)
            for s in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)}


def _runs(instance: dg.DagsterInstance, **tags: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags=tags)))


def test_drifted_day_is_ingested_detected_and_retrained_once(small_churn_spec, platform_env, tmp_path, monkeypatch):
    name = small_churn_spec.name
    # A champion first, through Dagster like the CLI does (also writes DAGSTER_HOME/dagster.yaml).
    [summary] = run_lifecycle(platform_env, [name], small_churn_spec.end)
    assert summary["success"], summary
    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)
    assert str(registry.champion(name).version) == "1"
    audit_before = len(registry.audit_records(name))

    env = {**os.environ, "MLPLATFORM_SENSORS_DEFAULT": "running", "MLPLATFORM_SENSOR_INTERVAL_S": "2",
           "PYTHONWARNINGS": "ignore"}
    log_path = tmp_path / "dagster-daemon.log"
    exe = shutil.which("dagster-daemon") or str(Path(sys.executable).with_name("dagster-daemon"))
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen([exe, "run", "-w", str(REPO_ROOT / "workspace.yaml")], cwd=REPO_ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    instance = dg.DagsterInstance.get()

    def tail(n: int = 6000) -> str:
        return log_path.read_text(errors="replace")[-n:]

    def wait_for(what: str, predicate, deadline: float):  # noqa: ANN001, ANN202
        while True:
            value = predicate()
            if value:
                return value
            assert daemon.poll() is None, f"dagster-daemon exited while waiting for {what}:\n{tail()}"
            if time.monotonic() > deadline:
                runs = [(r.job_name, r.status.value, dict(r.tags).get("mlplatform/trigger"))
                        for r in instance.get_runs(limit=20)]
                pytest.fail(f"timed out waiting for {what}\nruns: {runs}\ncursors: {_sensor_cursors(instance)}\n"
                            f"{tail()}")
            time.sleep(1)

    try:
        # Every per-model sensor has ticked once: the history (the ten days the champion was trained on)
        # is adopted, not re-processed.
        wanted = {f"{name}__new_data_sensor", f"{name}__monitoring_sensor"}
        wait_for("the first sensor ticks",
                 lambda: wanted <= {k for k, v in _sensor_cursors(instance).items() if v},
                 time.monotonic() + 120)
        assert not _runs(instance, **{"mlplatform/trigger": "new_data"}), "history must not be re-ingested"

        drifted_day = small_churn_spec.end + dt.timedelta(days=1)
        example_data.write_example_days("customer_churn", small_churn_spec.source_dir, [drifted_day],
                                        rows=300, drift=True)
        started = time.monotonic()
        deadline = started + LOOP_TIMEOUT_S

        def succeeded(trigger: str):  # noqa: ANN202
            def check():  # noqa: ANN202
                runs = _runs(instance, **{"mlplatform/trigger": trigger, "mlplatform/model": name})
                failed = [r for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
                assert not failed, f"{trigger} run {failed[0].run_id} failed:\n{tail()}"
                return [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
            return check

        [ingest] = wait_for("the ingest run of the drifted day", succeeded("new_data"), deadline)
        assert ingest.tags["dagster/partition"] == str(drifted_day) and ingest.job_name == f"{name}__ingest"
        [monitor] = wait_for("the monitoring run of the drifted day", succeeded("validated_data"), deadline)
        assert monitor.tags["dagster/partition"] == str(drifted_day)
        report = instance.get_latest_materialization_event(dg.AssetKey([name, "drift_report"]))
        meta = {k: getattr(v, "value", v) for k, v in report.asset_materialization.metadata.items()}
        assert report.dagster_event.partition == str(drifted_day) and meta["dataset_drift"] is True, meta

        [retrain] = wait_for("the drift-triggered retraining run", succeeded("drift"), deadline)
        elapsed = time.monotonic() - started
        assert retrain.job_name == f"{name}__training"
        assert retrain.tags["dagster/run_key"] == f"{name}:drift:{drifted_day}:{meta['data_sha256']}"
        assert retrain.run_config["ops"][f"{name}__features"]["config"]["as_of"] == str(drifted_day)

        # A new version was registered from that run and evaluated against the champion (audited).
        versions = registry.client.search_model_versions(f"name='{name}'")
        assert sorted(int(v.version) for v in versions) == [1, 2]
        audit = registry.audit_records(name)
        assert len(audit) == audit_before + 1
        assert audit[-1]["to_version"] == "2" and audit[-1]["dagster_run_id"] == retrain.run_id
        assert audit[-1]["decision"] in ("promoted", "kept_champion")
        alerts = read_alerts(platform_env.alerts_log_path, model=name, kind="drift")
        assert [a["partition"] for a in alerts] == [str(drifted_day)]

        # A few more ticks: the same drift event launches nothing more.
        time.sleep(SETTLE_S)
        assert len(_runs(instance, **{"mlplatform/trigger": "drift", "mlplatform/model": name})) == 1
        assert len(_runs(instance, **{"mlplatform/trigger": "new_data", "mlplatform/model": name})) == 1
        assert daemon.poll() is None, tail()
        print(f"drifted file -> retrained and evaluated in {elapsed:.0f} s")
    finally:
        _stop(daemon)
