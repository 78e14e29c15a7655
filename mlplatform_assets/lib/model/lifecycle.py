"""The lifecycle steps as plain functions; the Dagster assets are thin wrappers around these.

Data layout in the platform's data store (local directory or S3 prefix):
``<model>/raw/date=YYYY-MM-DD/data.parquet``        raw copy of a source day
``<model>/validated/date=YYYY-MM-DD/data.parquet``  typed, cleaned rows of a day that passed every check
``<model>/quarantine/date=YYYY-MM-DD/record.json``  why a day is quarantined (validation.on_failure: quarantine);
                                                    training and monitoring skip it until it passes again
``<model>/<asset>/runs/<run_id>/...``                a run's outputs handed between lifecycle assets
                                                    (training dataset, records; see defs/resources.py)
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlplatform_assets.lib.cost.usage import TrainingCost, UsageMeter, log_training_cost
from mlplatform_assets.lib.data import datasource, validation
from mlplatform_assets.lib.data.hashing import frame_sha256
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.model.evaluation import PromotionDecision, decide_promotion
from mlplatform_assets.lib.model.features import (
    DatasetError,
    TrainingDataset,
    build_dataset,
    required_partitions,
    window_days,
)
from mlplatform_assets.lib.model.registry import (
    TAG_CODE_VERSION,
    TAG_DAGSTER_RUN,
    TAG_DATA_SHA,
    TAG_PARTITIONS,
    TAG_SPEC_SHA,
    RegisteredVersion,
    Registry,
    RegistryError,
)
from mlplatform_assets.lib.model.rigor import assess
from mlplatform_assets.lib.model.training import (
    FitResult,
    compute_metrics,
    fit,
    metric_names,
    predict_frame,
)
from mlplatform_assets.lib.spec import ModelSpec


def raw_key(model: str, day: dt.date) -> str:
    return f"{model}/raw/date={day.isoformat()}/data.parquet"


def validated_key(model: str, day: dt.date) -> str:
    return f"{model}/validated/date={day.isoformat()}/data.parquet"


def quarantine_key(model: str, day: dt.date) -> str:
    return f"{model}/quarantine/date={day.isoformat()}/record.json"


def _days_under(store: ObjectStore, prefix: str) -> list[dt.date]:
    """Days of the ``<prefix>date=YYYY-MM-DD/...`` keys in the store, sorted."""
    days = set()
    for key in store.list(prefix):
        part = key[len(prefix):].split("/", 1)[0]
        if part.startswith("date="):
            days.add(dt.date.fromisoformat(part[5:]))
    return sorted(days)


def quarantined_days(spec: ModelSpec, store: ObjectStore) -> list[dt.date]:
    """Days whose latest ingestion failed a blocking check under ``validation.on_failure: quarantine``."""
    return _days_under(store, f"{spec.name}/quarantine/")


def quarantine_record(spec: ModelSpec, store: ObjectStore, day: dt.date) -> dict[str, Any] | None:
    """Why ``day`` is quarantined (``failed_checks``: check name -> message), or None when it is not."""
    key = quarantine_key(spec.name, day)
    return json.loads(store.read_bytes(key)) if store.exists(key) else None


@dataclass
class IngestedDay:
    day: dt.date
    rows: int
    n_bytes: int
    source: str
    data_sha256: str
    schema: dict[str, str]
    checks: list[validation.CheckOutcome]
    read_error: str | None = None
    quarantined: bool = False

    @property
    def failures(self) -> list[validation.CheckOutcome]:
        """The outcomes that block (or quarantine) the day; failed ``warn`` rules are not among them."""
        return [c for c in self.checks if c.blocks]

    @property
    def passed(self) -> bool:
        return not self.failures


def ingest_days(spec: ModelSpec, days: list[dt.date], store: ObjectStore, s3_client: Any = None) -> list[IngestedDay]:
    """Read each day from the source, keep a raw copy, and run every check on it.

    Under ``validation.on_failure: quarantine`` a failing day (a missing day too) gets a quarantine record; a
    day that passes loses any record an earlier ingestion left, so a fixed day rejoins training."""
    out = []
    quarantine = spec.validation.on_failure == "quarantine"
    for dd in datasource.read_days(spec, days, s3_client):
        frame = dd.frame
        if dd.error is None:
            store.write_frame(raw_key(spec.name, dd.day), frame)
        day = IngestedDay(
            day=dd.day, rows=len(frame), n_bytes=dd.n_bytes, source=dd.location,
            data_sha256=frame_sha256(frame), schema={c: str(t) for c, t in frame.dtypes.items()},
            checks=validation.check_day(spec, frame, dd.day, dd.error), read_error=dd.error)
        if day.passed:
            store.delete(quarantine_key(spec.name, day.day))
        elif quarantine:
            record = {"day": day.day.isoformat(), "rows": day.rows, "data_sha256": day.data_sha256,
                      "quarantined_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      "failed_checks": {c.name: c.message for c in day.failures}}
            store.write_bytes(quarantine_key(spec.name, day.day), json.dumps(record, default=str).encode())
            day.quarantined = True
        out.append(day)
    return out


def store_validated(spec: ModelSpec, days: list[dt.date], store: ObjectStore) -> dict[dt.date, dict[str, Any]]:
    """Clean and store each day's raw copy. Called for days whose blocking checks passed or, under
    quarantine, for every day of a range: quarantined days are skipped (not in the result)."""
    out = {}
    skipped = set(quarantined_days(spec, store))
    for day in days:
        if day in skipped:
            continue
        raw = store.read_frame(raw_key(spec.name, day))
        numeric, categorical = validation.infer_feature_columns(spec, raw)
        clean = validation.clean_day(spec, raw, numeric, categorical)
        uri, n_bytes = store.write_frame(validated_key(spec.name, day), clean)
        out[day] = {"rows": len(clean), "dropped_rows": len(raw) - len(clean), "uri": uri, "bytes": n_bytes,
                    "data_sha256": frame_sha256(clean)}
    return out


def validated_days(spec: ModelSpec, store: ObjectStore) -> list[dt.date]:
    """Days with validated data that are not quarantined (an earlier good copy of a now-quarantined day stays
    stored but is not used)."""
    quarantined = set(quarantined_days(spec, store))
    return [d for d in _days_under(store, f"{spec.name}/validated/") if d not in quarantined]


def load_training_dataset(spec: ModelSpec, store: ObjectStore, end: dt.date | None = None,
                          days: list[dt.date] | None = None) -> TrainingDataset:
    """The training window ending at ``end`` (default: the latest validated day), or exactly ``days``.
    Quarantined days of the window are left out and named in the dataset's ``quarantined_days``."""
    available = validated_days(spec, store)
    skipped: list[dt.date] = []
    if days is None:
        if not available:
            raise DatasetError(f"model {spec.name!r} has no validated data yet: materialize raw_data first")
        end = end or available[-1]
        window = window_days(end, spec)
        days = [d for d in window if d in set(available)]
        skipped = [d for d in window if d in set(quarantined_days(spec, store))]
        needed = required_partitions(spec)
        if skipped and len(days) < needed:
            raise DatasetError(
                f"training window {window[0]}..{window[-1]} has {len(days)} valid day(s) after quarantining "
                f"{len(skipped)} ({', '.join(map(str, skipped))}); at least {needed} are required "
                "(training.min_partitions)")
    else:
        missing = [d.isoformat() for d in days if d not in set(available)]
        if missing:
            raise DatasetError(f"validated data missing for day(s) {missing}")
    frames = {d: store.read_frame(validated_key(spec.name, d)) for d in days}
    if not frames:
        raise DatasetError(f"no validated days in the window ending {end}")
    numeric, categorical = validation.infer_feature_columns(spec, next(iter(frames.values())))
    dataset = build_dataset(spec, frames, numeric, categorical)
    dataset.quarantined_days = skipped
    return dataset


