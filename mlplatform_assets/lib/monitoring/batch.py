"""Monitoring logic: drift references made at training time, daily drift checks, batch scoring,
and realized quality once labels arrive. No Dagster here."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from mlplatform_assets.lib.data.storage import ObjectStore, atomic_path
from mlplatform_assets.lib.model.features import TrainingDataset
from mlplatform_assets.lib.model.registry import Registry
from mlplatform_assets.lib.model.training import (
    FitResult,
    compute_metrics,
    metric_names,
    predict_frame,
)
from mlplatform_assets.lib.monitoring import drift
from mlplatform_assets.lib.spec import ModelSpec

PROFILE_FEATURES = "drift/reference_features.npz"
PROFILE_PREDICTIONS = "drift/reference_predictions.npz"
REFERENCE_SAMPLE = "drift/reference_sample.parquet"
REFERENCE_SAMPLE_ROWS = 5_000
PREDICTION_COLUMN = "prediction_score"


def prediction_score(spec: ModelSpec, predictions: pd.DataFrame) -> tuple[pd.Series, str]:
    """The one column that represents a model's output for prediction drift, and its kind."""
    if spec.task == "classification" and "probability" in predictions:
        return predictions["probability"].astype(float), drift.NUMERICAL
    if spec.task == "classification":
        return predictions["prediction"].astype(str), drift.CATEGORICAL
    return predictions["prediction"].astype(float), drift.NUMERICAL


def drift_artifacts(spec: ModelSpec, dataset: TrainingDataset, result: FitResult) -> dict[str, bytes]:
    """Reference statistics stored with the model version, so drift checks never reload training data.

    Features: the training rows. Predictions: the model's out-of-sample predictions on the holdout.
    """
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        features = drift.build_reference_profile(dataset.train, dataset.numeric, dataset.categorical,
                                                 metadata={"model": spec.name, "rows": len(dataset.train)})
        features.save(Path(tmp) / "f.npz")
        out[PROFILE_FEATURES] = (Path(tmp) / "f.npz").read_bytes()
        score, kind = prediction_score(spec, result.holdout_predictions)
        preds = drift.build_reference_profile(pd.DataFrame({PREDICTION_COLUMN: score.to_numpy()}),
                                              prediction_column=PREDICTION_COLUMN, prediction_kind=kind)
        preds.save(Path(tmp) / "p.npz")
        out[PROFILE_PREDICTIONS] = (Path(tmp) / "p.npz").read_bytes()
    sample = dataset.train.sample(n=min(REFERENCE_SAMPLE_ROWS, len(dataset.train)), random_state=spec.training.seed)
    buf = io.BytesIO()
    sample[dataset.feature_columns].to_parquet(buf, index=False)
    out[REFERENCE_SAMPLE] = buf.getvalue()
    return out


@dataclass
class ChampionReference:
    version: str
    run_id: str
    features: drift.ReferenceProfile
    predictions: drift.ReferenceProfile
    sample: pd.DataFrame


def load_champion_reference(registry: Registry, model: str, cache_dir: str | Path) -> ChampionReference:
    """The champion's drift references, downloaded once per version into a local cache."""
    champ = registry.champion(model)
    if champ is None:
        raise LookupError(f"model {model!r} has no champion yet: run its lifecycle first")
    cache = Path(cache_dir) / model / f"v{champ.version}"
    paths = {}
    for name in (PROFILE_FEATURES, PROFILE_PREDICTIONS, REFERENCE_SAMPLE):
        local = cache / name
        if not local.exists():
            data = registry.download_artifact(champ.run_id, name)
            with atomic_path(local) as tmp:
                Path(tmp).write_bytes(data)
        paths[name] = local
    return ChampionReference(str(champ.version), champ.run_id, drift.ReferenceProfile.load(paths[PROFILE_FEATURES]),
                             drift.ReferenceProfile.load(paths[PROFILE_PREDICTIONS]),
                             pd.read_parquet(paths[REFERENCE_SAMPLE]))


def row_keys(spec: ModelSpec, frame: pd.DataFrame, feature_columns: list[str]) -> np.ndarray:
    """A per-row key from timestamp + features: stable when the day's labels arrive later."""
    cols = [spec.timestamp_column, *feature_columns]
    return pd.util.hash_pandas_object(frame[cols], index=False).to_numpy()


def predictions_key(model: str, day: dt.date) -> str:
    return f"{model}/predictions/date={day.isoformat()}/data.parquet"


