"""One spec in, one group of lifecycle assets out: raw_data -> validated_data -> features ->
trained_model -> evaluation_report -> deployed_endpoint, key-prefixed by the model's name."""


import datetime as dt
import tempfile
from pathlib import Path
from typing import Any, Optional

import dagster as dg

from mlplatform_assets.defs.coordination import (
    MODEL_TAG,
    TRAINING_ASSETS,
    TrainingLockResource,
    run_is_live,
    training_tags,
)
from mlplatform_assets.defs.names import (
    ASSET_PARTITION_RANGE_END_TAG,
    PARTITION_NAME_TAG,
)
from mlplatform_assets.defs.resources import (
    DataStore,
    MlflowRegistryResource,
    PlatformResource,
)
from mlplatform_assets.lib.data import datasource, validation
from mlplatform_assets.lib.data.hashing import code_version
from mlplatform_assets.lib.model import lifecycle, rigor
from mlplatform_assets.lib.model.evaluation import quality_report_html
from mlplatform_assets.lib.model.features import DatasetError, TrainingDataset
from mlplatform_assets.lib.model.report import evaluation_markdown, mlflow_artifact_url
from mlplatform_assets.lib.serving.endpoints import wait_for_version
from mlplatform_assets.lib.spec import ModelSpec


def daily_partitions(spec: ModelSpec) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=spec.partition_start.isoformat(), timezone="UTC")


class TrainingWindowConfig(dg.Config):
    as_of: Optional[str] = None
    """Last day (YYYY-MM-DD) of the training window. Default: the end of the run's partition range,
    else the latest validated day."""


def _floats(metrics: dict[str, float], prefix: str = "") -> dict[str, dg.MetadataValue]:
    return {f"{prefix}{k}": dg.MetadataValue.float(float(v)) for k, v in metrics.items() if v == v}


def _days(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(k) for k in context.partition_keys]


def _alert_quarantined(context: dg.AssetExecutionContext, platform: PlatformResource, model: str,
                       quarantined: dict[str, dict[str, str]]) -> None:
    """One alert per run naming every quarantined day and its failed checks (day -> check -> message)."""
    from mlplatform_assets.lib.monitoring.alerts import Alert, send_alert

    listed = "; ".join(f"{day}: {', '.join(failed)}" for day, failed in quarantined.items())
    message = (f"{model}: {len(quarantined)} day(s) quarantined (left out of training and monitoring "
               f"until they pass again): {listed}")
    context.log.warning(message)
    send_alert(Alert(kind="partition_quarantined", model=model, asset=f"{model}/raw_data",
                     partition=next(iter(quarantined)) if len(quarantined) == 1 else None, message=message,
                     details={"days": quarantined, "dagster_run_id": context.run_id}),
               platform.alerts_log_path)


