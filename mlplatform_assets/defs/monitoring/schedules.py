"""Per-model schedules.

``<model>__nightly_retrain`` launches ``<model>__training`` on the spec's ``schedule.cron`` in
``schedule.timezone``. Its default status follows ``schedule.enabled``: RUNNING when the spec
enables it (it starts ticking as soon as the code location loads and a daemon runs), STOPPED
otherwise (visible in the UI, started by hand with the toggle or ``dagster schedule start``).
A status set in the UI or CLI overrides the default until it is reset.

There is no ingest schedule: ``<model>__new_data_sensor`` ingests days as their files land.
"""

from __future__ import annotations

import dagster as dg

from mlplatform_assets.defs import names
from mlplatform_assets.defs.names import MODEL_TAG, TRIGGER_TAG
from mlplatform_assets.lib.spec import ModelSpec


def build_nightly_retrain_schedule(spec: ModelSpec) -> dg.ScheduleDefinition:
    name = spec.name
    sched = spec.schedule
    status = dg.DefaultScheduleStatus.RUNNING if sched.enabled else dg.DefaultScheduleStatus.STOPPED

    @dg.schedule(
        name=names.nightly_retrain_schedule(name), cron_schedule=sched.cron, execution_timezone=sched.timezone,
        job_name=names.training_job(name), default_status=status,
        description=(
            f"Retrains {name} on the latest validated window at '{sched.cron}' ({sched.timezone}), then evaluates "
            f"the challenger against the champion and promotes it only if the gate passes. "
            + ("Enabled by the spec (schedule.enabled: true)." if sched.enabled else
               "Off by default (schedule.enabled: false in the spec); start it in the UI to use it.")),
    )
    def nightly_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time
        stamp = tick.isoformat() if tick is not None else "manual"
        # One run per tick: the run_key makes a re-evaluated tick (daemon restart) launch nothing twice.
        return dg.RunRequest(run_key=f"{name}:schedule:{stamp}",
                             tags={MODEL_TAG: name, TRIGGER_TAG: names.TRIGGER_SCHEDULE})

    return nightly_retrain


def build_monitoring_schedules(spec: ModelSpec) -> list[dg.ScheduleDefinition]:
    return [build_nightly_retrain_schedule(spec)]
