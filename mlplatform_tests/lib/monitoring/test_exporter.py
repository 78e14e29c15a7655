"""The model-health exporter: real lifecycle, real Dagster instance, real MLflow store, scraped over HTTP."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.commands.exporter import build_collector, start_exporter
from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.monitoring.alerts import Alert, read_alerts, send_alert
from mlplatform_assets.lib.monitoring.exporter import (
    SOURCES,
    Materialization,
    ModelHealthCollector,
    RegistryState,
    alerts_reader,
)
from mlplatform_assets.lib.spec import load_specs
from mlplatform_tests.conftest import SMALL_END, free_port, wait_for_http, write_small_spec

REPO = Path(__file__).resolve().parents[3]


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value of one real GET."""
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text[:500]
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def _meta(result, asset):
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset]
    return {k: getattr(v, "value", v) for k, v in event.event_specific_data.materialization.metadata.items()}


def _day_start(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp()


def test_exporter_reports_model_health_from_the_real_stores(platform_env, small_source):
    write_small_spec(Path(platform_env.models_dir), small_source)
    assert run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]["success"]
    instance = dg.DagsterInstance.get()
    defs = build_definitions(platform_env, load_specs(platform_env.models_dir, platform_env.state_dir))
    normal, drifted = SMALL_END + dt.timedelta(days=1), SMALL_END + dt.timedelta(days=2)
    example_data.write_example_days("customer_churn", small_source, [normal], rows=300)
    example_data.write_example_days("customer_churn", small_source, [drifted], rows=300, drift=True)
    for day in (normal, drifted):
        assert defs.resolve_job_def("small_churn__ingest").execute_in_process(
            instance=instance, partition_key=str(day)).success
    monitoring = defs.resolve_job_def("small_churn__monitoring")
    shifted = monitoring.execute_in_process(instance=instance, partition_key=str(drifted))
    assert shifted.success
    drift_meta, perf_meta = _meta(shifted, "drift_report"), _meta(shifted, "model_performance")
    assert drift_meta["dataset_drift"] is True
    # Monitoring an OLDER day afterwards (a backfill) must not replace the newest day's drift and quality.
    assert monitoring.execute_in_process(instance=instance, partition_key=str(normal)).success
    send_alert(Alert(kind="retrain_storm_blocked", model="small_churn", message="3 retrains in 24 h"),
               platform_env.alerts_log_path, sinks=[])
    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)

    collector = build_collector(platform_env, lambda: instance, registry, cache_seconds=300)
    server, thread = start_exporter(collector, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        s = scrape(url)
        m = {"model": "small_churn"}
        assert value(s, "mlplatform_model_drift_share", **m) == pytest.approx(drift_meta["drift_share"])
        assert value(s, "mlplatform_model_drifted_columns", **m) == drift_meta["n_drifted_columns"] >= 3
        assert value(s, "mlplatform_model_monitored_columns", **m) == drift_meta["n_columns"]
        assert value(s, "mlplatform_model_dataset_drift", **m) == 1
        assert value(s, "mlplatform_model_prediction_drift_score", **m) == pytest.approx(
            drift_meta["prediction_drift_score"])
        assert value(s, "mlplatform_model_prediction_drift", **m) == float(drift_meta["prediction_drift"])
        assert value(s, "mlplatform_model_drift_report_day_timestamp_seconds", **m) == _day_start(drifted)
        assert value(s, "mlplatform_model_realized_quality", metric="roc_auc", **m) == pytest.approx(
            perf_meta["realized_roc_auc"])
        assert value(s, "mlplatform_model_below_quality_floor", **m) == float(perf_meta["below_floor"]) == 0
        assert value(s, "mlplatform_model_quality_served_version", **m) == 1
        assert ("mlplatform_model_quality_floor", frozenset({**m, "metric": "roc_auc"}.items())) not in s  # no floor
        ingest = instance.get_latest_materialization_event(dg.AssetKey(["small_churn", "validated_data"]))
        trained = instance.get_latest_materialization_event(dg.AssetKey(["small_churn", "trained_model"]))
        assert value(s, "mlplatform_model_last_ingest_timestamp_seconds", **m) == pytest.approx(ingest.timestamp)
        assert value(s, "mlplatform_model_last_training_timestamp_seconds", **m) == pytest.approx(trained.timestamp)
        assert value(s, "mlplatform_model_champion_version", **m) == int(registry.champion("small_churn").version) == 1
        decisions = [r["decision"] for r in registry.audit_records("small_churn")]
        assert value(s, "mlplatform_model_promotions_total", **m) == decisions.count("promoted") == 1
        assert value(s, "mlplatform_model_rollbacks_total", **m) == 0
        logged = [a["kind"] for a in read_alerts(platform_env.alerts_log_path, model="small_churn")]
        for kind in ("retrain_storm_blocked", "drift", "quality_floor", "rollback"):
            assert value(s, "mlplatform_model_alerts_total", kind=kind, **m) == logged.count(kind)
        assert value(s, "mlplatform_model_alerts_total", kind="retrain_storm_blocked", **m) == 1
        # Every series the rules and dashboard may use (test_prometheus_rules.py checks them against a complete
        # synthetic state) also comes out of this real one; only the floor is missing: this spec sets none.
        from mlplatform_tests.infra.exported_metrics import exporter_metric_names

        assert exporter_metric_names() - {name for name, _ in s} == {"mlplatform_model_quality_floor"}
        for source in SOURCES:
            assert value(s, "mlplatform_exporter_source_up", source=source) == 1
            assert value(s, "mlplatform_exporter_scrape_errors_total", source=source) == 0

        # A scrape within the cache period is served from the snapshot: the stores are read once.
        scrape(url)
        assert collector.refreshes == 1

        # One unreadable store: its metrics go, the others stay, the scrape still answers 200.
        Path(platform_env.alerts_log_path).write_text("{not json\n")
        collector.cache_seconds = 0
        s = scrape(url)
        assert value(s, "mlplatform_exporter_source_up", source="alerts") == 0
        assert value(s, "mlplatform_exporter_scrape_errors_total", source="alerts") == 1
        assert not any(name == "mlplatform_model_alerts_total" for name, _ in s)
        assert value(s, "mlplatform_model_champion_version", **m) == 1
        assert value(s, "mlplatform_exporter_source_up", source="dagster") == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_exporter_command_serves_until_sigterm(platform_env, tmp_path):
    """``mlplatform exporter`` as a process: listens on 127.0.0.1, answers /metrics, exits 0 on SIGTERM."""
    port = free_port()
    log = tmp_path / "exporter.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlplatform_assets.cli", "exporter", "--port", str(port)],
                                cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/metrics", timeout=60, proc=proc)
        s = scrape(f"http://127.0.0.1:{port}/metrics")
        assert value(s, "mlplatform_exporter_models") == 0  # an empty models dir: nothing to report, no error
        assert all(value(s, "mlplatform_exporter_source_up", source=src) == 1 for src in SOURCES)
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    assert rc == 0, log.read_text()[-3000:]
    assert f"http://127.0.0.1:{port}/metrics" in log.read_text()


