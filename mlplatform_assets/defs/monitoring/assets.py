"""Per-model monitoring assets, daily partitioned like the raw data: drift_report, batch_predictions,
model_performance (realized quality once labels arrive)."""

import datetime as dt
import itertools
import json
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd

from mlplatform_assets.defs.lifecycle.assets import daily_partitions
from mlplatform_assets.defs.names import MODEL_TAG
from mlplatform_assets.defs.resources import (
    DataStore,
    MlflowRegistryResource,
    PlatformResource,
)
from mlplatform_assets.lib.data.hashing import frame_sha256
from mlplatform_assets.lib.data.validation import infer_feature_columns
from mlplatform_assets.lib.model.lifecycle import quarantine_record, validated_key
from mlplatform_assets.lib.monitoring import batch as monitoring
from mlplatform_assets.lib.monitoring import drift
from mlplatform_assets.lib.spec import ModelSpec

# model_performance metadata: the alerts sent for the day so far, as "kind:vVERSION" (see _alerts_sent_before)
ALERTS_SENT = "alerts_sent"


def _endpoint_scores(spec: ModelSpec, platform: PlatformResource, day: dt.date) -> pd.Series | None:
    """The live endpoint's predictions for that day, from its prediction log (if it served any)."""
    try:
        from mlplatform_assets.lib.serving import read_prediction_log
    except ImportError:
        return None
    try:
        log = read_prediction_log(platform.prediction_log_uri, spec.name, date=day)
    except FileNotFoundError:
        return None
    if log is None or log.empty:
        return None
    col = next((c for c in ("probability", "prediction_probability", "prediction") if c in log.columns), None)
    if col is None:
        return None
    return log[col] if spec.task != "classification" or col != "prediction" else log[col].astype(str)


def _column_table(result: drift.DriftResult) -> str:
    rows = ["| column | kind | test | statistic | threshold | drifted |", "|---|---|---|---|---|---|"]
    for c in result.columns.values():
        stat = "n/a" if c.statistic is None else f"{c.statistic:.4g}"
        rows.append(f"| {c.column} | {c.kind} | {c.stattest} | {stat} | {c.threshold:g} | "
                    f"{'**yes**' if c.drifted else 'no'} |")
    return "\n".join(rows)


NO_DRIFT_CHECK = "no_dataset_drift"


def no_drift_check_result(result: drift.DriftResult, prediction: drift.ColumnDrift | None) -> dg.AssetCheckResult:
    """WARN when the day drifted, naming the drifted columns (and prediction drift when there was some)."""
    drifted = sorted(c.column for c in result.columns.values() if c.drifted)
    summary = (f"drift share {result.drift_share:.2f} ({result.n_drifted}/{result.n_columns} columns), "
               f"threshold {result.drift_share_threshold:g}")
    if drifted:
        summary += f"; drifted: {', '.join(drifted)}"
    if prediction is not None and prediction.drifted:
        summary += f"; predictions drifted ({prediction.stattest})"
    return dg.AssetCheckResult(
        check_name=NO_DRIFT_CHECK, passed=not result.dataset_drift, severity=dg.AssetCheckSeverity.WARN,
        description=("dataset drift: " if result.dataset_drift else "no dataset drift: ") + summary,
        metadata={"drift_share": dg.MetadataValue.float(float(result.drift_share)),
                  "drifted_columns": dg.MetadataValue.json(drifted)})


