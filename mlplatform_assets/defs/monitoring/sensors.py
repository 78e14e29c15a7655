"""Sensors that close the loop: new data -> ingest -> drift report -> retrain, and quality -> rollback.

Per model (``build_monitoring_sensors(spec)``):

``<model>__new_data_sensor``
    Lists the source (local directory or ``s3://`` through the ``data_store`` resource) and requests
    one ``<model>__ingest`` run per new or changed day. Cursor: ``{"days": {day: {"fp", "stat"}}}``,
    a content fingerprint per day (SHA-256 of the file, or the S3 ETag) plus the cheap stat
    (size:mtime / ETag) that decides whether the file must be re-hashed. run_key
    ``<model>:ingest:<day>:<fingerprint>``: a day is ingested once per distinct content.
``<model>__monitoring_sensor``
    Requests ``<model>__monitoring`` (drift report, batch predictions) for each newly materialized
    ``validated_data`` partition. Cursor: the last validated_data event storage id seen.
``<model>__drift_sensor``
    Reads new ``drift_report`` materializations; on dataset drift (and ``drift.retrain_on_drift``)
    requests ``<model>__training`` with ``as_of`` = the drifted day, run_key
    ``<model>:drift:<day>:<data_sha256>``, subject to ``drift.cooldown_hours`` and
    ``drift.max_retrains_per_day``. Cursor: the last drift_report event storage id seen.
``<model>__quality_sensor``
    Reads new ``model_performance`` materializations; below the floor it alerts and, with
    ``drift.auto_rollback``, rolls the champion back through the registry (audited).

Plus one ``mlplatform__run_failure_alert`` (``build_run_failure_sensor()``) for every job of the location.

Every sensor computes its whole result first and hands back the new cursor in the returned
``SensorResult``: a tick that raises leaves the cursor where it was, so nothing is skipped.
Side effects (alerts, rollbacks) happen only after everything else has been computed.

Configuration (lib/config.py, read when the definitions are built, never at import):
``MLPLATFORM_SENSOR_INTERVAL_S`` (default 30) minimum seconds between ticks;
``MLPLATFORM_SENSORS_DEFAULT`` = ``running`` makes the per-model sensors start RUNNING when the
code location loads (default ``stopped``: an operator turns them on in the UI or with
``dagster sensor start``). The run-failure alert sensor launches nothing and defaults to RUNNING
unless ``MLPLATFORM_SENSORS_DEFAULT=stopped`` is set explicitly.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mlplatform_assets.defs import names
from mlplatform_assets.defs.lifecycle.assets import daily_partitions
from mlplatform_assets.defs.names import (
    DRIFT_PARTITION_TAG,
    DRIFT_SHA_TAG,
    FINGERPRINT_TAG,
    MODEL_TAG,
    PARTITION_NAME_TAG,
    RUN_KEY_TAG,
    TRIGGER_TAG,
)
from mlplatform_assets.defs.resources import (
    DataStore,
    MlflowRegistryResource,
    PlatformResource,
)
from mlplatform_assets.lib import config
from mlplatform_assets.lib.data import datasource
from mlplatform_assets.lib.model.registry import RegistryError
from mlplatform_assets.lib.monitoring.alerts import Alert, send_alert
from mlplatform_assets.lib.monitoring.retrain_policy import PastRetrain, retrain_verdict, retrains_to_look_back
from mlplatform_assets.lib.spec import ModelSpec

MONITORING_MAX_PER_TICK = 10
EVENTS_PER_TICK = 100


# --- configuration (lib/config.py) -------------------------------------------------------

def sensor_interval_s() -> int:
    return config.read(config.ENV_SENSOR_INTERVAL)


def sensors_default_status(default: str = "stopped") -> dg.DefaultSensorStatus:
    explicit = config.environment().get(config.ENV_SENSORS_DEFAULT, "").strip()
    value = config.read(config.ENV_SENSORS_DEFAULT) if explicit else default
    return dg.DefaultSensorStatus.RUNNING if value == "running" else dg.DefaultSensorStatus.STOPPED


def _new_data_max_per_tick() -> int:
    return config.read(config.ENV_NEW_DATA_MAX)


# --- small helpers ---------------------------------------------------------------------

def _load_cursor(cursor: str | None, sensor_name: str) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        data = json.loads(cursor)
    except json.JSONDecodeError:
        raise ValueError(f"{sensor_name}: cursor is not JSON ({cursor[:60]!r}); reset it in the UI "
                         f"(Sensors -> {sensor_name} -> Set cursor)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{sensor_name}: cursor must be a JSON object, got {type(data).__name__}")
    return data


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _meta(record: dg.EventLogRecord) -> dict[str, Any]:
    mat = record.asset_materialization
    if mat is None:
        return {}
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def _as_bool(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def _as_float(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _new_records(instance: dg.DagsterInstance, key: dg.AssetKey, after: int | None,
                 limit: int = EVENTS_PER_TICK) -> list[dg.EventLogRecord]:
    """Materializations of ``key`` with storage id > ``after``, oldest first."""
    result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, after_storage_id=after),
                                             limit=limit, ascending=True)
    return list(result.records)


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int:
    recs = instance.fetch_materializations(key, limit=1, ascending=False).records
    return recs[0].storage_id if recs else 0


def _runs_with_run_key(instance: dg.DagsterInstance, run_key: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1))


@dataclass
class NewMaterializations:
    """What a materialization-watching sensor sees on a tick: the new events of one asset since its cursor."""

    key: dg.AssetKey
    after: int
    records: list[dg.EventLogRecord]
    unchanged_cursor: str | None

    @property
    def cursor(self) -> str:
        """The cursor to hand back once every record was handled."""
        return _dump({"after_storage_id": self.records[-1].storage_id}) if self.records else self.unchanged_cursor

    def nothing_new(self) -> dg.SensorResult:
        return dg.SensorResult(skip_reason=f"no new {'/'.join(self.key.path)} materializations since event "
                                           f"{self.after}", cursor=self.unchanged_cursor)


def new_materializations(context: dg.SensorEvaluationContext, sensor_name: str,
                         key: dg.AssetKey) -> NewMaterializations:
    """The preamble of the drift and quality sensors: cursor -> the materializations of ``key`` after it."""
    state = _load_cursor(context.cursor, sensor_name)
    after = int(state.get("after_storage_id") or 0)
    return NewMaterializations(key, after, _new_records(context.instance, key, after or None), context.cursor)


# --- sensors -----------------------------------------------------------------------------

def build_new_data_sensor(spec: ModelSpec) -> dg.SensorDefinition:
    name = spec.name
    sensor_name = names.new_data_sensor(name)
    partitions = daily_partitions(spec)
    raw_key = names.asset_key(name, names.RAW_DATA)

    @dg.sensor(
        name=sensor_name, job_name=names.ingest_job(name), minimum_interval_seconds=sensor_interval_s(),
        default_status=sensors_default_status(),
        description=(
            f"Watches {datasource.source_label(spec)} for new or changed days of {name} data and launches one "
            f"{name}__ingest run per day and distinct content (run_key {name}:ingest:<day>:<fingerprint>), "
            f"oldest first, at most {_new_data_max_per_tick()} per tick. On its first tick, days whose raw_data "
            f"partition is already materialized are adopted without a run."),
    )
    def new_data_sensor(context: dg.SensorEvaluationContext, data_store: DataStore) -> dg.SensorResult:
        state = _load_cursor(context.cursor, sensor_name)
        first_tick = "days" not in state
        known: dict[str, dict[str, str]] = state.get("days", {})
        s3_client = data_store.source_s3_client() if (spec.source.uri or "").startswith("s3://") else None
        current = datasource.source_for(spec, s3_client).fingerprints(known)
        last_key = partitions.get_last_partition_key()
        adopted: list[str] = []
        if first_tick:
            materialized = context.instance.get_materialized_partitions(raw_key)
            for day in sorted(current):
                if day in materialized:
                    known[day] = current[day]
                    adopted.append(day)
        pending = [d for d in sorted(current) if known.get(d, {}).get("fp") != current[d]["fp"]]
        # Days without a partition yet (today, the future) wait until their partition exists.
        not_yet = [d for d in pending if last_key is None or d > last_key]
        pending = [d for d in pending if d not in not_yet]
        # Unchanged content with a new stat (touched file): remember the stat, no run.
        for day, entry in current.items():
            if day in known and known[day].get("fp") == entry["fp"]:
                known[day] = entry
        batch = pending[:_new_data_max_per_tick()]
        requests = []
        for day in batch:
            fp = current[day]["fp"]
            requests.append(dg.RunRequest(
                run_key=f"{name}:ingest:{day}:{fp}", partition_key=day,
                tags={MODEL_TAG: name, TRIGGER_TAG: names.TRIGGER_NEW_DATA, FINGERPRINT_TAG: fp}))
            known[day] = current[day]
        new_cursor = _dump({"days": known})
        if requests:
            more = len(pending) - len(batch)
            context.log.info(f"{name}: requesting ingest of {', '.join(batch)}"
                             + (f"; {more} more day(s) next tick" if more else ""))
            return dg.SensorResult(run_requests=requests, cursor=new_cursor)
        why = f"no new or changed files in {datasource.source_label(spec)} ({len(current)} day(s) known"
        why += f", latest {max(current)})" if current else ")"
        if adopted:
            why += f"; adopted {len(adopted)} already-ingested day(s) on the first tick"
        if not_yet:
            why += f"; {len(not_yet)} day(s) wait for their partition to exist: {', '.join(not_yet[:3])}"
        return dg.SensorResult(skip_reason=why, cursor=new_cursor)

    return new_data_sensor


def build_monitoring_sensor(spec: ModelSpec) -> dg.SensorDefinition:
    name = spec.name
    sensor_name = names.monitoring_sensor(name)
    validated_key = names.asset_key(name, names.VALIDATED_DATA)

    @dg.sensor(
        name=sensor_name, job_name=names.monitoring_job(name), minimum_interval_seconds=sensor_interval_s(),
        default_status=sensors_default_status(),
        description=(
            f"Launches {name}__monitoring (drift report, batch predictions) for every newly materialized "
            f"{name}/validated_data partition (run_key {name}:monitoring:<day>:<event id>). Starts watching "
            f"at its first tick; materialize drift_report from the UI for older days."),
    )
    def monitoring_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        state = _load_cursor(context.cursor, sensor_name)
        if "after_storage_id" not in state:
            start = _latest_storage_id(context.instance, validated_key)
            return dg.SensorResult(skip_reason=f"first tick: watching {'/'.join(validated_key.path)} "
                                               f"materializations after event {start}",
                                   cursor=_dump({"after_storage_id": start}))
        after = int(state["after_storage_id"])
        records = _new_records(context.instance, validated_key, after)
        latest: dict[str, dg.EventLogRecord] = {}
        last_id = after
        for rec in records:
            if rec.partition_key and rec.partition_key not in latest and len(latest) >= MONITORING_MAX_PER_TICK:
                break  # the rest on the next tick
            last_id = rec.storage_id
            if rec.partition_key:
                latest[rec.partition_key] = rec  # several in one tick: the newest one wins
        requests = [dg.RunRequest(run_key=f"{name}:monitoring:{day}:{rec.storage_id}", partition_key=day,
                                  tags={MODEL_TAG: name, TRIGGER_TAG: names.TRIGGER_VALIDATED_DATA})
                    for day, rec in sorted(latest.items())]
        cursor = _dump({"after_storage_id": last_id})
        if requests:
            return dg.SensorResult(run_requests=requests, cursor=cursor)
        return dg.SensorResult(skip_reason=f"no new {'/'.join(validated_key.path)} partitions since event {after}",
                               cursor=cursor)

    return monitoring_sensor


@dataclass
class DriftEvent:
    storage_id: int
    partition: str
    dataset_drift: bool
    drift_share: float | None
    n_drifted_columns: int | None
    data_sha256: str
    run_id: str

    @classmethod
    def from_record(cls, rec: dg.EventLogRecord) -> "DriftEvent":
        m = _meta(rec)
        n = m.get("n_drifted_columns")
        sha = str(m.get("data_sha256") or f"event{rec.storage_id}")
        return cls(rec.storage_id, rec.partition_key or "unpartitioned", _as_bool(m.get("dataset_drift")),
                   _as_float(m.get("drift_share")), int(n) if isinstance(n, (int, float)) else None, sha,
                   rec.run_id)


def retrain_block_reason(instance: dg.DagsterInstance, spec: ModelSpec, now: float | None = None
                         ) -> tuple[str | None, dict[str, Any]]:
    """Why a drift-triggered retrain must not start now (cool-down, daily cap), or None: the policy of
    lib/monitoring/retrain_policy.py over this model's drift-triggered runs, whatever their status."""
    now = now if now is not None else dt.datetime.now(dt.timezone.utc).timestamp()
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={TRIGGER_TAG: names.TRIGGER_DRIFT, MODEL_TAG: spec.name}),
        limit=retrains_to_look_back(spec.drift.max_retrains_per_day), order_by="create_timestamp", ascending=False)
    past = [PastRetrain(r.create_timestamp.timestamp(), r.dagster_run.run_id) for r in records]
    verdict = retrain_verdict(past, now, cooldown_hours=spec.drift.cooldown_hours,
                              max_retrains_per_day=spec.drift.max_retrains_per_day)
    return verdict.blocked_by, verdict.details


