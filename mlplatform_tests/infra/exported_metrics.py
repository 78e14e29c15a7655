"""Every metric name the platform exports, from real scrapes: a serving endpoint's /metrics and the model-health
exporter's /metrics, both over HTTP on 127.0.0.1. Rules and the dashboard may only query these (or ``up``).

The serving endpoint runs against an empty MLflow store (no model: every family is declared, labelled ones
without samples yet). The exporter runs over readers reporting a complete state (every asset materialized, a
quality floor set), so every family it can export appears; test_exporter.py checks the same families come out
of a real lifecycle.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from mlplatform_assets.lib.monitoring import exporter as health

# Series Prometheus itself creates for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created")}


def names_in_exposition(text: str) -> set[str]:
    """The series names a scrape of ``text`` creates; a family without samples yet (a labelled metric nobody
    has touched) contributes the names its type will create (a counter ``<name>_total``, a histogram
    ``<name>_bucket``/``_sum``/``_count``, a gauge its own name)."""
    names = set()
    for family in text_string_to_metric_families(text):
        if family.samples:
            names.update(sample.name for sample in family.samples)
        else:
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def full_health_collector() -> health.ModelHealthCollector:
    day = "2026-06-02"
    mats = {"m": {
        health.INGEST: health.Materialization(1.0, day, {}),
        health.TRAINING: health.Materialization(2.0, None, {}),
        health.DRIFT: health.Materialization(3.0, day, {
            "drift_share": 0.5, "drift_share_threshold": 0.5, "n_drifted_columns": 2, "n_columns": 4,
            "dataset_drift": True, "prediction_drift_score": 0.1, "prediction_drift": False}),
        health.PERFORMANCE: health.Materialization(4.0, day, {
            "realized_roc_auc": 0.8, "quality_floor": 0.7, "below_floor": False, "served_version": "3"}),
    }}
    return health.ModelHealthCollector(
        specs=lambda: {"m": "roc_auc"}, materializations=lambda models: mats,
        registry=lambda models: {"m": health.RegistryState(3, promotions=3, rollbacks=1, rejections=1)},
        alerts=lambda models: {"m": {"drift": 1, "retrain_storm_blocked": 0}})


def exporter_metric_names() -> set[str]:
    from mlplatform_assets.commands.exporter import start_exporter

    server, thread = start_exporter(full_health_collector(), "127.0.0.1", 0)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=30).text
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    return names_in_exposition(text)


def serving_metric_names(tmp_dir) -> set[str]:
    from mlplatform_assets.lib.serving import ThreadedServer, create_app
    from mlplatform_assets.lib.serving.testing import make_config

    app = create_app("metrics-probe", make_config(tmp_dir), harden_env=False, poll_interval_s=60,
                     api_keys=[], revoked_api_keys=[], allow_unauthenticated=True, prediction_log=False)
    server = ThreadedServer(app).start()
    try:
        text = httpx.get(server.url + "/metrics", timeout=30).text
    finally:
        server.stop()
    return names_in_exposition(text)