def lineage_tags(spec: ModelSpec, dataset: TrainingDataset, code_version: str, dagster_run_id: str | None) -> dict[str, str]:
    return {
        TAG_SPEC_SHA: spec.sha256,
        TAG_DATA_SHA: dataset.data_sha256,
        TAG_CODE_VERSION: code_version,
        TAG_DAGSTER_RUN: dagster_run_id or "",
        TAG_PARTITIONS: dataset.partition_range,
    }


def train_and_register(spec: ModelSpec, dataset: TrainingDataset, registry: Registry, code_version: str,
                       dagster_run_id: str | None) -> tuple[RegisteredVersion, FitResult, TrainingCost]:
    """Fit, log and register a new version; what the whole step used is recorded on its run (``cost.*``)."""
    from mlplatform_assets.lib.monitoring.batch import drift_artifacts

    with UsageMeter() as meter:
        result = fit(spec, dataset)
        # Drift references travel with the version: a drift check never needs the training data again.
        extra = drift_artifacts(spec, dataset, result)
        tags = lineage_tags(spec, dataset, code_version, dagster_run_id)
        version = registry.log_training(spec=spec, dataset=dataset, fit_result=result, lineage=tags,
                                        extra_artifacts=extra)
    cost = TrainingCost.of(meter.usage, len(dataset.train), len(dataset.holdout))
    log_training_cost(registry.client, version.run_id, cost)
    return version, result, cost


