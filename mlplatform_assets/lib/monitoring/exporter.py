"""Model health as Prometheus metrics: what the platform's durable state says about each model.

The state lives in four places, each read by one *reader* (a callable, so each is testable and the Dagster
one can live outside ``lib``, which never imports Dagster):

========== ==================================================================================================
``specs``  the model specs (which models exist, their primary metric)
``dagster`` the latest materialization of validated_data (last successful ingest), trained_model (last
           training), drift_report and model_performance (latest day) per model, from the Dagster instance
``mlflow`` the champion version and the alias audit trail (promotions, rollbacks, rejected challengers)
``alerts`` the alerts log (counts per kind: drift, retrain_storm_blocked, quality_floor, ...)
========== ==================================================================================================

Pull, not push: the exporter is a long-lived process that Prometheus scrapes (``mlplatform exporter``).
A Pushgateway suits batch jobs that die before a scrape; here every value is already durable, so reading it
at scrape time can never report a value that was lost, and a dead exporter is visible as ``up == 0``.

Each scrape serves a snapshot at most ``cache_seconds`` old: one refresh at a time (a scrape storm, or two
Prometheus replicas, cost the stores one read per period). A reader that fails does not fail the scrape:
its metrics are left out, ``mlplatform_exporter_source_up{source}`` drops to 0 and
``mlplatform_exporter_scrape_errors_total{source}`` counts it (the error is logged by type only: a store URL
may hold a password).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

SOURCES = ("specs", "dagster", "mlflow", "alerts")
# What the materializations reader returns per model, by role (the Dagster reader maps each role to its asset):
INGEST = "ingest"  # last validated_data materialization: data that passed every blocking ingest check
TRAINING = "training"  # last trained_model materialization
DRIFT = "drift"  # drift_report of the newest monitored day
PERFORMANCE = "performance"  # model_performance of the newest monitored day


@dataclass(frozen=True)
class Materialization:
    """One asset materialization: when it happened (unix seconds), its partition, its metadata as plain values."""

    timestamp: float
    partition: str | None
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class RegistryState:
    champion_version: int | None
    promotions: int  # alias moves that promoted a version (the first champion included)
    rollbacks: int
    rejections: int  # challengers the evaluation gate kept out


# Reader signatures: specs() -> {model: primary metric}; the others take the model names.
SpecsReader = Callable[[], Mapping[str, str]]
MaterializationsReader = Callable[[list[str]], Mapping[str, Mapping[str, Materialization]]]
RegistryReader = Callable[[list[str]], Mapping[str, RegistryState]]
AlertsReader = Callable[[list[str]], Mapping[str, Mapping[str, int]]]


def registry_reader(registry: Any) -> RegistryReader:
    """Champion and audit-trail counts from a :class:`~mlplatform_assets.lib.model.registry.Registry`."""

    def read(models: list[str]) -> dict[str, RegistryState]:
        states = {}
        for model in models:
            champion = registry.champion(model)
            decisions = [rec.get("decision") for rec in registry.audit_records(model)]
            states[model] = RegistryState(champion_version=int(champion.version) if champion is not None else None,
                                          promotions=decisions.count("promoted"),
                                          rollbacks=decisions.count("rolled_back"),
                                          rejections=decisions.count("kept_champion"))
        return states

    return read


def alerts_reader(alerts_log_path: str) -> AlertsReader:
    """Alert counts per model and kind from the alerts log (every known kind present, 0 when none).

    The log is followed (:class:`~mlplatform_assets.lib.data.storage.RecordTail`): each read parses only the
    records appended since the last one, so a scrape costs what is new, not the log's whole history (on S3,
    one GET per record). A replaced log starts the counts again, which Prometheus reads as a counter reset."""
    from mlplatform_assets.lib.data.storage import RecordTail
    from mlplatform_assets.lib.monitoring.alerts import ALERT_KINDS

    tail = RecordTail(alerts_log_path)
    totals: dict[tuple[str, str], int] = {}

    def read(models: list[str]) -> dict[str, dict[str, int]]:
        new = tail.read_new()
        if tail.restarted:
            totals.clear()
        for record in new:
            key = (record.get("model"), record.get("kind"))
            totals[key] = totals.get(key, 0) + 1
        return {model: {kind: totals.get((model, kind), 0) for kind in ALERT_KINDS} for model in models}

    return read


def specs_reader(models_dir: str, state_dir: str | None = None) -> SpecsReader:
    def read() -> dict[str, str]:
        from mlplatform_assets.lib.spec import load_specs

        return {spec.name: spec.metrics.primary for spec in load_specs(models_dir, state_dir)}

    return read


def _day_start(partition: str | None) -> float | None:
    try:
        day = dt.date.fromisoformat(partition or "")
    except ValueError:
        return None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


@dataclass
class _Families:
    """The metric families of one snapshot, built model by model."""

    items: dict[str, Metric] = field(default_factory=dict)

    def gauge(self, name: str, doc: str, labels: dict[str, str], value: Any) -> None:
        self._add(GaugeMetricFamily, name, doc, labels, value)

    def counter(self, name: str, doc: str, labels: dict[str, str], value: Any) -> None:
        self._add(CounterMetricFamily, name, doc, labels, value)

    def _add(self, kind: type, name: str, doc: str, labels: dict[str, str], value: Any) -> None:
        if value is None:
            return  # not known (e.g. no drift report yet): no sample rather than a misleading 0
        family = self.items.get(name)
        if family is None:
            family = self.items[name] = kind(name, doc, labels=list(labels))
        family.add_metric(list(labels.values()), float(value))


def _drift_families(out: _Families, model: str, m: Materialization) -> None:
    meta, labels = m.metadata, {"model": model}
    out.gauge("mlplatform_model_drift_share", "Share of feature columns drifted on the latest monitored day",
              labels, meta.get("drift_share"))
    out.gauge("mlplatform_model_drift_share_threshold", "Drift share at which the day counts as dataset drift",
              labels, meta.get("drift_share_threshold"))
    out.gauge("mlplatform_model_drifted_columns", "Feature columns drifted on the latest monitored day",
              labels, meta.get("n_drifted_columns"))
    out.gauge("mlplatform_model_monitored_columns", "Feature columns tested for drift", labels, meta.get("n_columns"))
    out.gauge("mlplatform_model_dataset_drift", "1 if the latest monitored day shows dataset drift",
              labels, meta.get("dataset_drift"))
    out.gauge("mlplatform_model_prediction_drift_score", "Prediction drift test statistic on the latest day",
              labels, meta.get("prediction_drift_score"))
    out.gauge("mlplatform_model_prediction_drift", "1 if the predictions drifted on the latest monitored day",
              labels, meta.get("prediction_drift"))
    out.gauge("mlplatform_model_drift_report_day_timestamp_seconds",
              "Start (UTC) of the newest day with a drift report", labels, _day_start(m.partition))


def _performance_families(out: _Families, model: str, primary: str, m: Materialization) -> None:
    meta, labels = m.metadata, {"model": model}
    realized = meta.get(f"realized_{primary}")
    if realized is None:
        return  # that day's labels have not arrived yet
    metric_labels = {"model": model, "metric": primary}
    out.gauge("mlplatform_model_realized_quality",
              "Primary metric of the served version on the newest day with labels", metric_labels, realized)
    out.gauge("mlplatform_model_quality_floor", "The spec's quality floor for the primary metric",
              metric_labels, meta.get("quality_floor"))
    out.gauge("mlplatform_model_below_quality_floor", "1 if the newest labelled day is below the quality floor",
              labels, meta.get("below_floor"))
    served = meta.get("served_version")
    out.gauge("mlplatform_model_quality_served_version", "Version whose realized quality is reported",
              labels, int(served) if str(served or "").isdigit() else None)
    out.gauge("mlplatform_model_quality_day_timestamp_seconds", "Start (UTC) of the newest day with realized quality",
              labels, _day_start(m.partition))


def model_families(out: _Families, model: str, primary: str, materializations: Mapping[str, Materialization] | None,
                   registry: RegistryState | None, alerts: Mapping[str, int] | None) -> None:
    """Every per-model family; a source that could not be read (None) contributes nothing."""
    labels = {"model": model}
    mats = materializations or {}
    if INGEST in mats:
        out.gauge("mlplatform_model_last_ingest_timestamp_seconds",
                  "When data last passed ingest validation (validated_data materialized)", labels, mats[INGEST].timestamp)
    if TRAINING in mats:
        out.gauge("mlplatform_model_last_training_timestamp_seconds", "When a model was last trained and registered",
                  labels, mats[TRAINING].timestamp)
    if DRIFT in mats:
        _drift_families(out, model, mats[DRIFT])
    if PERFORMANCE in mats:
        _performance_families(out, model, primary, mats[PERFORMANCE])
    if registry is not None:
        out.gauge("mlplatform_model_champion_version", "Registered version with the champion alias (0: none)",
                  labels, registry.champion_version or 0)
        out.counter("mlplatform_model_promotions", "Champion promotions recorded in the audit trail",
                    labels, registry.promotions)
        out.counter("mlplatform_model_rollbacks", "Champion rollbacks recorded in the audit trail",
                    labels, registry.rollbacks)
        out.counter("mlplatform_model_rejected_challengers", "Challengers the evaluation gate kept out",
                    labels, registry.rejections)
    for kind, count in sorted((alerts or {}).items()):
        out.counter("mlplatform_model_alerts", "Alerts recorded in the alerts log, by kind",
                    {"model": model, "kind": kind}, count)


class ModelHealthCollector:
    """A prometheus_client collector over the four readers, with a snapshot cache (see the module doc)."""

    def __init__(self, *, specs: SpecsReader, materializations: MaterializationsReader, registry: RegistryReader,
                 alerts: AlertsReader, cache_seconds: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self._readers: dict[str, Callable] = {"specs": specs, "dagster": materializations, "mlflow": registry,
                                              "alerts": alerts}
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: list[Metric] | None = None
        self._refreshed_at: float | None = None
        self._models: dict[str, str] = {}  # last good spec read: a broken spec edit keeps the known models
        self.errors = dict.fromkeys(SOURCES, 0)
        self.up = dict.fromkeys(SOURCES, 0)
        self.refreshes = 0

    def _read(self, source: str, *args: Any) -> Any:
        try:
            value = self._readers[source](*args)
        except Exception as exc:  # noqa: BLE001 - one unreachable store must not take the others' metrics down
            self.errors[source] += 1
            self.up[source] = 0
            log.warning("exporter: reading %s failed: %s", source, type(exc).__name__)
            return None
        self.up[source] = 1
        return value

    def refresh(self) -> list[Metric]:
        started = time.time()
        specs = self._read("specs")
        if specs is not None:
            self._models = dict(specs)
        names = sorted(self._models)
        mats = self._read("dagster", names) or {}
        registry = self._read("mlflow", names) or {}
        alerts = self._read("alerts", names) or {}
        out = _Families()
        for model in names:
            model_families(out, model, self._models[model], mats.get(model), registry.get(model), alerts.get(model))
        out.gauge("mlplatform_exporter_last_refresh_timestamp_seconds", "When the exporter last read the stores",
                  {}, time.time())
        out.gauge("mlplatform_exporter_refresh_duration_seconds", "How long the last read of the stores took",
                  {}, time.time() - started)
        out.gauge("mlplatform_exporter_models", "Models the exporter reports on (from the specs)", {}, len(names))
        self.refreshes += 1
        return list(out.items.values())

    def collect(self) -> Iterable[Metric]:
        with self._lock:  # concurrent scrapes wait for one refresh instead of each reading the stores
            now = self._clock()
            if self._snapshot is None or self._refreshed_at is None or now - self._refreshed_at >= self.cache_seconds:
                self._snapshot = self.refresh()
                self._refreshed_at = now
            snapshot = list(self._snapshot)
            up = GaugeMetricFamily("mlplatform_exporter_source_up", "1 if the last read of the source succeeded",
                                   labels=["source"])
            errors = CounterMetricFamily("mlplatform_exporter_scrape_errors",
                                         "Failed reads of a source since the exporter started", labels=["source"])
            for source in SOURCES:
                up.add_metric([source], self.up[source])
                errors.add_metric([source], self.errors[source])
        return [*snapshot, up, errors]

    def describe(self) -> Iterable[Metric]:
        return []  # no describe-time read of the stores when the collector is registered