def score_day(spec: ModelSpec, pipeline: Any, version: str, frame: pd.DataFrame | Iterator[pd.DataFrame],
              feature_columns: list[str], chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """Batch predictions in chunks (flat memory), each row carrying the model version that made it.

    ``frame`` is a whole day or an iterator of chunks of it (e.g. :meth:`ObjectStore.iter_frames`)."""
    from threadpoolctl import threadpool_limits

    chunks = (frame.iloc[i:i + chunk_rows] for i in range(0, len(frame), chunk_rows)) \
        if isinstance(frame, pd.DataFrame) else frame
    for chunk in chunks:
        with threadpool_limits(1):
            preds = predict_frame(pipeline, chunk[feature_columns], spec.task)
        out = pd.DataFrame({
            "row_key": row_keys(spec, chunk, feature_columns),
            spec.timestamp_column: chunk[spec.timestamp_column].to_numpy(),
            "prediction": preds["prediction"].to_numpy(),
        })
        if "probability" in preds:
            out["probability"] = preds["probability"].to_numpy()
        out["model_version"] = str(version)
        yield out


def write_batch_predictions(spec: ModelSpec, store: ObjectStore, day: dt.date, chunks: Iterator[pd.DataFrame]) -> dict:
    """Stream chunks into one Parquet file (written to a temp file, then stored atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, versions, score_sum = 0, set(), 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.parquet"
        writer = None
        try:
            for chunk in chunks:
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
                rows += len(chunk)
                versions.update(chunk["model_version"].unique())
                col = "probability" if "probability" in chunk else "prediction"
                if pd.api.types.is_numeric_dtype(chunk[col]):
                    score_sum += float(chunk[col].sum())
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"{spec.name}: no rows to score on {day}")
        uri = store.write_bytes(predictions_key(spec.name, day), path.read_bytes())
    return {"rows": rows, "model_versions": sorted(versions), "mean_score": score_sum / max(rows, 1), "uri": uri}


def drift_overrides(spec: ModelSpec, profile: drift.ReferenceProfile) -> dict[str, dict[str, Any]]:
    """The spec's per-kind test choice, as per-column overrides (a test fits only one column kind)."""
    out: dict[str, dict[str, Any]] = {}
    for columns, test in ((profile.numerical_columns, spec.drift.numerical_stattest),
                          (profile.categorical_columns, spec.drift.categorical_stattest)):
        if test:
            for c in columns:
                out[c] = {"stattest": test, **({"threshold": spec.drift.stattest_threshold}
                                               if spec.drift.stattest_threshold is not None else {})}
    return out


def day_drift(spec: ModelSpec, ref: ChampionReference, frame: pd.DataFrame,
              prediction_scores: pd.Series | None) -> tuple[drift.DriftResult, drift.DriftResult | None]:
    """Feature drift of one day against the champion's training reference, and prediction drift."""
    if frame.empty:
        raise ValueError(f"{spec.name}: the day has no rows to check for drift")
    features = drift.detect_drift(ref.features, frame, drift_share_threshold=spec.drift.drift_share,
                                  per_column_overrides=drift_overrides(spec, ref.features),
                                  threshold=spec.drift.stattest_threshold)
    pred = None
    if prediction_scores is not None and len(prediction_scores):
        pred = drift.detect_drift(ref.predictions, pd.DataFrame({PREDICTION_COLUMN: prediction_scores.to_numpy()}),
                                  drift_share_threshold=1.0)
    return features, pred


def realized_quality(spec: ModelSpec, labeled: pd.DataFrame, predictions: pd.DataFrame,
                     feature_columns: list[str]) -> dict[str, Any]:
    """Join a day's (late) labels to the predictions served for it; metric per serving version."""
    target = spec.target.column
    labeled = labeled[labeled[target].notna()]
    if labeled.empty:
        return {"labels_available": False, "labeled_rows": 0}
    keys = pd.DataFrame({"row_key": row_keys(spec, labeled, feature_columns), "label": labeled[target].to_numpy()})
    joined = predictions.merge(keys.drop_duplicates("row_key"), on="row_key", how="inner")
    if joined.empty:
        return {"labels_available": True, "labeled_rows": len(labeled), "matched_rows": 0}
    names = metric_names(spec)
    per_version = {}
    for version, part in joined.groupby("model_version"):
        preds = part[["prediction", *(["probability"] if "probability" in part else [])]].reset_index(drop=True)
        per_version[str(version)] = compute_metrics(spec.task, names, part["label"].reset_index(drop=True), preds,
                                                    spec.target.positive_class)
    rows_by_version = {str(v): int(n) for v, n in joined["model_version"].value_counts().items()}
    served = max(per_version, key=lambda v: rows_by_version[v])
    value = per_version[served][spec.metrics.primary]
    floor = spec.drift.quality_floor
    below = False
    if floor is not None and value == value:
        below = value < floor if spec.higher_is_better else value > floor
    return {"labels_available": True, "labeled_rows": len(labeled), "matched_rows": len(joined),
            "served_version": served, "metrics_by_version": per_version, "rows_by_version": rows_by_version,
            "realized": value,
            "quality_floor": floor, "below_floor": below}


# --- offline vs online agreement and champion staleness (read by the model_performance asset) ---
def holdout_metric(registry: Registry, model: str, version: str, metric: str) -> float | None:
    """The version's holdout ``metric`` as recorded at training (its ``mlplatform.holdout_metrics`` tag); None when
    the version or the record is gone (predictions can outlive a version cleaned up after a crashed run)."""
    import json

    from mlplatform_assets.lib.model.registry import RegistryError

    try:
        tags = registry.get_version(model, str(version)).tags or {}
    except RegistryError:
        return None
    value = json.loads(tags.get("mlplatform.holdout_metrics") or "{}").get(metric)
    return float(value) if isinstance(value, (int, float)) and value == value else None


def offline_online(spec: ModelSpec, quality: dict[str, Any], holdout: dict[str, float | None]) -> dict[str, dict]:
    """Per served version: its holdout (offline) and realized (online) primary metric and the gap, realized -
    holdout. ``diverged`` when ``monitoring.max_offline_online_gap`` is set, the version has at least
    ``offline_online_min_rows`` labeled rows that day and |gap| exceeds the maximum."""
    metric, cfg = spec.metrics.primary, spec.monitoring
    out = {}
    for version, metrics in quality.get("metrics_by_version", {}).items():
        realized, offline = metrics.get(metric), holdout.get(version)
        if offline is None or realized is None or realized != realized:
            continue
        gap, rows = realized - offline, quality["rows_by_version"][version]
        out[version] = {"holdout": offline, "realized": realized, "gap": gap, "rows": rows,
                        "diverged": bool(cfg.max_offline_online_gap is not None and rows >= cfg.offline_online_min_rows
                                         and abs(gap) > cfg.max_offline_online_gap)}
    return out


def champion_staleness(registry: Registry, model: str, day: dt.date) -> dict[str, Any] | None:
    """The champion's age on ``day`` (days since its training data ended) against the retraining cadence its
    backtest measured; ``stale`` when older. None without a champion."""
    from mlplatform_assets.lib.model.registry import TAG_PARTITIONS
    from mlplatform_assets.lib.model.staleness import CADENCE_METRIC, champion_age_days

    champ = registry.champion(model)
    if champ is None:
        return None
    run = registry.client.get_run(champ.run_id)
    age = champion_age_days(run.data.tags.get(TAG_PARTITIONS, ""), day)
    cadence = run.data.metrics.get(CADENCE_METRIC)
    return {"version": str(champ.version), "age_days": age, "cadence_days": None if cadence is None else int(cadence),
            "stale": age is not None and cadence is not None and age > cadence}


def agreement_alerts(spec: ModelSpec, day: dt.date, agreement: dict[str, dict],
                     staleness: dict[str, Any] | None) -> list[Any]:
    """The ``offline_online_divergence`` and ``champion_stale`` alerts of one monitored day."""
    from mlplatform_assets.lib.monitoring.alerts import Alert

    name, metric, asset = spec.name, spec.metrics.primary, f"{spec.name}/model_performance"
    alerts = [Alert(kind="offline_online_divergence", model=name, asset=asset, partition=str(day),
                    message=f"{name}: v{v} realized {metric} {a['realized']:.4g} on {day} is {a['gap']:+.4g} from its "
                            f"holdout {a['holdout']:.4g} (max gap {spec.monitoring.max_offline_online_gap:g}): "
                            "training-serving skew, leakage or a changed population",
                    details={"version": v, **a, "max_gap": spec.monitoring.max_offline_online_gap})
              for v, a in agreement.items() if a["diverged"]]
    if staleness and staleness["stale"]:
        alerts.append(Alert(kind="champion_stale", model=name, asset=asset, partition=str(day),
                            message=f"{name}: champion v{staleness['version']} is {staleness['age_days']} days past "
                                    f"its training data on {day}; its backtest expects {metric} to hold for "
                                    f"{staleness['cadence_days']} day(s): retrain",
                            details=staleness))
    return alerts