def _agreement_and_staleness(context: dg.AssetExecutionContext, spec: ModelSpec, registry, platform: PlatformResource,
                             day: dt.date, quality: dict) -> dict[str, dg.MetadataValue]:
    """Offline (holdout) vs online (realized) metric per served version, the champion's age against its
    backtest's cadence, and their alerts (offline_online_divergence, champion_stale)."""
    from mlplatform_assets.lib.monitoring.alerts import send_alert

    metric = spec.metrics.primary
    holdout = {v: monitoring.holdout_metric(registry, spec.name, v, metric) for v in quality.get("metrics_by_version", {})}
    agreement = monitoring.offline_online(spec, quality, holdout)
    staleness = monitoring.champion_staleness(registry, spec.name, day)
    metadata: dict[str, dg.MetadataValue] = {}
    served = agreement.get(quality.get("served_version", ""))
    if served is not None:
        metadata.update({f"holdout_{metric}": dg.MetadataValue.float(served["holdout"]),
                         "offline_online_gap": dg.MetadataValue.float(served["gap"]),
                         "offline_online_diverged": dg.MetadataValue.bool(served["diverged"]),
                         "offline_online_by_version": dg.MetadataValue.json(agreement)})
    if staleness is not None:
        metadata["champion_stale"] = dg.MetadataValue.bool(staleness["stale"])
        if staleness["age_days"] is not None:
            metadata["champion_age_days"] = dg.MetadataValue.int(staleness["age_days"])
        if staleness["cadence_days"] is not None:
            metadata["staleness_cadence_days"] = dg.MetadataValue.int(staleness["cadence_days"])
    # An alert goes out once per day, kind and version: re-running a day (a retry, a backfill) repeats the
    # metadata but not the page. What earlier runs of this day sent is in their materialization.
    already_sent = _alerts_sent_before(context, day)
    sent = set(already_sent)
    for alert in monitoring.agreement_alerts(spec, day, agreement, staleness):
        key = f"{alert.kind}:v{alert.details.get('version')}"
        sent.add(key)
        if key in already_sent:
            context.log.info(f"{alert.kind} for {day} already sent by an earlier run of this day: {alert.message}")
            continue
        context.log.warning(alert.message)
        send_alert(alert, platform.alerts_log_path)
    if sent:
        metadata[ALERTS_SENT] = dg.MetadataValue.json(sorted(sent))
    return metadata


