"""``kill -9`` of a training run at each stage leaves nothing inconsistent, and the next run succeeds.

Each case copies one trained home (champion v1), starts a real ``mlplatform lifecycle`` process, watches
the Dagster event log or the MLflow store until the run reaches the stage, SIGKILLs the process, and
then runs the lifecycle again (the CLI's next start). What must hold afterwards:

- the killed Dagster run is FAILED (not STARTED forever), with a message saying why;
- no MLflow run of the model is still RUNNING;
- every registered version has its lineage tags and is either evaluated or abandoned; an abandoned one
  holds no alias; ``champion`` and ``challenger`` point at evaluated versions;
- the rerun succeeds.
"""

import io
import shutil
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.lib.config import load_config
from mlplatform_assets.lib.model.registry import (
    CHALLENGER,
    CHAMPION,
    LINEAGE_TAGS,
    STATE_ABANDONED,
    STATE_EVALUATED,
    STATE_PENDING,
    TAG_DAGSTER_RUN,
    TAG_STATE,
    MlflowSettings,
    Registry,
)
from mlplatform_tests.conftest import (
    SMALL_END,
    SMALL_NAME,
    free_port,
    write_churn_days,
    write_small_spec,
)
from mlplatform_tests.integration.cli_processes import start_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGE_TIMEOUT_S = 300
_PLATFORM_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLPLATFORM_DATA_URI", "MLPLATFORM_ARTIFACT_ROOT",
                  "MLPLATFORM_PREDICTION_LOG_URI", "MLPLATFORM_MLFLOW_UI_URL", "AWS_ENDPOINT_URL")


def _point_at(mp: pytest.MonkeyPatch, base: Path, artifacts: Path | None = None) -> None:
    for var in _PLATFORM_VARS:
        mp.delenv(var, raising=False)
    mp.setenv("MLPLATFORM_HOME", str(base / "state"))
    mp.setenv("DAGSTER_HOME", str(base / "state" / "dagster"))
    mp.setenv("MLPLATFORM_MODELS_DIR", str(base / "models"))
    mp.setenv("DAGSTER_DISABLE_TELEMETRY", "1")
    if artifacts is not None:
        # The copied MLflow store records artifact locations under the original home.
        mp.setenv("MLPLATFORM_ARTIFACT_ROOT", artifacts.as_uri())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        _point_at(mp, base)
        config = load_config()
        write_churn_days(base / "source")
        write_small_spec(config.models_dir, base / "source")
        [summary] = run_lifecycle(config, [SMALL_NAME], SMALL_END, out=io.StringIO())
        assert summary["success"], summary
    return base


def _step_started(instance: dg.DagsterInstance, run_id: str, step: str) -> bool:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return any(r.event_log_entry.step_key == f"{SMALL_NAME}__{step}" for r in records)


def _mlflow_running(registry: Registry, run_id: str) -> bool:
    runs = registry.client.search_runs([registry.experiment_id(SMALL_NAME)],
                                       filter_string="attributes.status = 'RUNNING'")
    return any(r.data.tags.get(TAG_DAGSTER_RUN) == run_id for r in runs)


def _registered_pending(registry: Registry, run_id: str) -> bool:
    return any(v.tags.get(TAG_DAGSTER_RUN) == run_id and v.tags.get(TAG_STATE) == STATE_PENDING
               for v in registry.client.search_model_versions(f"name='{SMALL_NAME}'"))


