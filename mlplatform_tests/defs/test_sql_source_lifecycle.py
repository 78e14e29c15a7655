"""A model whose source is a PostgreSQL table: the lifecycle through Dagster and the new-data sensor, on the
real test PostgreSQL server, a real Dagster instance and a real MLflow SQLite store."""

import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.defs.resources import build_resources
from mlplatform_assets.lib.config import ensure_dirs
from mlplatform_assets.lib.data.example_data import customer_churn
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.spec import load_specs
from mlplatform_tests.conftest import SMALL_DAYS, SMALL_END, SMALL_NAME, SMALL_ROWS
from mlplatform_tests.lib.data.test_sql_source import sql_spec_yaml, write_orders


@pytest.fixture
def sql_platform(platform_env, postgres_server, postgres_db, monkeypatch):
    """The small churn model reading table ``orders`` (SMALL_DAYS of rows) through ${ORDERS_DB_URL}."""
    url = postgres_server.dsn(postgres_db)
    write_orders(url, SMALL_DAYS, rows=SMALL_ROWS)
    monkeypatch.setenv("ORDERS_DB_URL", url)
    (Path(platform_env.models_dir) / f"{SMALL_NAME}.yaml").write_text(
        sql_spec_yaml('{url: "${ORDERS_DB_URL}", table: orders}'))
    ensure_dirs(platform_env)
    return platform_env, url, postgres_server.password


def test_lifecycle_on_a_sql_table_produces_a_champion_without_recording_the_url(sql_platform):
    config, url, password = sql_platform
    result = run_lifecycle(config, [SMALL_NAME], SMALL_END)[0]
    assert result["success"], result
    registry = Registry(MlflowSettings.from_config(config), config.audit_log_path)
    champion = registry.champion(SMALL_NAME)
    assert champion is not None and str(champion.version) == "1"
    run = registry.client.get_run(champion.run_id)
    assert run.data.metrics["holdout_roc_auc"] > 0.6
    recorded = json.dumps([result, run.data.params, run.data.tags], default=str)
    assert password not in recorded and url not in recorded
    with dg.DagsterInstance.get() as instance:
        raw = instance.fetch_materializations(dg.AssetKey([SMALL_NAME, "raw_data"]), limit=100).records
        assert raw, "raw_data was not materialized"
        metadata = json.dumps([{k: str(v.value) for k, v in r.asset_materialization.metadata.items()}
                               for r in raw])
    assert password not in metadata and url not in metadata
    assert "sql table orders at postgresql+psycopg2://***@" in metadata


def test_new_data_sensor_on_a_sql_table_requests_each_day_once_and_a_changed_day_again(sql_platform, tmp_path):
    config, url, password = sql_platform
    spec = load_specs(config.models_dir, config.state_dir)[0]
    defs = build_definitions(config, [spec])
    sensor = defs.get_sensor_def(f"{SMALL_NAME}__new_data_sensor")
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        def tick(cursor):
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=build_resources(config),
                                         definitions=defs) as ctx:
                return sensor.evaluate_tick(ctx)

        first = tick(None)
        assert [r.partition_key for r in first.run_requests] == [d.isoformat() for d in SMALL_DAYS]
        assert all(r.run_key.startswith(f"{SMALL_NAME}:ingest:{r.partition_key}:") for r in first.run_requests)
        quiet = tick(first.cursor)
        assert not quiet.run_requests and "sql table orders at" in quiet.skip_message

        late_day = SMALL_DAYS[3]
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        customer_churn(late_day, rows=1).assign(customer_id="LATE").to_sql("orders", engine, index=False,
                                                                           if_exists="append")
        engine.dispose()
        again = tick(quiet.cursor)
        assert [r.partition_key for r in again.run_requests] == [late_day.isoformat()]
        assert again.run_requests[0].run_key not in {r.run_key for r in first.run_requests}
        assert not tick(again.cursor).run_requests
        said = json.dumps([first.cursor, quiet.skip_message, again.cursor, sensor.description,
                           [r.tags for r in first.run_requests + again.run_requests]])
        assert password not in said and url not in said