def training_run_config(spec: ModelSpec, as_of: str) -> dict[str, Any]:
    return {"ops": {f"{spec.name}__features": {"config": {"as_of": as_of}}}}


def build_drift_sensor(spec: ModelSpec) -> dg.SensorDefinition:
    name = spec.name
    sensor_name = names.drift_sensor(name)
    drift_key = names.asset_key(name, names.DRIFT_REPORT)
    threshold = spec.drift.drift_share

    @dg.sensor(
        name=sensor_name, job_name=names.training_job(name), minimum_interval_seconds=sensor_interval_s(),
        default_status=sensors_default_status(),
        description=(
            f"Reads new {name}/drift_report materializations. On dataset drift (share of drifted columns >= "
            f"{threshold:g}) it writes a drift alert and, "
            + ("launches " if spec.drift.retrain_on_drift else "were retrain_on_drift true, would launch ")
            + f"{name}__training with as_of = the drifted day (run_key {name}:drift:<day>:<data sha256>: one run "
            f"per drift event), at most one per {spec.drift.cooldown_hours:g} h cool-down and "
            f"{spec.drift.max_retrains_per_day} per 24 h; a blocked retrain raises a retrain_storm_blocked alert."),
    )
    def drift_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource) -> dg.SensorResult:
        batch = new_materializations(context, sensor_name, drift_key)
        if not batch.records:
            return batch.nothing_new()
        events = [DriftEvent.from_record(r) for r in batch.records]
        new_cursor = batch.cursor
        drifted = [e for e in events if e.dataset_drift]
        alerts: list[Alert] = [
            Alert(kind="drift", model=name, asset="/".join(drift_key.path), partition=e.partition,
                  message=(f"{name}: dataset drift on {e.partition}: drift share "
                           f"{_fmt(e.drift_share)} >= threshold {threshold:g}"
                           + (f" ({e.n_drifted_columns} drifted column(s))" if e.n_drifted_columns is not None else "")),
                  details={"drift_share": e.drift_share, "threshold": threshold, "data_sha256": e.data_sha256,
                           "n_drifted_columns": e.n_drifted_columns, "dagster_run_id": e.run_id})
            for e in drifted]
        requests: list[dg.RunRequest] = []
        if not drifted:
            shown = "; ".join(f"{e.partition}: drift share {_fmt(e.drift_share)} < threshold {threshold:g}"
                              for e in events[-5:])
            skip = f"no dataset drift in {len(events)} new drift report(s) ({shown})"
        elif not spec.drift.retrain_on_drift:
            skip = (f"dataset drift on {', '.join(e.partition for e in drifted)}, but drift.retrain_on_drift "
                    f"is false: alerted, no retraining")
        else:
            # Several drift events in one tick (e.g. a backfill): retrain once, on the latest drifted day.
            event = max(drifted, key=lambda e: (e.partition, e.storage_id))
            run_key = f"{name}:drift:{event.partition}:{event.data_sha256}"
            existing = _runs_with_run_key(context.instance, run_key)
            if existing:
                skip = f"drift on {event.partition} already launched run {existing[0].run_id} ({run_key})"
            else:
                blocked, details = retrain_block_reason(context.instance, spec)
                if blocked:
                    skip = f"dataset drift on {event.partition}, retrain blocked by {blocked}"
                    alerts.append(Alert(kind="retrain_storm_blocked", model=name, asset="/".join(drift_key.path),
                                        partition=event.partition, message=f"{name}: {skip}",
                                        details={**details, "run_key": run_key}))
                else:
                    skip = None
                    requests.append(dg.RunRequest(
                        run_key=run_key, run_config=training_run_config(spec, event.partition),
                        tags={MODEL_TAG: name, TRIGGER_TAG: names.TRIGGER_DRIFT, DRIFT_PARTITION_TAG: event.partition,
                              DRIFT_SHA_TAG: event.data_sha256}))
        # Everything is computed; now the side effects, then the cursor moves with the result.
        for alert in alerts:
            send_alert(alert, platform.alerts_log_path)
        if requests:
            context.log.info(f"{name}: drift on {requests[0].tags[DRIFT_PARTITION_TAG]}: retraining "
                             f"({requests[0].run_key})")
            return dg.SensorResult(run_requests=requests, cursor=new_cursor)
        return dg.SensorResult(skip_reason=skip, cursor=new_cursor)

    return drift_sensor


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def build_quality_sensor(spec: ModelSpec) -> dg.SensorDefinition:
    name = spec.name
    sensor_name = names.quality_sensor(name)
    perf_key = names.asset_key(name, names.MODEL_PERFORMANCE)
    metric = spec.metrics.primary
    actor = f"sensor:{sensor_name}"

    @dg.sensor(
        name=sensor_name, minimum_interval_seconds=sensor_interval_s(), default_status=sensors_default_status(),
        description=(
            f"Reads new {name}/model_performance materializations (realized {metric} on delayed labels). Below "
            f"drift.quality_floor ({spec.drift.quality_floor}) it writes a quality_floor alert"
            + (" and rolls the champion back to the previous one (audited, rollback alert), once per "
               "(day, served version)." if spec.drift.auto_rollback else "; auto_rollback is off.")),
    )
    def quality_sensor(context: dg.SensorEvaluationContext, platform: PlatformResource,
                       mlflow: MlflowRegistryResource) -> dg.SensorResult:
        batch = new_materializations(context, sensor_name, perf_key)
        if not batch.records:
            return batch.nothing_new()
        records = batch.records
        below = [(rec, m) for rec, m in ((rec, _meta(rec)) for rec in records) if _as_bool(m.get("below_floor"))]
        new_cursor = batch.cursor
        if not below:
            return dg.SensorResult(skip_reason=f"{len(records)} new performance record(s), none below the floor "
                                               f"{spec.drift.quality_floor}", cursor=new_cursor)
        registry = mlflow.registry() if spec.drift.auto_rollback else None
        outcomes: list[str] = []
        alerts: list[Alert] = []
        for rec, m in below:
            day = rec.partition_key or "unpartitioned"
            served = str(m.get("served_version") or "")
            value = _as_float(m.get(f"realized_{metric}"))
            key = f"{day}:v{served}"
            msg = (f"{name}: realized {metric} {_fmt(value)} on {day} is below the floor "
                   f"{spec.drift.quality_floor} (served v{served or '?'})")
            details: dict[str, Any] = {f"realized_{metric}": value, "quality_floor": spec.drift.quality_floor,
                                       "served_version": served, "dagster_run_id": rec.run_id}
            if registry is not None:
                details["rollback"] = _rollback_once(registry, name, served, key, actor, msg)
            alerts.append(Alert(kind="quality_floor", model=name, asset="/".join(perf_key.path), partition=day,
                                message=msg, details=details))
            rb = details.get("rollback") or {}
            if rb.get("status") == "rolled_back":
                alerts.append(Alert(kind="rollback", model=name, asset="/".join(perf_key.path), partition=day,
                                    message=f"{name}: champion rolled back v{rb['from_version']} -> "
                                            f"v{rb['to_version']} ({metric} below floor on {day})", details=rb))
            outcomes.append(f"{day} (v{served}): {rb.get('status', 'alerted')}")
        # Rollbacks are idempotent (audit marker); alerts go out once every record was handled.
        for alert in alerts:
            send_alert(alert, platform.alerts_log_path)
        return dg.SensorResult(skip_reason="below the quality floor: " + "; ".join(outcomes), cursor=new_cursor)

    return quality_sensor