@dataclass
class Evaluation:
    decision: PromotionDecision
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    challenger_predictions: pd.DataFrame
    champion_predictions: pd.DataFrame | None
    extra: dict[str, Any] = field(default_factory=dict)


def evaluate_challenger(spec: ModelSpec, registry: Registry, challenger_version: str,
                        dataset: TrainingDataset) -> Evaluation:
    """Score challenger and current champion on the same holdout and apply the promotion gate."""
    from threadpoolctl import threadpool_limits

    from mlplatform_assets.lib.model import importance, search, staleness

    with threadpool_limits(1):
        ev = _evaluate(spec, registry, challenger_version, dataset)
        # Which features each model relies on, challenger vs a comparable champion (lib/model/importance.py).
        ev.extra["importance"] = importance.measure_and_log(
            spec, registry, challenger_version, dataset.X("holdout"), dataset.y("holdout"),
            ev.decision.champion_version if ev.champion_metrics else None)
    ev.extra["search"] = search.recorded_summary(spec, registry, challenger_version)  # for the report
    # How fast this pipeline goes stale (backtest; logged on the challenger's run, read by the staleness alert).
    ev.extra["staleness"] = staleness.measure_and_log(spec, registry, challenger_version, dataset,
                                                      ev.challenger_predictions)
    return ev


def _evaluate(spec: ModelSpec, registry: Registry, challenger_version: str, dataset: TrainingDataset) -> Evaluation:
    names = metric_names(spec)
    X, y = dataset.X("holdout"), dataset.y("holdout")
    challenger = registry.load_pipeline(spec.name, challenger_version)
    ch_preds = predict_frame(challenger, X, spec.task)
    ch_metrics = compute_metrics(spec.task, names, y, ch_preds, spec.target.positive_class)
    champ = registry.champion(spec.name)
    champ_metrics = champ_preds = None
    champ_version = None
    if champ is not None and str(champ.version) != str(challenger_version):
        champ_version = str(champ.version)
        try:
            champion = registry.load_pipeline(spec.name, champ_version)
            champ_preds = predict_frame(champion, X, spec.task)
            champ_metrics = compute_metrics(spec.task, names, y, champ_preds, spec.target.positive_class)
        except (KeyError, ValueError) as exc:
            # The champion cannot score today's holdout (e.g. its feature set changed): it cannot be
            # compared, so the challenger must win on the floor alone; say so in the reason.
            champ_metrics = None
            champ_version_note = f"champion v{champ_version} could not score this holdout: {exc}"
            rigor = assess(spec, dataset, ch_preds, None)
            decision = decide_promotion(spec, challenger_version, ch_metrics[spec.metrics.primary], None, None, rigor)
            decision.reason = f"{champ_version_note}; {decision.reason}"
            decision.champion_version = champ_version
            return Evaluation(decision, ch_metrics, None, ch_preds, None, extra={"rigor": rigor.as_dict()})
    primary = spec.metrics.primary
    # Interval vs the champion, baselines and slices on the same holdout rows (lib/model/rigor.py).
    rigor = assess(spec, dataset, ch_preds, champ_preds)
    decision = decide_promotion(spec, challenger_version, ch_metrics[primary], champ_version,
                                champ_metrics[primary] if champ_metrics else None, rigor)
    return Evaluation(decision, ch_metrics, champ_metrics, ch_preds, champ_preds, extra={"rigor": rigor.as_dict()})


