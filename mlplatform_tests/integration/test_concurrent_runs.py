"""Several ``mlplatform`` commands at once on one home leave nothing inconsistent.

- On a fresh home, the first commands create and migrate the Dagster and MLflow stores one at a time
  (concurrently they used to corrupt the schedule storage with two migration heads).
- Two lifecycle runs of one model started together train one after the other: each evaluates and
  promotes its own version, and the audit trail credits each decision to the right version.
"""

import io
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.lib.model.registry import (
    LINEAGE_TAGS,
    STATE_EVALUATED,
    TAG_DAGSTER_RUN,
    TAG_STATE,
    MlflowSettings,
    Registry,
)
from mlplatform_tests.integration.cli_processes import logs, start_together

pytestmark = [pytest.mark.integration, pytest.mark.topology, pytest.mark.slow]

WAIT_S = 600


def test_first_commands_on_a_fresh_home_initialise_the_stores_once(small_churn_spec, platform_env, tmp_path):
    empty = tmp_path / "no_data_yet"
    empty.mkdir()
    # A spec whose source has no data: each lifecycle opens both stores, then stops with a clear error.
    text = small_churn_spec.spec_path.read_text().replace(str(small_churn_spec.source_dir), str(empty))
    small_churn_spec.spec_path.write_text(text)
    lifecycle = ["lifecycle", "--model", small_churn_spec.name, "--as-of", str(small_churn_spec.end)]
    audit = ["audit", small_churn_spec.name]
    procs = start_together([lifecycle, lifecycle, lifecycle, audit, audit], tmp_path)
    codes = [p.wait(WAIT_S) for p in procs]
    out = logs(tmp_path, len(procs))
    assert codes == [2, 2, 2, 0, 0], out
    assert out.count("has no data") == 3 and "Traceback" not in out, out

    db = Path(platform_env.dagster_home) / "schedules" / "schedules.db"
    with sqlite3.connect(db) as conn:
        assert len(conn.execute("SELECT version_num FROM alembic_version").fetchall()) == 1
    # Every store opens and answers for the next command.
    instance = dg.DagsterInstance.from_config(platform_env.dagster_home)
    assert list(instance.get_runs()) == [] and instance.all_instigator_state() == []
    registry = Registry(MlflowSettings.from_config(platform_env))
    assert [e.name for e in registry.client.search_experiments()] == ["Default"]


def test_two_lifecycles_of_one_model_train_one_after_the_other(small_churn_spec, platform_env, tmp_path):
    name = small_churn_spec.name
    [first] = run_lifecycle(platform_env, [name], small_churn_spec.end, out=io.StringIO())
    assert first["success"], first

    args = ["lifecycle", "--model", name, "--as-of", str(small_churn_spec.end)]
    procs = start_together([args, args], tmp_path)
    codes = [p.wait(WAIT_S) for p in procs]
    out = logs(tmp_path, 2)
    assert codes == [0, 0], out
    assert "another training of this model is in progress" in out and "waits for it to finish" in out, out

    instance = dg.DagsterInstance.from_config(platform_env.dagster_home)
    runs = [r for r in instance.get_runs(filters=dg.RunsFilter(job_name=f"{name}__lifecycle"))
            if r.run_id != first["run_id"]]
    assert len(runs) == 2 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)

    def training_window(run_id: str) -> tuple[float, float, dict[str, dict]]:
        """From the first training step's start to the promotion's end, and the run's materializations."""
        events = instance.all_logs(run_id)
        starts = [e.timestamp for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_START"
                  and e.step_key == f"{name}__features"]
        ends = [e.timestamp for e in events if e.dagster_event and e.dagster_event.event_type_value == "STEP_SUCCESS"
                and e.step_key == f"{name}__deployed_endpoint"]
        mats = {e.dagster_event.asset_key.path[-1]: {k: getattr(v, "value", v) for k, v in
                                                     e.dagster_event.materialization.metadata.items()}
                for e in events if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION"}
        return starts[0], ends[0], mats

    (a_start, a_end, a_mats), (b_start, b_end, b_mats) = sorted(training_window(r.run_id) for r in runs)
    assert a_end <= b_start, "the two trainings of one model overlapped"

    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)
    versions = {str(v.version): v for v in registry.client.search_model_versions(f"name='{name}'")}
    assert sorted(versions) == ["1", "2", "3"]
    by_run = {v.tags[TAG_DAGSTER_RUN]: version for version, v in versions.items()}
    for run, mats in zip(sorted(runs, key=lambda r: training_window(r.run_id)[0]), (a_mats, b_mats)):
        version = by_run[run.run_id]  # each run registered exactly one version ...
        assert versions[version].tags[TAG_STATE] == STATE_EVALUATED
        lineage = registry.client.get_run(versions[version].run_id).data.tags
        assert all(lineage.get(tag) for tag in LINEAGE_TAGS), lineage
        # ... and evaluated and decided about that version, not the other run's.
        assert mats["trained_model"]["model_version"] == version
        assert mats["evaluation_report"]["challenger_version"] == version
    audit = {rec["to_version"]: rec for rec in registry.audit_records(name)}
    for version in ("2", "3"):
        assert audit[version]["dagster_run_id"] == versions[version].tags[TAG_DAGSTER_RUN]
