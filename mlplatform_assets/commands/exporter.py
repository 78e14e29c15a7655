"""``mlplatform exporter``: serve model health (:mod:`mlplatform_assets.lib.monitoring.exporter`) to Prometheus.

This module holds the one part that reads the Dagster instance (``lib`` never imports Dagster) and the HTTP
server: prometheus_client's threaded WSGI server and metrics app, ``GET /metrics`` (any path answers with the
metrics) and ``GET /healthz``, which answers at once without reading any store (the Kubernetes probes).
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any, Callable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, make_server

import dagster as dg
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from mlplatform_assets.defs import names
from mlplatform_assets.lib.config import PlatformConfig
from mlplatform_assets.lib.monitoring import exporter as health
from mlplatform_assets.lib.monitoring.exporter import (
    Materialization,
    MaterializationsReader,
    ModelHealthCollector,
    alerts_reader,
    registry_reader,
    specs_reader,
)

DEFAULT_CACHE_SECONDS = 15.0
HEALTH_PATH = "/healthz"
# role -> (asset, read its newest daily partition rather than its newest run)
HEALTH_ASSETS = {health.INGEST: (names.VALIDATED_DATA, False), health.TRAINING: (names.TRAINED_MODEL, False),
                 health.DRIFT: (names.DRIFT_REPORT, True), health.PERFORMANCE: (names.MODEL_PERFORMANCE, True)}


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def _materialization(entry: Any) -> Materialization | None:
    mat = entry.asset_materialization if entry is not None else None
    if mat is None:
        return None
    return Materialization(timestamp=entry.timestamp, partition=mat.partition,
                           metadata={k: _plain(v) for k, v in mat.metadata.items()})


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey, newest_day: bool) -> Materialization | None:
    """The newest materialization of ``key``; with ``newest_day``, the newest one of its newest daily partition
    (partition keys are ISO dates, so the largest is the newest day): a backfill of an old day run later
    must not replace the current day's drift or quality."""
    if not newest_day:
        return _materialization(instance.get_latest_materialization_event(key))
    partitions = instance.get_materialized_partitions(key)
    if not partitions:
        return None
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key, asset_partitions=[max(partitions)]),
                                              limit=1).records
    return _materialization(records[0].event_log_entry) if records else None


def dagster_reader(open_instance: Callable[[], dg.DagsterInstance]) -> MaterializationsReader:
    """Reads the newest health materializations. The instance is opened on the first read, and again on each
    later read until opening succeeds (the collector reports a failed read as the source being down)."""
    instance: dg.DagsterInstance | None = None

    def read(models: list[str]) -> dict[str, Mapping[str, Materialization]]:
        nonlocal instance
        if instance is None:
            instance = open_instance()
        out: dict[str, Mapping[str, Materialization]] = {}
        for model in models:
            found = {role: latest_materialization(instance, names.asset_key(model, asset), newest_day)
                     for role, (asset, newest_day) in HEALTH_ASSETS.items()}
            out[model] = {role: m for role, m in found.items() if m is not None}
        return out

    return read


def build_collector(config: PlatformConfig, open_instance: Callable[[], dg.DagsterInstance], registry: Any,
                    cache_seconds: float = DEFAULT_CACHE_SECONDS) -> ModelHealthCollector:
    return ModelHealthCollector(specs=specs_reader(config.models_dir, config.state_dir),
                                materializations=dagster_reader(open_instance), registry=registry_reader(registry),
                                alerts=alerts_reader(config.alerts_log_path), cache_seconds=cache_seconds)


def exporter_app(registry: CollectorRegistry) -> Callable:
    """WSGI app: ``GET /healthz`` answers 200 at once, every other request goes to prometheus_client's metrics
    app. Probes use /healthz, never /metrics: a scrape reads the stores, and a slow or unreachable store must
    show as ``mlplatform_exporter_source_up=0``, not as a restarted or unready pod (which would hide the
    cause behind "exporter down")."""
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO") == HEALTH_PATH and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        return metrics_app(environ, start_response)

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt: str, *args: Any) -> None:
        """Nothing: scrapes and probes every few seconds would drown the log."""


def start_exporter(collector: ModelHealthCollector, host: str, port: int):  # noqa: ANN201 - (server, thread)
    """Serve ``collector`` on ``host:port`` in a background thread; ``server.shutdown()`` stops it."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    # IPv4 or IPv6, whichever ``host`` names (prometheus_client's start_http_server does the same).
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    server_class = type("ExporterServer", (ThreadingWSGIServer,), {"address_family": family})
    server = make_server(host, port, exporter_app(registry), server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="mlplatform-exporter", daemon=True)
    thread.start()
    return server, thread


def run_exporter(collector: ModelHealthCollector, host: str, port: int, out: Any) -> None:
    """Serve until SIGTERM or SIGINT."""
    server, thread = start_exporter(collector, host, port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"mlplatform exporter: model health on http://{host}:{server.server_port}/metrics "
          f"(stores read at most every {collector.cache_seconds:g} s)", file=out, flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
