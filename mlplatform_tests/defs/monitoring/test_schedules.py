"""The nightly retrain schedule: cron, timezone, default status, target job, and an evaluated tick."""

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg

from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.defs.monitoring.schedules import build_monitoring_schedules
from mlplatform_assets.defs.names import MODEL_TAG, TRIGGER_TAG
from mlplatform_assets.lib.spec import ScheduleSpec, load_specs
from mlplatform_tests.conftest import write_small_spec


def _spec(platform, **schedule):
    write_small_spec(Path(platform.models_dir), "/nonexistent/source")
    spec = load_specs(platform.models_dir, platform.state_dir)[0]
    return spec.model_copy(update={"schedule": ScheduleSpec(**schedule)}) if schedule else spec


def test_defaults_are_stopped_nightly_utc(platform_env):
    spec = _spec(platform_env)
    [sched] = build_monitoring_schedules(spec)
    assert sched.name == "small_churn__nightly_retrain"
    assert sched.cron_schedule == "0 2 * * *" and sched.execution_timezone == "UTC"
    assert sched.job_name == "small_churn__training"
    assert sched.default_status == dg.DefaultScheduleStatus.STOPPED
    assert "Off by default" in sched.description and "small_churn" in sched.description


def test_enabled_spec_runs_in_its_timezone_and_a_tick_requests_training(platform_env):
    spec = _spec(platform_env, cron="30 3 * * 1-5", timezone="Europe/Berlin", enabled=True)
    defs = build_definitions(platform_env, [spec])
    sched = defs.get_schedule_def("small_churn__nightly_retrain")
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING
    assert (sched.cron_schedule, sched.execution_timezone) == ("30 3 * * 1-5", "Europe/Berlin")
    assert "Enabled by the spec" in sched.description
    # The job it targets exists in the code location.
    assert defs.resolve_job_def(sched.job_name).name == "small_churn__training"

    tick = dt.datetime(2026, 6, 10, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    data = sched.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=tick))
    [req] = data.run_requests
    assert req.run_key == f"small_churn:schedule:{tick.isoformat()}"
    assert req.tags[MODEL_TAG] == "small_churn" and req.tags[TRIGGER_TAG] == "schedule"
    assert data.skip_message is None

    # The cron really fires at 03:30 Berlin time on weekdays: 01:30 UTC in summer.
    from dagster._utils.schedules import cron_string_iterator

    it = cron_string_iterator(dt.datetime(2026, 6, 12, 12, tzinfo=ZoneInfo("UTC")).timestamp(),
                              sched.cron_schedule, sched.execution_timezone)
    nxt = next(it)
    assert nxt.astimezone(ZoneInfo("UTC")) == dt.datetime(2026, 6, 15, 1, 30, tzinfo=ZoneInfo("UTC"))  # Monday


def test_every_model_in_the_examples_has_a_described_schedule(tmp_path):
    from mlplatform_assets.lib.config import load_config

    defs = build_definitions(load_config({"MLPLATFORM_HOME": str(tmp_path)}))
    schedules = list(defs.get_repository_def().schedule_defs)
    assert schedules and all(s.name.endswith("__nightly_retrain") and s.description for s in schedules)
