"""The one Definitions object that workspace.yaml loads.

Built lazily by ``@dg.definitions``: reading specs and the environment happens when
Dagster loads the code location, never at import time.
"""

from __future__ import annotations

import dagster as dg

from mlplatform_assets.defs.lifecycle.assets import (
    build_lifecycle_assets,
    lifecycle_jobs,
)
from mlplatform_assets.defs.monitoring.assets import (
    build_monitoring_assets,
    monitoring_job,
)
from mlplatform_assets.defs.monitoring.schedules import build_monitoring_schedules
from mlplatform_assets.defs.monitoring.sensors import (
    build_monitoring_sensors,
    build_run_failure_sensor,
)
from mlplatform_assets.defs.resources import build_resources
from mlplatform_assets.lib.config import PlatformConfig, load_config
from mlplatform_assets.lib.monitoring.alerts import load_alert_sinks
from mlplatform_assets.lib.spec import ModelSpec, load_specs


def build_definitions(config: PlatformConfig | None = None, specs: list[ModelSpec] | None = None) -> dg.Definitions:
    config = config or load_config()
    load_alert_sinks()  # a malformed alert sink variable fails the location load, naming the variable
    specs = specs if specs is not None else load_specs(config.models_dir, config.state_dir)
    assets: list = []
    jobs: list = []
    schedules: list = []
    sensors: list = [build_run_failure_sensor()]
    for spec in specs:
        assets.extend(build_lifecycle_assets(spec))
        assets.extend(build_monitoring_assets(spec))
        jobs.extend(lifecycle_jobs(spec))
        jobs.append(monitoring_job(spec))
        schedules.extend(build_monitoring_schedules(spec))
        sensors.extend(build_monitoring_sensors(spec))
    # In-process by default, also for ad-hoc "Materialize" from the UI: a process per step costs ~2 s here,
    # and the training lock must be held across train -> evaluate -> promote, not per step.
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors,
                          resources=build_resources(config), executor=dg.in_process_executor)


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