def build_lifecycle_assets(spec: ModelSpec) -> list[dg.AssetsDefinition]:
    name = spec.name
    partitions = daily_partitions(spec)
    raw_key = dg.AssetKey([name, "raw_data"])
    # Checks of failed warn-severity rules never block; every other check blocks (or, under quarantine, reports
    # the failing days as WARN: they are left out and the rest of the range goes on).
    check_specs = [dg.AssetCheckSpec(c, asset=raw_key, blocking=c != validation.COLUMN_RULES_WARN_CHECK,
                                     description=validation.check_description(c))
                   for c in validation.check_names(spec)]
    quarantine = spec.validation.on_failure == "quarantine"
    tags = {MODEL_TAG: name}

    @dg.asset(
        key=raw_key, group_name=name, partitions_def=partitions, check_specs=check_specs,
        backfill_policy=dg.BackfillPolicy.single_run(), kinds={"pandas", "parquet"}, tags=tags,
        description=f"Raw rows of {name} for one day, copied from {datasource.source_label(spec)}. "
                    "Blocking checks guard it.",
    )
    def raw_data(context: dg.AssetExecutionContext, data_store: DataStore,
                 platform: PlatformResource) -> dg.MaterializeResult:
        days = _days(context)
        ingested = lifecycle.ingest_days(spec, days, data_store.store(), data_store.source_s3_client())
        check_results = []
        for check in validation.check_names(spec):
            # day -> its failed outcomes under this check (a column-rules check holds several rules per day)
            failed: dict[dt.date, list[validation.CheckOutcome]] = {}
            for d in ingested:
                for c in d.checks:
                    if c.check == check and not c.passed:
                        failed.setdefault(d.day, []).append(c)
            messages = {str(day): "; ".join(c.message for c in outcomes) for day, outcomes in failed.items()}
            if failed:
                desc = "; ".join(f"{day}: {m}" for day, m in list(messages.items())[:20])
                if len(failed) > 20:
                    desc += f"; ... and {len(failed) - 20} more partition(s)"
                if quarantine and check != validation.COLUMN_RULES_WARN_CHECK:
                    desc = f"quarantined {len(failed)} partition(s): {desc}"
            else:
                desc = f"passed on {len(ingested)} partition(s)"
            blocks = check != validation.COLUMN_RULES_WARN_CHECK and not quarantine
            check_results.append(dg.AssetCheckResult(
                check_name=check, passed=not failed, description=desc,
                severity=dg.AssetCheckSeverity.ERROR if blocks else dg.AssetCheckSeverity.WARN,
                metadata={"failed_partitions": dg.MetadataValue.json(list(messages)),
                          "messages": dg.MetadataValue.json(dict(list(messages.items())[:50]))}))
        quarantined = {str(d.day): {c.name: c.message for c in d.failures} for d in ingested if d.quarantined}
        if quarantined:
            _alert_quarantined(context, platform, name, quarantined)
        total_rows = sum(d.rows for d in ingested)
        first = next((d for d in ingested if d.schema), None)
        metadata: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(total_rows),
            "rows": dg.MetadataValue.int(total_rows),
            "bytes": dg.MetadataValue.int(sum(d.n_bytes for d in ingested)),
            "partitions": dg.MetadataValue.int(len(ingested)),
            "source": dg.MetadataValue.text(datasource.source_label(spec)),  # never an expanded ${VAR} or a password
        }
        if quarantine:
            metadata["quarantined_partitions"] = dg.MetadataValue.json(quarantined)
        if first is not None:
            metadata["dagster/column_schema"] = dg.TableSchema(
                columns=[dg.TableColumn(c, t) for c, t in first.schema.items()])
        if len(ingested) == 1:
            metadata["data_sha256"] = dg.MetadataValue.text(ingested[0].data_sha256)
        else:
            metadata["per_partition"] = dg.MetadataValue.md("| day | rows | bytes | sha256 | checks |\n|---|---|---|---|---|\n" + "\n".join(
                f"| {d.day} | {d.rows} | {d.n_bytes} | {d.data_sha256[:12]} | "
                f"{'ok' if d.passed else 'QUARANTINED' if d.quarantined else 'FAILED'} |"
                for d in ingested))
        return dg.MaterializeResult(metadata=metadata, check_results=check_results)

    @dg.asset(
        key=[name, "validated_data"], group_name=name, partitions_def=partitions, deps=[raw_data],
        backfill_policy=dg.BackfillPolicy.single_run(), kinds={"pandas", "parquet"}, tags=tags,
        description="Typed, cleaned rows of days whose raw data passed every blocking check (quarantined days "
                    "are skipped).",
    )
    def validated_data(context: dg.AssetExecutionContext, data_store: DataStore) -> dg.MaterializeResult:
        days = _days(context)
        stored = lifecycle.store_validated(spec, days, data_store.store())
        metadata = {
            "dagster/row_count": dg.MetadataValue.int(sum(s["rows"] for s in stored.values())),
            "dropped_rows": dg.MetadataValue.int(sum(s["dropped_rows"] for s in stored.values())),
            "partitions": dg.MetadataValue.int(len(stored)),
        }
        if quarantine:
            metadata["quarantined_days"] = dg.MetadataValue.json([str(d) for d in days if d not in stored])
        return dg.MaterializeResult(metadata=metadata)

    @dg.asset(
        key=[name, "features"], group_name=name, deps=[validated_data], kinds={"pandas"}, tags=tags,
        description=f"Training dataset: the last {spec.training.window_days} validated days, the last "
                    f"{spec.training.holdout_days} held out (time-ordered split).",
    )
    # Training through promotion requires ``training_lock``: the run holds the model's training lock
    # from its start to its end (defs/coordination.py); the assets never call it.
    def features(context: dg.AssetExecutionContext, config: TrainingWindowConfig, data_store: DataStore,
                 training_lock: TrainingLockResource) -> dg.Output[TrainingDataset]:
        run_tags = context.run.tags
        as_of = config.as_of or run_tags.get(ASSET_PARTITION_RANGE_END_TAG) or run_tags.get(PARTITION_NAME_TAG)
        try:
            dataset = lifecycle.load_training_dataset(
                spec, data_store.store(), end=dt.date.fromisoformat(as_of) if as_of else None)
        except DatasetError as exc:
            raise dg.Failure(description=f"{name}: {exc}") from None
        return dg.Output(dataset, metadata={
            "train_rows": dg.MetadataValue.int(len(dataset.train)),
            "holdout_rows": dg.MetadataValue.int(len(dataset.holdout)),
            "dagster/row_count": dg.MetadataValue.int(len(dataset.train) + len(dataset.holdout)),
            "partition_range": dg.MetadataValue.text(dataset.partition_range),
            "data_sha256": dg.MetadataValue.text(dataset.data_sha256),
            "numeric_features": dg.MetadataValue.json(dataset.numeric),
            "categorical_features": dg.MetadataValue.json(dataset.categorical),
            "quarantined_days": dg.MetadataValue.json([str(d) for d in dataset.quarantined_days]),
        })

    @dg.asset(
        key=[name, "trained_model"], group_name=name, kinds={"scikitlearn", "mlflow"}, tags=tags,
        description=f"{spec.as_written('estimator', 'class_path')} fitted on the training rows, logged to MLflow "
                    f"with full lineage and registered as a new version with alias 'challenger'.",
    )
    def trained_model(context: dg.AssetExecutionContext, features: TrainingDataset,
                      mlflow: MlflowRegistryResource, training_lock: TrainingLockResource) -> dg.Output[dict]:
        registry = mlflow.registry()
        # Under the training lock no other training of this model runs: what an ended run left half done
        # (an MLflow run still RUNNING, a version never evaluated) is cleaned up before a new version appears.
        cleaned = registry.reconcile_incomplete(
            name, lambda run_id: run_id == context.run_id or run_is_live(context.instance, run_id))
        if any(cleaned.values()):
            context.log.warning(f"{name}: cleaned up after ended runs: {cleaned}")
        version, result, cost = lifecycle.train_and_register(spec, features, registry, code_version(), context.run_id)
        context.log.info(f"{name}: registered v{version.version} (run {version.run_id}): {result.metrics}")
        return dg.Output(
            {"version": version.version, "run_id": version.run_id, "metrics": result.metrics,
             "run_url": version.run_url},
            metadata={
                "model_version": dg.MetadataValue.text(version.version),
                "mlflow_run_id": dg.MetadataValue.text(version.run_id),
                "mlflow_run": dg.MetadataValue.url(version.run_url),
                "mlflow_model": dg.MetadataValue.url(registry.model_url(name, version.version)),
                "model_uri": dg.MetadataValue.text(version.model_uri),
                "data_sha256": dg.MetadataValue.text(features.data_sha256),
                "partition_range": dg.MetadataValue.text(features.partition_range),
                "quarantined_days": dg.MetadataValue.json([str(d) for d in features.quarantined_days]),
                **_floats(result.metrics, "holdout_"),
                # What the training step used (numeric, so the UI plots them across materializations).
                **{name: dg.MetadataValue.float(value) for name, value in cost.metrics().items()},
            })

    @dg.asset(
        key=[name, "evaluation_report"], group_name=name, kinds={"evidently", "mlflow"}, tags=tags,
        description="Challenger vs current champion on the same holdout, an Evidently quality report, and the "
                    "promotion decision with its reason.",
    )
    def evaluation_report(context: dg.AssetExecutionContext, features: TrainingDataset, trained_model: dict,
                          mlflow: MlflowRegistryResource, platform: PlatformResource,
                          training_lock: TrainingLockResource) -> dg.Output[dict]:
        registry = mlflow.registry()
        version = trained_model["version"]
        ev = lifecycle.evaluate_challenger(spec, registry, version, features)
        # The report's durable home is the challenger's MLflow run (no shared filesystem on a cluster);
        # the local copy is scratch in a temporary directory.
        report_name = f"evaluation_v{version}.html"
        with tempfile.TemporaryDirectory(prefix="mlplatform-report-") as tmp:
            report = Path(tmp) / report_name
            quality_report_html(spec, features.holdout, ev.challenger_predictions, report,
                                reference=ev.champion_predictions)
            if "rigor" in ev.extra:  # intervals, baselines, slices (gate.*, baseline.*, evaluation/slices.json)
                rigor.log_to_mlflow(registry.client, trained_model["run_id"], ev.extra["rigor"])
            registry.log_evaluation(name, version, trained_model["run_id"], report, ev.decision.as_dict(),
                                    ev.champion_metrics, spec.metrics.primary)
        report_uri = f"runs:/{trained_model['run_id']}/evaluation/{report_name}"
        # The MLflow UI renders the HTML artifact in its run page: one link that works on the embedded
        # default (`mlplatform ui`) and on a cluster (the tracking server's UI).
        report_url = mlflow_artifact_url(trained_model["run_url"], f"evaluation/{report_name}")
        metadata = {
            "summary": dg.MetadataValue.md(evaluation_markdown(spec, ev, features.y("holdout"), report_url)),
            "report": dg.MetadataValue.url(report_url),
            "promote": dg.MetadataValue.bool(ev.decision.promote),
            "reason": dg.MetadataValue.text(ev.decision.reason),
            "challenger_version": dg.MetadataValue.text(str(version)),
            "champion_version": dg.MetadataValue.text(str(ev.decision.champion_version or "none")),
            "report_artifact": dg.MetadataValue.text(report_uri),
            "mlflow_run": dg.MetadataValue.url(trained_model["run_url"]),
            "quarantined_days": dg.MetadataValue.json([str(d) for d in features.quarantined_days]),
            **_floats(ev.challenger_metrics, "challenger_"),
            **_floats(ev.champion_metrics or {}, "champion_"),
            "gate_require": dg.MetadataValue.text(ev.decision.require),
            **_floats(rigor.mlflow_metrics(ev.extra["rigor"]) if "rigor" in ev.extra else {}),
        }
        if ev.decision.delta is not None:
            metadata[f"delta_{spec.metrics.primary}"] = dg.MetadataValue.float(ev.decision.delta)
        return dg.Output({"decision": ev.decision.as_dict(), "report": report_uri,
                          "challenger_metrics": ev.challenger_metrics, "champion_metrics": ev.champion_metrics},
                         metadata=metadata)

    deployed_key = dg.AssetKey([name, "deployed_endpoint"])

    @dg.asset(
        key=deployed_key, group_name=name, kinds={"mlflow"}, tags=tags,
        check_specs=[dg.AssetCheckSpec(
            "endpoints_serve_champion", asset=deployed_key,
            description="Every endpoint in serving.endpoints is healthy and serves the champion version "
                        "within one poll interval.")],
        description="Moves the MLflow alias 'champion' to the challenger when the gate passed, records the "
                    "decision in the audit trail either way, and confirms the live endpoints serve the champion.",
    )
    def deployed_endpoint(context: dg.AssetExecutionContext, evaluation_report: dict,
                          mlflow: MlflowRegistryResource, training_lock: TrainingLockResource):
        from mlplatform_assets.lib.model.evaluation import PromotionDecision

        registry = mlflow.registry()
        decision = PromotionDecision(**evaluation_report["decision"])
        outcome = lifecycle.apply_decision(spec, registry, decision, actor=f"dagster:{context.run_id}",
                                           dagster_run_id=context.run_id)
        champion = registry.champion(name)
        champion_version = str(champion.version) if champion else None
        rec = outcome["record"]
        context.log.info(f"{name}: {rec.decision} (champion v{champion_version}): {rec.reason}")
        # The services hot-swap on their own (they poll the alias); here we confirm they did.
        statuses = [wait_for_version(url, champion_version, timeout_s=2 * spec.serving.poll_interval_s + 5)
                    for url in spec.serving.endpoints] if champion_version else []
        lagging = [s for s in statuses if not (s.healthy and s.model_version == champion_version)]
        value = {"champion_version": champion_version, "promoted": outcome["promoted"], "reason": rec.reason,
                 "challenger_version": decision.challenger_version,
                 "endpoints": [s.as_dict() for s in statuses]}
        yield dg.Output(value, metadata={
            "endpoints": dg.MetadataValue.json([s.as_dict() for s in statuses]),
            "endpoints_serving_champion": dg.MetadataValue.int(len(statuses) - len(lagging)),
            **({"endpoint_url": dg.MetadataValue.url(statuses[0].url),
                "endpoint_model_version": dg.MetadataValue.text(str(statuses[0].model_version)),
                "endpoint_healthy": dg.MetadataValue.bool(statuses[0].healthy)} if statuses else {}),
            "champion_version": dg.MetadataValue.text(str(champion_version)),
            "promoted": dg.MetadataValue.bool(outcome["promoted"]),
            "decision": dg.MetadataValue.text(rec.decision),
            "reason": dg.MetadataValue.text(rec.reason),
            "model_uri": dg.MetadataValue.text(f"models:/{name}@champion"),
            "mlflow_model": dg.MetadataValue.url(registry.model_url(name, champion_version or "")),
        })
        yield dg.AssetCheckResult(
            check_name="endpoints_serve_champion", passed=not lagging, severity=dg.AssetCheckSeverity.WARN,
            description=("no endpoints configured (serving.endpoints)" if not statuses else
                         "; ".join(f"{s.url}: serves v{s.model_version}" + (f" ({s.error})" if s.error else "")
                                   for s in statuses)))

    return [raw_data, validated_data, features, trained_model, evaluation_report, deployed_endpoint]


