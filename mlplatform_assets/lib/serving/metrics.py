"""Prometheus metrics of one serving process (or, with several workers, of all of them).

With ``workers > 1`` the service runs prometheus_client in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` is set to a fresh directory by :func:`serve` before the worker
processes start), so whichever worker answers ``GET /metrics`` reports the SUM of the counters
and histograms of all workers; gauges that are per-process by nature (loaded model version,
pickle flag) carry a ``pid`` label, in-flight requests are summed over live workers.

Process metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``, ``process_open_fds``, ...)
and ``python_info`` are exported too. With one worker they are the standard collectors (plus Python GC
statistics). With several, each live worker's process metrics carry a ``pid`` label (read from /proc for
every live worker, whichever worker answers), so ``sum without (pid) (...)`` is the whole pod: summing
them in one unlabelled series would go backwards when a worker restarts; picking the answering worker's
would jump between workers from scrape to scrape.
"""

from __future__ import annotations

import os
import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PROBA_BUCKETS = tuple(i / 10 for i in range(1, 11))
VALUE_BUCKETS = (-1e6, -1e4, -1e3, -100.0, -10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e6)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
# Why the server refused a connection or request (label values of mlplatform_serving_rejections_total).
REJECTION_REASONS = ("header_too_large", "header_timeout", "idle_timeout", "body_timeout", "upgrade",
                     "evicted", "probe_only", "over_capacity", "body_budget")


def multiprocess_dir() -> str | None:
    from mlplatform_assets.lib import config

    return config.read(config.ENV_PROMETHEUS_MULTIPROC_DIR)


# Files prometheus_client writes per process for "live" gauges; mark_process_dead removes them, so the pids
# in these names are the workers that are (or were until a crash) serving.
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def _live_worker_pids(path: str) -> list[int]:
    pids = {int(m.group(1)) for name in os.listdir(path) if (m := _LIVE_GAUGE_FILE.match(name))}
    return sorted(pid for pid in pids if os.path.exists(f"/proc/{pid}"))  # a SIGKILLed worker left its files


class WorkerProcessCollector:
    """``process_*`` metrics of every live worker of a multi-worker server, each sample labelled ``pid``."""

    def __init__(self, path: str):
        self.path = path

    def collect(self):  # noqa: ANN201 - Iterable[Metric]
        families: dict[str, Metric] = {}
        for pid in _live_worker_pids(self.path):
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)}, sample.value)
        return list(families.values())


class ServingMetrics:
    def __init__(self, model_name: str):
        self.model_name = model_name
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("mlplatform_serving_requests_total", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.latency = Histogram("mlplatform_serving_request_duration_seconds", "Request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("mlplatform_serving_in_flight_requests", "Requests being served",
                               registry=r, multiprocess_mode="livesum")
        self.model_version = Gauge("mlplatform_serving_model_version", "Registered version being served (0: none)",
                                   ["model"], registry=r, multiprocess_mode="liveall")
        self.reloads = Counter("mlplatform_serving_model_reloads_total", "Successful model (re)loads",
                               ["model"], registry=r)
        self.reload_failures = Counter("mlplatform_serving_model_reload_failures_total",
                                       "Model versions that failed to load (the previous one kept serving)",
                                       ["model"], registry=r)
        self.poll_errors = Counter("mlplatform_serving_registry_poll_errors_total",
                                   "Registry polls that failed", ["model"], registry=r)
        self.predictions = Counter("mlplatform_serving_predictions_total", "Rows predicted",
                                   ["model", "version"], registry=r)
        self.prediction_value = Histogram(
            "mlplatform_serving_prediction_value",
            "Distribution of predicted values (regressors)",
            ["model"], buckets=VALUE_BUCKETS, registry=r)
        self.prediction_proba = Histogram(
            "mlplatform_serving_prediction_probability",
            "Distribution of the positive-class (binary) or top-class (multiclass) probability",
            ["model"], buckets=PROBA_BUCKETS, registry=r)
        self.predicted_class = Counter("mlplatform_serving_predicted_class_total", "Predicted classes",
                                       ["model", "class"], registry=r)
        self.batch_rows = Histogram("mlplatform_serving_batch_rows", "Rows per model call (dynamic batching)",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.auth_failures = Counter("mlplatform_serving_auth_failures_total", "Rejected credentials",
                                     ["reason"], registry=r)
        self.log_rows = Counter("mlplatform_serving_prediction_log_rows_written_total",
                                "Rows written to the prediction log", registry=r)
        self.log_dropped = Counter("mlplatform_serving_prediction_log_rows_dropped_total",
                                   "Rows the prediction log could not write", registry=r)
        self.log_spool_errors = Counter("mlplatform_serving_prediction_log_spool_errors_total",
                                        "Spool appends that failed (those rows are only held in memory)", registry=r)
        self.open_connections = Gauge("mlplatform_serving_open_connections", "Open client connections",
                                      registry=r, multiprocess_mode="livesum")
        self.body_bytes_held = Gauge("mlplatform_serving_request_body_bytes_held",
                                     "Request body bytes reserved by requests in progress (see the body budget)",
                                     registry=r, multiprocess_mode="livesum")
        self.rejections = Counter("mlplatform_serving_rejections_total",
                                  "Requests or connections refused by a server limit", ["reason"], registry=r)
        self.auth_enabled = Gauge("mlplatform_serving_auth_enabled", "1 if API keys are required, 0 if switched off",
                                  registry=r, multiprocess_mode="liveall")
        self.pickle_allowed = Gauge("mlplatform_serving_pickle_deserialization_allowed",
                                    "1 if MLFLOW_ALLOW_PICKLE_DESERIALIZATION is true in this process",
                                    registry=r, multiprocess_mode="liveall")
        # The standard process/platform/GC collectors (the custom registry has none by default).
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.model_version.labels(model_name).set(0)
        for counter in (self.reloads, self.reload_failures, self.poll_errors):
            counter.labels(model_name)  # export 0 before the first event
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        self._req_children = {}
        self._lat_children = {}

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        child = self._req_children.get(key)
        if child is None:
            child = self._req_children[key] = self.requests.labels(route, str(status))
        child.inc()
        lat = self._lat_children.get(route)
        if lat is None:
            lat = self._lat_children[route] = self.latency.labels(route)
        lat.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        mp = multiprocess_dir()
        if mp:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=mp)
            registry.register(WorkerProcessCollector(mp))
            PlatformCollector(registry=registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def mark_dead(self) -> None:
        mp = multiprocess_dir()
        if mp:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), path=mp)