def apply_decision(spec: ModelSpec, registry: Registry, decision: PromotionDecision, actor: str,
                   dagster_run_id: str | None) -> dict[str, Any]:
    """Move ``champion`` when the gate passed, record the decision either way."""
    details = decision.as_dict()
    current = registry.champion(spec.name)
    if decision.promote:
        if current is not None and str(current.version) != decision.champion_version and decision.champion_version:
            # The champion moved while this run evaluated against an older one: the comparison is stale.
            rec = registry.record_rejection(spec.name, decision.challenger_version, actor=actor,
                                            dagster_run_id=dagster_run_id, details=details,
                                            reason=f"champion moved to v{current.version} during evaluation; "
                                                   f"re-run to compare against it")
            return {"promoted": False, "record": rec}
        rec = registry.move_champion(spec.name, decision.challenger_version,
                                     action="promote" if current else "initial", reason=decision.reason,
                                     actor=actor, dagster_run_id=dagster_run_id, details=details)
        return {"promoted": True, "record": rec}
    rec = registry.record_rejection(spec.name, decision.challenger_version, reason=decision.reason, actor=actor,
                                    dagster_run_id=dagster_run_id, details=details)
    return {"promoted": False, "record": rec}


@dataclass
class ReproduceResult:
    model: str
    version: str
    identical: bool
    rows: int
    max_abs_diff: float
    data_matches: bool
    message: str


def _recorded_training_spec(registry: Registry, run_id: str, spec: ModelSpec, run: Any) -> ModelSpec:
    """The spec as the version was fitted: a searched version refits its recorded choice, without searching."""
    from mlplatform_assets.lib.model.search import SEARCH_ARTIFACT, recorded_chosen_params, with_params

    if spec.estimator.search is None:
        return spec
    if "search.method" not in run.data.params:
        raise RegistryError(f"run {run_id} declares estimator.search but recorded no search result ({SEARCH_ARTIFACT})")
    return with_params(spec, recorded_chosen_params(registry.download_artifact(run_id, SEARCH_ARTIFACT)))


def reproduce(registry: Registry, store: ObjectStore, model: str, version: str) -> ReproduceResult:
    """Retrain a recorded version from its recorded spec and partitions; compare holdout predictions."""
    from mlplatform_assets.lib.spec import parse_spec

    mv = registry.get_version(model, version)
    run = registry.client.get_run(mv.run_id)
    spec_text = registry.download_artifact(mv.run_id, "spec.yaml").decode()
    spec = parse_spec(spec_text, f"models:/{model}/{version} spec.yaml")
    manifest = json.loads(registry.download_artifact(mv.run_id, "training_manifest.json"))
    recorded = pd.read_parquet(io.BytesIO(registry.download_artifact(mv.run_id, "holdout_predictions.parquet")))
    days = [dt.date.fromisoformat(d) for d in [*manifest["train_days"], *manifest["holdout_days"]]]
    dataset = load_training_dataset(spec, store, days=days)
    recorded_sha = run.data.tags.get(TAG_DATA_SHA)
    data_matches = dataset.data_sha256 == recorded_sha
    if not data_matches:
        return ReproduceResult(model, str(version), False, len(recorded), float("nan"), False,
                               f"data changed since v{version} was trained: sha256 {dataset.data_sha256[:12]} "
                               f"!= recorded {str(recorded_sha)[:12]}; cannot reproduce")
    result = fit(_recorded_training_spec(registry, mv.run_id, spec, run), dataset)
    new, old = result.holdout_predictions, recorded
    same_shape = list(new.columns) == list(old.columns) and len(new) == len(old)
    if not same_shape:
        return ReproduceResult(model, str(version), False, len(old), float("nan"), True,
                               "holdout prediction shapes differ")
    identical = all(np.array_equal(new[c].to_numpy(), old[c].to_numpy()) for c in new.columns)
    diffs = [float(np.max(np.abs(new[c].to_numpy(dtype=float) - old[c].to_numpy(dtype=float))))
             for c in new.columns if pd.api.types.is_numeric_dtype(new[c]) and len(new)]
    max_diff = max(diffs, default=0.0)
    msg = (f"v{version} reproduced exactly: {len(new)} holdout predictions identical" if identical
           else f"v{version} NOT reproduced: holdout predictions differ (max abs diff {max_diff:.3g})")
    return ReproduceResult(model, str(version), identical, len(new), max_diff, True, msg)
