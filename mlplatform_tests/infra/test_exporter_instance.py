"""The exporter as infra/k8s/exporter.yaml deploys it: the manifest's own command, on the dagster.yaml the Helm
chart renders (K8sRunLauncher, S3 compute logs, PostgreSQL storage) pointed at a real PostgreSQL, without any
Kubernetes API. Opening that instance must leave the launcher unloaded (loading it fails outside a cluster, as
it would in the pod, which has no service account token), and the scrape must show what PostgreSQL holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import dagster as dg
import pytest
import yaml
from kubernetes.config import ConfigException

from mlplatform_assets.defs import names
from mlplatform_assets.defs.coordination import open_instance
from mlplatform_assets.lib.monitoring.exporter import SOURCES
from mlplatform_tests.conftest import SMALL_NAME, free_port, wait_for_http
from mlplatform_tests.infra import chart, pods
from mlplatform_tests.lib.monitoring.test_exporter import scrape, value


def _exporter_command() -> list[str]:
    [dep] = [o for o in pods.k8s_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlplatform-exporter"]
    [container] = dep["spec"]["template"]["spec"]["containers"]
    return container["command"]


@pytest.mark.slow  # the exporter's one end-to-end deployment test: a PostgreSQL and the CLI in a process
def test_the_deployed_command_serves_the_charts_instance(small_churn_spec, postgres_server, tmp_path, monkeypatch):
    """The exporter starts before its database exists (PostgreSQL down or not yet provisioned, as on a fresh
    cluster): it serves, reports the Dagster store down, and picks it up once it is there, without a restart."""
    database = f"mlplatform_test_{uuid.uuid4().hex[:12]}"  # created only after the exporter has started
    values = chart.load_values()
    # Only the database coordinates change: the test server instead of the placeholder host (no TLS there).
    values["postgresql"].update(postgresqlHost=postgres_server.host, postgresqlUsername=postgres_server.user,
                                postgresqlDatabase=database, postgresqlParams={},
                                service={"port": postgres_server.port})
    rendered = chart.instance_config(values)
    assert rendered["run_launcher"]["class"] == "K8sRunLauncher"
    dagster_home = os.environ["DAGSTER_HOME"]  # platform_env's, as the pod's env names the chart's
    with open(os.path.join(dagster_home, "dagster.yaml"), "w") as fh:
        yaml.safe_dump(rendered, fh)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    command = _exporter_command()
    port = free_port()
    args = [*command[1:]]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    args[args.index("--cache-seconds") + 1] = "0"  # every scrape reads the stores
    log = tmp_path / "exporter.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlplatform_assets.cli", *args], cwd=chart.REPO,
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
        down = scrape(f"http://127.0.0.1:{port}/metrics")
        assert {src: value(down, "mlplatform_exporter_source_up", source=src) for src in SOURCES} == {
            **dict.fromkeys(SOURCES, 1.0), "dagster": 0.0}
        assert value(down, "mlplatform_exporter_scrape_errors_total", source="dagster") == 1
        assert not any(name == "mlplatform_model_last_training_timestamp_seconds" for name, _ in down)
        postgres_server.execute_admin(f'CREATE DATABASE "{database}"')
        try:
            trained_at = _record_a_training(dagster_home)
            samples = scrape(f"http://127.0.0.1:{port}/metrics")
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(30)
            postgres_server.execute_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, log.read_text()[-3000:]
    assert {src: value(samples, "mlplatform_exporter_source_up", source=src) for src in SOURCES} == dict.fromkeys(
        SOURCES, 1.0)
    assert value(samples, "mlplatform_exporter_scrape_errors_total", source="dagster") == 1  # no new failure
    assert value(samples, "mlplatform_model_last_training_timestamp_seconds", model=SMALL_NAME) == pytest.approx(
        trained_at)
    exporter_log = log.read_text()
    assert "exporter: reading dagster failed" in exporter_log
    assert postgres_server.password not in exporter_log


def _record_a_training(dagster_home: str) -> float:
    """Open the instance as the chart configures it (creating its tables), record a trained_model
    materialization, and return its timestamp."""
    key = names.asset_key(SMALL_NAME, names.TRAINED_MODEL)
    instance = open_instance(dagster_home)
    try:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata={"model_version": 7}))
        # Opening the chart's instance outside a cluster must leave the launcher unloaded (loading it fails
        # there, as it would in the exporter's pod, which has no service account token).
        assert instance._run_launcher is None and instance._compute_log_manager is None
        with pytest.raises(ConfigException, match="Service host/port is not set"):
            instance.run_launcher  # noqa: B018 - the property loads it
        return instance.get_latest_materialization_event(key).timestamp
    finally:
        instance.dispose()