def lifecycle_jobs(spec: ModelSpec) -> list:
    name = spec.name
    training = dg.AssetSelection.assets(*[dg.AssetKey([name, k]) for k in TRAINING_ASSETS])
    ingest = dg.AssetSelection.assets(dg.AssetKey([name, "raw_data"]), dg.AssetKey([name, "validated_data"]))
    # In-process: one run is a handful of cheap steps; a process per step costs ~2 s each here. It also
    # makes the run's training lock (a resource) span training -> evaluation -> promotion as one unit.
    # Jobs that can move the champion carry the training tag (one at a time per model, infra/dagster.yaml);
    # ingest runs do not and run beside a training.
    return [
        dg.define_asset_job(f"{name}__lifecycle", selection=ingest | training, executor_def=dg.in_process_executor,
                            description=f"{name}: ingest a partition range, validate, train, evaluate, promote.",
                            tags=training_tags(name)),
        dg.define_asset_job(f"{name}__ingest", selection=ingest, executor_def=dg.in_process_executor,
                            partitions_def=daily_partitions(spec),
                            description=f"{name}: copy and validate source partitions.",
                            tags={MODEL_TAG: name}),
        dg.define_asset_job(f"{name}__training", selection=training, executor_def=dg.in_process_executor,
                            description=f"{name}: retrain on the latest validated window, evaluate, promote.",
                            tags=training_tags(name)),
    ]