def test_healthz_answers_without_reading_any_store():
    """The probe path never touches the stores: with every store failing it is still 200 (the scrape then
    reports each source down), and probing reads nothing."""
    collector, calls = _collector(lambda: 0.0, fail=set(SOURCES))
    server, thread = start_exporter(collector, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        for _ in range(3):
            health = httpx.get(f"{base}/healthz", timeout=10)
            assert (health.status_code, health.text) == (200, "ok\n")
        assert calls == []
        metrics = scrape(f"{base}/metrics")
        assert all(value(metrics, "mlplatform_exporter_source_up", source=src) == 0 for src in SOURCES)
        assert sorted(calls) == sorted(SOURCES)
        assert httpx.post(f"{base}/healthz", timeout=10).status_code == 405  # only GET/HEAD, as /metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _collector(clock, fail: set[str], models=None):
    calls = []

    def reader(source, result):
        def read(*args):
            calls.append(source)
            if source in fail:
                raise ConnectionError("postgresql://user:s3cret@db/x unreachable")
            return result
        return read

    mats = {"m": {"drift": Materialization(1.0, "2026-06-02", {"drift_share": 0.5})}}
    return ModelHealthCollector(
        specs=reader("specs", models if models is not None else {"m": "roc_auc"}),
        materializations=reader("dagster", mats),
        registry=reader("mlflow", {"m": RegistryState(3, promotions=4, rollbacks=1, rejections=2)}),
        alerts=reader("alerts", {"m": {"drift": 2}}), cache_seconds=15, clock=clock), calls


def _samples(collector):
    return {(s.name, frozenset(s.labels.items())): s.value for f in collector.collect() for s in f.samples}


def test_cache_period_and_a_broken_spec_edit_keeps_the_known_models(caplog):
    now = [100.0]
    collector, calls = _collector(lambda: now[0], fail=set())
    first = _samples(collector)
    assert value(first, "mlplatform_model_champion_version", model="m") == 3
    assert value(first, "mlplatform_model_rollbacks_total", model="m") == 1
    assert value(first, "mlplatform_model_rejected_challengers_total", model="m") == 2
    assert value(first, "mlplatform_model_drift_share", model="m") == 0.5
    now[0] += 14.9
    _samples(collector)
    assert calls.count("dagster") == 1  # within the period: served from the snapshot
    now[0] += 0.2
    _samples(collector)
    assert calls.count("dagster") == 2

    # The specs become unreadable: the models known from the last good read are still reported.
    collector._readers["specs"] = lambda: (_ for _ in ()).throw(ValueError("bad yaml"))
    now[0] += 60
    later = _samples(collector)
    assert value(later, "mlplatform_exporter_source_up", source="specs") == 0
    assert value(later, "mlplatform_model_champion_version", model="m") == 3
    assert "s3cret" not in caplog.text


def test_a_failing_store_is_counted_and_never_leaks_its_url(caplog):
    collector, _ = _collector(lambda: 0.0, fail={"mlflow"})
    s = _samples(collector)
    assert value(s, "mlplatform_exporter_source_up", source="mlflow") == 0
    assert value(s, "mlplatform_exporter_scrape_errors_total", source="mlflow") == 1
    assert value(s, "mlplatform_exporter_source_up", source="dagster") == 1
    assert not any(name.startswith("mlplatform_model_champion") for name, _ in s)
    assert value(s, "mlplatform_model_alerts_total", model="m", kind="drift") == 2
    assert "ConnectionError" in caplog.text and "s3cret" not in caplog.text


def test_alert_counts_follow_the_log_and_restart_with_a_replaced_one(tmp_path):
    log = tmp_path / "alerts.jsonl"
    read = alerts_reader(str(log))
    assert read(["m"])["m"]["drift"] == 0
    for kind, model in [("drift", "m"), ("drift", "m"), ("rollback", "m"), ("drift", "other")]:
        send_alert(Alert(kind=kind, model=model, message="x"), log, sinks=[])
    first = read(["m", "other"])
    assert (first["m"]["drift"], first["m"]["rollback"], first["other"]["drift"]) == (2, 1, 1)
    send_alert(Alert(kind="drift", model="m", message="x"), log, sinks=[])
    assert read(["m"])["m"]["drift"] == 3  # the earlier records counted once, the new one added
    assert read(["m"])["m"]["drift"] == 3
    log.rename(tmp_path / "alerts.jsonl.1")
    send_alert(Alert(kind="rollback", model="m", message="x"), log, sinks=[])
    assert (read(["m"])["m"]["drift"], read(["m"])["m"]["rollback"]) == (0, 1)  # a counter reset