def _alerts_sent_before(context: dg.AssetExecutionContext, day: dt.date) -> set[str]:
    """The ``alerts_sent`` keys of this asset's newest earlier materialization of ``day`` (empty if none)."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[str(day)]), limit=1).records
    if not records:
        return set()
    materialization = records[0].event_log_entry.asset_materialization
    entry = materialization.metadata.get(ALERTS_SENT) if materialization is not None else None
    return set(entry.value) if entry is not None else set()


def build_monitoring_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    name = spec.name
    partitions = daily_partitions(spec)
    tags = {MODEL_TAG: name}
    validated = dg.AssetKey([name, "validated_data"])

    def skip_if_quarantined(store, day: dt.date, checks: tuple[str, ...] = ()) -> dg.MaterializeResult | None:
        """A quarantined day (validation.on_failure: quarantine) is not scored or monitored: say so instead.
        The asset's ``checks`` get a result saying they did not run (Dagster has no "skipped" check state)."""
        record = quarantine_record(spec, store, day)
        if record is None:
            return None
        note = (f"{day} is quarantined (failed: {', '.join(record['failed_checks'])}); not scored or monitored "
                "until it passes validation again")
        return dg.MaterializeResult(
            metadata={"quarantined": dg.MetadataValue.bool(True), "skipped": dg.MetadataValue.text(note)},
            check_results=[dg.AssetCheckResult(check_name=c, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                               description=f"not checked: {note}") for c in checks])

    def load_day(store, day: dt.date) -> tuple[pd.DataFrame, list[str]]:
        key = validated_key(name, day)
        if not store.exists(key):
            raise dg.Failure(f"{name}: no validated data for {day}: materialize raw_data for that day first")
        frame = store.read_frame(key)
        numeric, categorical = infer_feature_columns(spec, frame)
        return frame, [*numeric, *categorical]

    @dg.asset(
        key=[name, "batch_predictions"], group_name=name, partitions_def=partitions, deps=[validated],
        kinds={"parquet", "mlflow"}, tags=tags,
        description="The champion's predictions for every validated row of the day, scored in chunks; each row "
                    "records the model version that made it.",
    )
    def batch_predictions(context: dg.AssetExecutionContext, data_store: DataStore,
                          mlflow: MlflowRegistryResource) -> dg.MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        store = data_store.store()
        if (skipped := skip_if_quarantined(store, day)) is not None:
            return skipped
        key = validated_key(name, day)
        if not store.exists(key):
            raise dg.Failure(f"{name}: no validated data for {day}: materialize raw_data for that day first")
        registry = mlflow.registry()
        champ = registry.champion(name)
        if champ is None:
            raise dg.Failure(f"{name}: no champion to score with yet")
        pipeline = registry.load_pipeline(name, str(champ.version))
        # Read, score and write chunk by chunk: memory stays flat however large the day is.
        batches = store.iter_frames(key, batch_rows=50_000)
        first = next(batches, None)
        if first is None:
            raise dg.Failure(f"{name}: validated data for {day} has no rows to score")
        numeric, categorical = infer_feature_columns(spec, first)
        out = monitoring.write_batch_predictions(spec, store, day, monitoring.score_day(
            spec, pipeline, str(champ.version), itertools.chain([first], batches), [*numeric, *categorical]))
        return dg.MaterializeResult(metadata={
            "dagster/row_count": dg.MetadataValue.int(out["rows"]),
            "model_version": dg.MetadataValue.text(",".join(out["model_versions"])),
            "mean_score": dg.MetadataValue.float(out["mean_score"]),
            "uri": dg.MetadataValue.text(out["uri"]),
        })

    drift_key = dg.AssetKey([name, "drift_report"])

    @dg.asset(
        key=drift_key, group_name=name, partitions_def=partitions,
        deps=[validated, dg.AssetKey([name, "batch_predictions"])], kinds={"evidently"}, tags=tags,
        # WARN, not blocking: a drifted day is a signal for people (and the drift sensor), not a broken asset.
        # Partitioned like the asset: each day has its own check status.
        check_specs=[dg.AssetCheckSpec(NO_DRIFT_CHECK, asset=drift_key, blocking=False, partitions_def=partitions,
                                       description="The day's features did not drift from the champion's training "
                                                   "reference (dataset drift: drifted share of columns at or above "
                                                   "the spec's drift_share).")],
        description="That day's features vs the champion's training reference (Evidently's default tests and "
                    "thresholds, fast engine) plus prediction drift; an Evidently HTML report for people.",
    )
    def drift_report(context: dg.AssetExecutionContext, data_store: DataStore, mlflow: MlflowRegistryResource,
                     platform: PlatformResource) -> dg.MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        store = data_store.store()
        if (skipped := skip_if_quarantined(store, day, (NO_DRIFT_CHECK,))) is not None:
            return skipped
        frame, features = load_day(store, day)
        registry = mlflow.registry()
        try:
            ref = monitoring.load_champion_reference(registry, name, Path(platform.state_dir) / "cache")
        except LookupError as exc:
            raise dg.Failure(str(exc)) from None
        scores = []
        pkey = monitoring.predictions_key(name, day)
        if store.exists(pkey):
            preds = store.read_frame(pkey)
            scores.append(monitoring.prediction_score(spec, preds)[0])
        endpoint = _endpoint_scores(spec, platform, day)
        if endpoint is not None:
            scores.append(endpoint)
        pred_scores = pd.concat(scores, ignore_index=True) if scores else None
        result, pred = monitoring.day_drift(spec, ref, frame, pred_scores)
        # Report and verdicts live in the data store (S3 on a cluster), beside each other; the HTML is
        # rendered into scratch space first because Evidently writes to a file.
        with tempfile.TemporaryDirectory(prefix="mlplatform-report-") as tmp:
            html = Path(drift.evidently_report_html(ref.sample, frame, ref.features.numerical_columns,
                                                    ref.features.categorical_columns, Path(tmp) / "report.html"))
            report_uri = store.write_bytes(f"{name}/drift/date={day}/report.html", html.read_bytes())
        payload = {"day": str(day), "champion_version": ref.version, "features": result.to_dict(),
                   "predictions": pred.to_dict() if pred else None}
        store.write_bytes(f"{name}/drift/date={day}/result.json", json.dumps(payload).encode())
        pcol = pred.prediction_drift if pred else None
        metadata = {
            "dataset_drift": dg.MetadataValue.bool(result.dataset_drift),
            "drift_share": dg.MetadataValue.float(float(result.drift_share)),
            "drift_share_threshold": dg.MetadataValue.float(float(result.drift_share_threshold)),
            "n_drifted_columns": dg.MetadataValue.int(result.n_drifted),
            "n_columns": dg.MetadataValue.int(result.n_columns),
            "data_sha256": dg.MetadataValue.text(frame_sha256(frame)),
            "champion_version": dg.MetadataValue.text(ref.version),
            "rows": dg.MetadataValue.int(len(frame)),
            "columns": dg.MetadataValue.md(_column_table(result)),
            "report_uri": dg.MetadataValue.path(report_uri),
        }
        if pcol is not None and pcol.statistic is not None:
            metadata["prediction_drift_score"] = dg.MetadataValue.float(float(pcol.statistic))
            metadata["prediction_drift"] = dg.MetadataValue.bool(bool(pcol.drifted))
            metadata["prediction_drift_test"] = dg.MetadataValue.text(pcol.stattest)
        context.log.info(f"{name} {day}: drift share {result.drift_share:.2f} "
                         f"({result.n_drifted}/{result.n_columns}), dataset drift={result.dataset_drift}")
        return dg.MaterializeResult(metadata=metadata, check_results=[no_drift_check_result(result, pcol)])

    @dg.asset(
        key=[name, "model_performance"], group_name=name, partitions_def=partitions,
        deps=[validated, dg.AssetKey([name, "batch_predictions"])], kinds={"pandas"}, tags=tags,
        description="Realized quality once a day's labels arrive: the served version's predictions joined to the "
                    "late labels; flags days below the spec's quality floor.",
    )
    def model_performance(context: dg.AssetExecutionContext, data_store: DataStore, mlflow: MlflowRegistryResource,
                          platform: PlatformResource) -> dg.MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        store = data_store.store()
        if (skipped := skip_if_quarantined(store, day)) is not None:
            return skipped
        frame, features = load_day(store, day)
        pkey = monitoring.predictions_key(name, day)
        if not store.exists(pkey):
            raise dg.Failure(f"{name}: no batch predictions for {day}: materialize batch_predictions first")
        q = monitoring.realized_quality(spec, frame, store.read_frame(pkey), features)
        metadata = {"labels_available": dg.MetadataValue.bool(q["labels_available"]),
                    "labeled_rows": dg.MetadataValue.int(q["labeled_rows"])}
        if "realized" in q:
            metadata.update({
                f"realized_{spec.metrics.primary}": dg.MetadataValue.float(float(q["realized"])),
                "served_version": dg.MetadataValue.text(q["served_version"]),
                "matched_rows": dg.MetadataValue.int(q["matched_rows"]),
                "below_floor": dg.MetadataValue.bool(bool(q["below_floor"])),
                "metrics_by_version": dg.MetadataValue.json(q["metrics_by_version"]),
            })
            if q["quality_floor"] is not None:
                metadata["quality_floor"] = dg.MetadataValue.float(float(q["quality_floor"]))
        metadata.update(_agreement_and_staleness(context, spec, mlflow.registry(), platform, day, q))
        return dg.MaterializeResult(metadata=metadata)

    return [batch_predictions, drift_report, model_performance]


def monitoring_job(spec: ModelSpec):
    name = spec.name
    keys = [dg.AssetKey([name, k]) for k in ("batch_predictions", "drift_report", "model_performance")]
    return dg.define_asset_job(f"{name}__monitoring", selection=dg.AssetSelection.assets(*keys),
                               partitions_def=daily_partitions(spec), executor_def=dg.in_process_executor,
                               description=f"{name}: score a day, check its drift and realized quality.",
                               tags={MODEL_TAG: name})
