"""Every name the Dagster layer shares: asset keys, job/sensor/schedule names, run tags.

One module so a rename happens in one place and the UI filters people learn (``mlplatform/model=churn``,
``mlplatform/trigger=drift``) stay stable. Dagster's own tag keys come from Dagster, never re-typed.
"""

from __future__ import annotations

import dagster as dg

# Dagster's own run tags (defined in dagster._core.storage.tags; Dagster writes them, we read them).
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
    RUN_KEY_TAG,
)

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG", "ASSET_PARTITION_RANGE_START_TAG", "PARTITION_NAME_TAG", "RUN_KEY_TAG",
]

# --- assets (each under the key prefix of its model: ["<model>", "<asset>"]) -----------------------------
RAW_DATA = "raw_data"
VALIDATED_DATA = "validated_data"
FEATURES = "features"
TRAINED_MODEL = "trained_model"
EVALUATION_REPORT = "evaluation_report"
DEPLOYED_ENDPOINT = "deployed_endpoint"
BATCH_PREDICTIONS = "batch_predictions"
DRIFT_REPORT = "drift_report"
MODEL_PERFORMANCE = "model_performance"
# Assets whose runs can race for the champion alias: training, evaluation against the champion, promotion.
TRAINING_ASSETS = (FEATURES, TRAINED_MODEL, EVALUATION_REPORT, DEPLOYED_ENDPOINT)


def asset_key(model: str, asset: str) -> dg.AssetKey:
    return dg.AssetKey([model, asset])


# --- jobs, sensors, schedules ----------------------------------------------------------------------------
def lifecycle_job(model: str) -> str:
    return f"{model}__lifecycle"


def ingest_job(model: str) -> str:
    return f"{model}__ingest"


def training_job(model: str) -> str:
    return f"{model}__training"


def monitoring_job(model: str) -> str:
    return f"{model}__monitoring"


def new_data_sensor(model: str) -> str:
    return f"{model}__new_data_sensor"


def monitoring_sensor(model: str) -> str:
    return f"{model}__monitoring_sensor"


def drift_sensor(model: str) -> str:
    return f"{model}__drift_sensor"


def quality_sensor(model: str) -> str:
    return f"{model}__quality_sensor"


def nightly_retrain_schedule(model: str) -> str:
    return f"{model}__nightly_retrain"


RUN_FAILURE_SENSOR = "mlplatform__run_failure_alert"

# --- run tags (filterable in the Runs list: "mlplatform/trigger=drift") ----------------------------------
MODEL_TAG = "mlplatform/model"
# Why a run started: one of TRIGGERS.
TRIGGER_TAG = "mlplatform/trigger"
TRIGGER_NEW_DATA = "new_data"
TRIGGER_VALIDATED_DATA = "validated_data"
TRIGGER_DRIFT = "drift"
TRIGGER_SCHEDULE = "schedule"
TRIGGER_CLI = "cli"
TRIGGERS = (TRIGGER_NEW_DATA, TRIGGER_VALIDATED_DATA, TRIGGER_DRIFT, TRIGGER_SCHEDULE, TRIGGER_CLI)
# The drifted day and its content hash, on a drift-triggered retrain.
DRIFT_PARTITION_TAG = "mlplatform/drift_partition"
DRIFT_SHA_TAG = "mlplatform/data_sha256"
# The content fingerprint of the day a new-data ingest run reads.
FINGERPRINT_TAG = "mlplatform/source_fingerprint"
# One training run per model at a time (run coordinator tag limit, infra/dagster.yaml) + the training lock.
TRAINING_TAG = "mlplatform/training"
LOCK_STATE_TAG = "mlplatform/training_lock"
# Which CLI process launched an in-process run (to tell a dead launcher from a live one).
CLI_HOST_TAG = "mlplatform/cli_host"
CLI_PID_TAG = "mlplatform/cli_pid"
CLI_PROCESS_START_TAG = "mlplatform/cli_process_start"