STAGES = {
    # stage: (when to kill, whether the spec names an endpoint the promotion step then waits for)
    "features": (lambda inst, reg, run_id: _step_started(inst, run_id, "features"), False),
    "mlflow_logging": (lambda inst, reg, run_id: _mlflow_running(reg, run_id), False),
    "registered_not_evaluated": (lambda inst, reg, run_id: _registered_pending(reg, run_id), False),
    # The endpoint never answers: deployed_endpoint moves the alias, then waits for it to serve (~9 s).
    "deployed_endpoint": (lambda inst, reg, run_id: _step_started(inst, run_id, "deployed_endpoint"), True),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_during_training_leaves_nothing_inconsistent(trained, tmp_path, monkeypatch, stage):
    shutil.copytree(trained / "state", tmp_path / "state")
    shutil.copytree(trained / "source", tmp_path / "source")
    _point_at(monkeypatch, tmp_path, artifacts=trained / "state" / "mlflow" / "artifacts")
    config = load_config()
    when, with_endpoint = STAGES[stage]
    spec = write_small_spec(config.models_dir, tmp_path / "source")
    plain_spec = spec.read_text()
    if with_endpoint:
        spec.write_text(plain_spec + f"serving: {{endpoints: ['http://127.0.0.1:{free_port()}'], poll_interval_s: 2}}\n")
    instance = dg.DagsterInstance.from_config(config.dagster_home)
    registry = Registry(MlflowSettings.from_config(config), config.audit_log_path)
    champion_before = str(registry.champion(SMALL_NAME).version)

    proc = start_cli(["lifecycle", "--model", SMALL_NAME, "--as-of", str(SMALL_END)], tmp_path / "killed.log")
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    run_id = None
    try:
        while True:
            assert proc.poll() is None, f"exited ({proc.returncode}) before {stage}:\n" + \
                (tmp_path / "killed.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, f"never reached {stage}"
            if run_id is None:
                runs = instance.get_runs(filters=dg.RunsFilter(job_name=f"{SMALL_NAME}__lifecycle",
                                                               statuses=[dg.DagsterRunStatus.STARTED]))
                run_id = runs[0].run_id if runs else None
            if run_id is not None and when(instance, registry, run_id):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # what the kill left behind

    spec.write_text(plain_spec)
    out = io.StringIO()
    [rerun] = run_lifecycle(config, [SMALL_NAME], SMALL_END, out=out)
    assert rerun["success"], rerun
    assert f"recovered run {run_id}" in out.getvalue(), out.getvalue()

    # The killed run: FAILED, saying why.
    killed = instance.get_run_by_id(run_id)
    assert killed.status == dg.DagsterRunStatus.FAILURE
    failure = next(e for e in instance.all_logs(run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    assert "no longer exists" in failure.message
    # No MLflow run left RUNNING.
    running = registry.client.search_runs([registry.experiment_id(SMALL_NAME)],
                                          filter_string="attributes.status = 'RUNNING'")
    assert running == []
    # Every version: full lineage, and evaluated or abandoned (never pending); aliases only on evaluated ones.
    versions = {str(v.version): v for v in registry.client.search_model_versions(f"name='{SMALL_NAME}'")}
    for version, mv in versions.items():
        tags = registry.client.get_run(mv.run_id).data.tags
        assert all(tags.get(t) for t in LINEAGE_TAGS), (version, tags)
        assert mv.tags.get(TAG_STATE) in (STATE_EVALUATED, STATE_ABANDONED), (version, mv.tags)
        if mv.tags[TAG_STATE] == STATE_ABANDONED:
            assert not registry.client.get_model_version(SMALL_NAME, version).aliases
    for alias in (CHAMPION, CHALLENGER):
        assert registry.alias_version(SMALL_NAME, alias).tags[TAG_STATE] == STATE_EVALUATED
    # The rerun's own version is the new challenger and was decided (audited) by the rerun.
    new = rerun["assets"]["trained_model"]["model_version"]
    assert str(registry.alias_version(SMALL_NAME, CHALLENGER).version) == new
    assert registry.audit_records(SMALL_NAME)[-1]["dagster_run_id"] == rerun["run_id"]

    killed_versions = [v for v, mv in versions.items() if mv.tags.get(TAG_DAGSTER_RUN) == run_id]
    if stage in ("features", "mlflow_logging"):
        assert killed_versions == []  # nothing was registered
        assert str(registry.champion(SMALL_NAME).version) in (champion_before, new)
    if stage == "mlflow_logging":
        killed_mlflow = registry.client.search_runs([registry.experiment_id(SMALL_NAME)],
                                                    filter_string=f"tags.`{TAG_DAGSTER_RUN}` = '{run_id}'")
        assert [r.info.status for r in killed_mlflow] == ["FAILED"]
    if stage == "registered_not_evaluated":
        [abandoned] = killed_versions
        assert versions[abandoned].tags[TAG_STATE] == STATE_ABANDONED
        assert str(registry.champion(SMALL_NAME).version) != abandoned
    if stage == "deployed_endpoint":
        [decided] = killed_versions
        assert versions[decided].tags[TAG_STATE] == STATE_EVALUATED
