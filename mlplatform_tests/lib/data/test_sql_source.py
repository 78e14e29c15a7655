"""The SQL source (lib/data/sql_source.py) against the real PostgreSQL test server, and its spec validation."""

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa

from mlplatform_assets.lib.data import datasource
from mlplatform_assets.lib.data.datasource import SourceError
from mlplatform_assets.lib.data.example_data import customer_churn
from mlplatform_assets.lib.data.sql_source import SqlSource, mask_url
from mlplatform_assets.lib.spec import SpecError, parse_spec
from mlplatform_tests.conftest import SMALL_DAYS, small_spec_yaml

DAYS = SMALL_DAYS[:3]


def sql_spec_yaml(sql_source: str) -> str:
    """The small churn spec with ``source: {sql: <sql_source>}`` instead of its daily files."""
    text = small_spec_yaml("UNUSED")
    return text.replace('  uri: UNUSED\n  file_pattern: "{date}.parquet"\n', f"  sql: {sql_source}\n")


def write_orders(url: str, days: list[dt.date], rows: int = 60, table: str = "orders") -> pd.DataFrame:
    frame = pd.concat([customer_churn(day, rows=rows) for day in days], ignore_index=True)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    frame.to_sql(table, engine, index=False, if_exists="append")
    engine.dispose()
    return frame


@pytest.fixture
def orders_url(postgres_server, postgres_db) -> str:
    return postgres_server.dsn(postgres_db)


def _spec(sql_source: str, url: str):
    return parse_spec(sql_spec_yaml(sql_source), variables={"ORDERS_DB_URL": url, "MLPLATFORM_HOME": "/tmp"})


def test_table_source_lists_reads_and_fingerprints_days(orders_url, postgres_server, postgres_db):
    written = write_orders(orders_url, DAYS)
    spec = _spec('{url: "${ORDERS_DB_URL}", table: orders}', orders_url)
    source = datasource.source_for(spec)
    assert isinstance(source, SqlSource)
    assert source.available_days() == DAYS
    got = source.read_days([DAYS[1], SMALL_DAYS[5]])
    assert len(got[0].frame) == (written["event_time"].dt.date == DAYS[1]).sum() > 0 and got[0].error is None
    assert set(got[0].frame["event_time"].dt.date) == {DAYS[1]}
    expected = written[written["event_time"].dt.date == DAYS[1]].sort_values("event_time").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[0].frame.reset_index(drop=True), expected, check_dtype=False)
    assert got[1].error == "no rows for this day" and got[1].frame.empty
    # Masked everywhere it is recorded: dialect, host and database, never user or password.
    pg = postgres_server
    assert source.label() == f"sql table orders at postgresql+psycopg2://***@{pg.host}:{pg.port}/{postgres_db}"
    assert got[0].location == f"{source.label()} for {DAYS[1].isoformat()}"

    first = source.fingerprints({})
    assert sorted(first) == [d.isoformat() for d in DAYS]
    assert source.fingerprints(first) == first  # nothing changed: same fingerprints, nothing re-hashed
    late = customer_churn(DAYS[0], rows=1).assign(customer_id="LATE")
    engine = sa.create_engine(orders_url, poolclass=sa.pool.NullPool)
    late.to_sql("orders", engine, index=False, if_exists="append")
    engine.dispose()
    second = source.fingerprints(first)
    assert second[DAYS[0].isoformat()]["fp"] != first[DAYS[0].isoformat()]["fp"]
    assert {d: second[d] for d in second if d != DAYS[0].isoformat()} == \
        {d: first[d] for d in first if d != DAYS[0].isoformat()}


def test_query_source_binds_day_bounds_as_parameters(orders_url):
    written = write_orders(orders_url, DAYS)
    spec = _spec('{url: "${ORDERS_DB_URL}", query: "SELECT * FROM orders WHERE region <> \'north\' '
                 'AND event_time >= :start AND event_time < :end"}', orders_url)
    source = datasource.source_for(spec)
    assert source.available_days() == DAYS
    day = source.read_days([DAYS[2]])[0]
    on_day = written[written["event_time"].dt.date == DAYS[2]]
    assert len(day.frame) == (on_day["region"] != "north").sum() > 0 and "north" not in set(day.frame["region"])
    assert (on_day["region"] == "north").any()
    assert sorted(source.fingerprints({})) == [d.isoformat() for d in DAYS]


def test_unreachable_database_error_names_the_source_without_the_password(postgres_server):
    url = postgres_server.dsn("no_such_database_here")
    spec = _spec('{url: "${ORDERS_DB_URL}", table: orders}', url)
    with pytest.raises(SourceError) as err:
        datasource.available_days(spec)
    message = str(err.value)
    assert "small_churn" in message and "no_such_database_here" in message
    assert postgres_server.password not in message and url not in message


@pytest.mark.parametrize("sql_source, problem", [
    ('{url: "${ORDERS_DB_URL}"}', "exactly one of table or query"),
    ('{url: "${ORDERS_DB_URL}", table: orders, query: "SELECT 1 WHERE :start < :end"}', "exactly one of table or query"),
    ('{url: "${ORDERS_DB_URL}", query: "SELECT * FROM orders WHERE event_time >= :start"}', ":end"),
    ('{url: "${ORDERS_DB_URL}", query: "SELECT * FROM orders WHERE event_time >= :started AND x < :end"}',
     ":start"),
    ('{url: "${ORDERS_DB_URL}", table: "orders; DROP TABLE orders"}', "table name"),
    ('{url: "not a url", table: orders}', "not a SQLAlchemy database URL"),
])
def test_invalid_sql_source_is_a_clear_error(sql_source, problem):
    with pytest.raises(SpecError, match="source") as err:
        _spec(sql_source, "postgresql+psycopg2://reader:TopSecret99@db.example/orders")
    assert problem in str(err.value)
    assert "TopSecret99" not in str(err.value)


def test_a_password_written_into_the_spec_is_refused():
    with pytest.raises(SpecError, match="environment variable") as err:
        _spec("{url: 'postgresql+psycopg2://reader:TopSecret99@db.example/orders', table: orders}", "")
    assert "TopSecret99" not in str(err.value)


def test_uri_and_sql_are_exclusive():
    with pytest.raises(SpecError, match="exactly one of uri"):
        parse_spec(small_spec_yaml("/data/x").replace("  uri: /data/x\n",
                                                      "  uri: /data/x\n  sql: {url: 'sqlite://', table: t}\n"),
                   variables={"MLPLATFORM_HOME": "/tmp"})


def test_mask_url_keeps_only_dialect_host_and_database():
    assert mask_url("postgresql+psycopg2://u:p%40ss@db.example:5433/orders?sslmode=require") == \
        "postgresql+psycopg2://***@db.example:5433/orders"
    assert mask_url("duckdb:////data/orders.duckdb") == "duckdb:////data/orders.duckdb"