def _rollback_once(registry: Any, model: str, served: str, key: str, actor: str, msg: str) -> dict[str, Any]:
    """Roll back the champion if it is still the version that underperformed; once per (day, version)."""
    marker = f"[quality:{key}]"
    try:
        for rec in registry.audit_records(model):
            if rec.get("actor") == actor and marker in str(rec.get("reason", "")):
                return {"status": "already_rolled_back", "to_version": rec.get("to_version")}
        champion = registry.champion(model)
        if champion is None:
            return {"status": "skipped", "why": "no champion"}
        if served and str(champion.version) != served:
            return {"status": "skipped", "why": f"champion is v{champion.version}, not the served v{served} anymore"}
        rec = registry.rollback(model, actor=actor, reason=f"{msg} {marker}")
        return {"status": "rolled_back", "from_version": rec.from_version, "to_version": rec.to_version}
    except RegistryError as exc:
        return {"status": "failed", "why": str(exc)}


def build_monitoring_sensors(spec: ModelSpec) -> list[dg.SensorDefinition]:
    """The per-model sensors."""
    return [build_new_data_sensor(spec), build_monitoring_sensor(spec), build_drift_sensor(spec),
            build_quality_sensor(spec)]


def build_run_failure_sensor() -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name=names.RUN_FAILURE_SENSOR, minimum_interval_seconds=sensor_interval_s(),
        default_status=sensors_default_status(default="running"),
        description="Writes a run_failure alert (model, failed steps/assets, error) for every failed run of any "
                    "job in this code location, delivered to every configured alert sink (docs/monitoring.md).",
    )
    def run_failure_alert(context: dg.RunFailureSensorContext, platform: PlatformResource) -> None:
        run = context.dagster_run
        steps = context.get_step_failure_events()
        failed = [e.step_key for e in steps if e.step_key]
        errors = {e.step_key or "run": (e.event_specific_data.error.message.strip()
                                        if getattr(e.event_specific_data, "error", None) else "failed")
                  for e in steps}
        if not errors:
            err = getattr(context.failure_event.event_specific_data, "error", None)
            errors = {"run": err.message.strip() if err else (context.failure_event.message or "run failed")}
        assets = _assets_of_steps(context.instance, run.run_id, failed)
        first_error = next(iter(errors.values()))
        message = (f"{run.tags.get(MODEL_TAG) or '-'}: run {run.run_id[:8]} of {run.job_name} failed"
                   + (f" in {', '.join(assets or failed)}" if failed else "") + f": {first_error[:500]}")
        send_alert(Alert(kind="run_failure", model=run.tags.get(MODEL_TAG), asset=", ".join(assets) or None,
                         partition=run.tags.get(PARTITION_NAME_TAG), message=message,
                         details={"run_id": run.run_id, "job": run.job_name, "failed_steps": failed,
                                  "errors": {k: v[:2000] for k, v in errors.items()},
                                  "trigger": run.tags.get(TRIGGER_TAG)}),
                   platform.alerts_log_path)

    return run_failure_alert


def _assets_of_steps(instance: dg.DagsterInstance, run_id: str, step_keys: list[str]) -> list[str]:
    """Asset keys the failed steps were planned to materialize."""
    if not step_keys:
        return []
    planned = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED).records
    assets = []
    for rec in planned:
        event = rec.event_log_entry.dagster_event
        if event is not None and event.step_key in step_keys and event.asset_key is not None:
            assets.append("/".join(event.asset_key.path))
    return sorted(set(assets))
