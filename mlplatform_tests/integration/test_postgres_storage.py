"""The lifecycle with the production instance configuration (infra/dagster.yaml): Dagster's runs, event
log and asset materializations in PostgreSQL, configured and authenticated through environment variables
only; and the MLflow tracking store/model registry in PostgreSQL too."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.lib.config import load_config
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INFRA_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "infra" / "dagster.yaml"
ASSETS = ("raw_data", "validated_data", "features", "trained_model", "evaluation_report", "deployed_endpoint")


@pytest.fixture()
def postgres_instance(platform_env, postgres_server, postgres_db, monkeypatch):
    """DAGSTER_HOME holds infra/dagster.yaml unchanged; DAGSTER_PG_* point it at a fresh database."""
    shutil.copy(INFRA_DAGSTER_YAML, Path(platform_env.dagster_home) / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_PG_HOST", postgres_server.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(postgres_server.port))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", postgres_server.user)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", postgres_server.password)
    monkeypatch.setenv("DAGSTER_PG_DB", postgres_db)
    return postgres_db


def _query(server, db: str, sql: str, *params) -> list[tuple]:
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def _assert_recorded_in_postgres(server, db: str, name: str, summary: dict, days: list) -> None:
    run_id = summary["run_id"]
    # Through Dagster's own API, with the instance built from DAGSTER_HOME exactly as the webserver builds it.
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.job_name == f"{name}__lifecycle"
        raw_key = dg.AssetKey([name, "raw_data"])
        assert instance.get_materialized_partitions(raw_key) == {d.isoformat() for d in days}
        for asset in ASSETS:
            event = instance.get_latest_materialization_event(dg.AssetKey([name, asset]))
            assert event is not None and event.run_id == run_id, asset
        latest = instance.get_latest_materialization_event(dg.AssetKey([name, "trained_model"]))
        meta = latest.asset_materialization.metadata
        assert meta["model_version"].value == summary["assets"]["trained_model"]["model_version"]

    # And straight from the tables, with psycopg2: the state really lives in this database.
    assert _query(server, db, "SELECT status FROM runs WHERE run_id = %s", run_id) == [("SUCCESS",)]
    keys = {k for (k,) in _query(server, db, "SELECT asset_key FROM asset_keys")}
    assert {dg.AssetKey([name, a]).to_string() for a in ASSETS} <= keys
    [(n_mat,)] = _query(server, db, "SELECT count(*) FROM event_logs WHERE run_id = %s AND "
                                    "dagster_event_type = 'ASSET_MATERIALIZATION'", run_id)
    assert n_mat == 2 * len(days) + len(ASSETS) - 2  # raw and validated: one per partition
    [(n_checks,)] = _query(server, db, "SELECT count(*) FROM event_logs WHERE run_id = %s AND "
                                       "dagster_event_type = 'ASSET_CHECK_EVALUATION'", run_id)
    assert n_checks >= 1


def test_dagster_storage_on_postgres(postgres_instance, postgres_server, small_churn_spec, platform_env):
    [summary] = run_lifecycle(platform_env, [small_churn_spec.name], end=small_churn_spec.end)

    assert summary["success"], summary["errors"] or summary["failed_checks"]
    _assert_recorded_in_postgres(postgres_server, postgres_instance, small_churn_spec.name, summary,
                                 small_churn_spec.days)
    # Nothing fell back to the SQLite files Dagster would otherwise create under DAGSTER_HOME.
    home = Path(platform_env.dagster_home)
    assert not list(home.rglob("*.db"))


def test_mlflow_tracking_on_postgres(postgres_instance, postgres_server, small_churn_spec, platform_env, tmp_path,
                                     monkeypatch):
    mlflow_db = f"{postgres_instance}_mlflow"
    postgres_server.execute_admin(f'CREATE DATABASE "{mlflow_db}"')
    try:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres_server.dsn(mlflow_db))
        artifacts = tmp_path / "mlflow-artifacts"
        monkeypatch.setenv("MLPLATFORM_ARTIFACT_ROOT", artifacts.as_uri())
        config = load_config()
        assert config.mlflow_tracking_uri.startswith("postgresql+psycopg2://")

        [summary] = run_lifecycle(config, [small_churn_spec.name], end=small_churn_spec.end)

        assert summary["success"], summary["errors"] or summary["failed_checks"]
        name = small_churn_spec.name
        version = summary["assets"]["trained_model"]["model_version"]
        registry = Registry(MlflowSettings.from_config(config), config.audit_log_path)
        assert str(registry.champion(name).version) == version == "1"
        aliases = dict(_query(postgres_server, mlflow_db, "SELECT alias, version FROM registered_model_aliases "
                                                          "WHERE name = %s", name))
        assert aliases["champion"] == 1
        [(run_uuid, source)] = _query(postgres_server, mlflow_db,
                                      "SELECT run_id, source FROM model_versions WHERE name = %s", name)
        assert run_uuid == summary["assets"]["trained_model"]["mlflow_run_id"]
        # Artifacts went to the configured root, not into the database or the state directory.
        assert list((artifacts / name).rglob("MLmodel"))
        assert not (Path(config.state_dir) / "mlflow").exists()
        _assert_recorded_in_postgres(postgres_server, postgres_instance, name, summary, small_churn_spec.days)
    finally:
        postgres_server.execute_admin(f'DROP DATABASE IF EXISTS "{mlflow_db}" WITH (FORCE)')
