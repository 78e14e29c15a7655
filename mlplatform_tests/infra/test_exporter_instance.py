"""infra/k8s/exporter.yaml mounts the dagster.yaml the Helm chart renders (K8sRunLauncher, S3 compute logs,
PostgreSQL storage) and gives the pod no Kubernetes API access and no need for S3 to open it. This runs the
exporter's own instance reader on that very file, pointed at a real PostgreSQL: the launcher and the compute
log manager must stay unloaded, and the materializations must come back."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml
from kubernetes.config import ConfigException

from mlplatform_assets.commands.exporter import dagster_reader
from mlplatform_assets.defs import names
from mlplatform_assets.defs.coordination import open_instance
from mlplatform_assets.lib.monitoring import exporter as health
from mlplatform_tests.infra import chart


def test_exporter_reads_the_instance_the_chart_renders(postgres_server, postgres_db, tmp_path, monkeypatch):
    values = chart.load_values()
    # Only the database coordinates change: the test server instead of the placeholder host (no TLS there).
    values["postgresql"].update(postgresqlHost=postgres_server.host, postgresqlUsername=postgres_server.user,
                                postgresqlDatabase=postgres_db, postgresqlParams={},
                                service={"port": postgres_server.port})
    rendered = chart.instance_config(values)
    assert rendered["run_launcher"]["class"] == "K8sRunLauncher"  # what a lazy load must keep out of the way
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(rendered))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    instance = open_instance(str(home))
    try:
        key = names.asset_key("customer_churn", names.TRAINED_MODEL)
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, metadata={"model_version": 7}))
        found = dagster_reader(instance)(["customer_churn", "delivery_time"])
        assert found["delivery_time"] == {}
        training = found["customer_churn"][health.TRAINING]
        assert training.metadata["model_version"] == 7 and training.timestamp > 0
        # Nothing outside PostgreSQL was loaded, and loading the launcher here would indeed fail (no cluster).
        assert instance._run_launcher is None and instance._compute_log_manager is None
        with pytest.raises(ConfigException, match="Service host/port is not set"):
            instance.run_launcher  # noqa: B018 - the property loads it
    finally:
        instance.dispose()
