"""The lifecycle against S3 (moto's real HTTP server on 127.0.0.1): an s3:// model source, and the
platform's own data store on S3. Configuration is environment variables only, as in production."""

from __future__ import annotations

import io
import os

import boto3
import pandas as pd
import pytest

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.lib.config import load_config
from mlplatform_assets.lib.data.example_data import customer_churn
from mlplatform_assets.lib.data.storage import read_records
from mlplatform_assets.lib.model.lifecycle import raw_key, validated_key
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.monitoring.alerts import Alert, read_alerts, send_alert
from mlplatform_tests.conftest import (
    SMALL_DAYS,
    SMALL_END,
    SMALL_NAME,
    SMALL_ROWS,
    free_port,
    write_small_spec,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "ml-source"
SOURCE_PREFIX = "raw/customer_churn"


@pytest.fixture()
def moto_s3(platform_env, monkeypatch):
    """A moto S3 server on a free port with one bucket holding the small daily files; AWS_* env vars
    point boto3 and the platform's S3 resource at it. Yields a boto3 client."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        for day in SMALL_DAYS:
            buf = io.BytesIO()
            customer_churn(day, rows=SMALL_ROWS).to_parquet(buf, index=False)
            client.put_object(Bucket=BUCKET, Key=f"{SOURCE_PREFIX}/{day.isoformat()}.parquet", Body=buf.getvalue())
        yield client
    finally:
        server.stop()


def _keys(client, prefix: str) -> set[str]:
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.update(o["Key"] for o in page.get("Contents", []))
    return keys


def _assert_champion(config, run_summary) -> None:
    assert run_summary["success"], run_summary["errors"] or run_summary["failed_checks"]
    registry = Registry(MlflowSettings.from_config(config), config.audit_log_path)
    champion = registry.champion(SMALL_NAME)
    assert champion is not None
    assert str(champion.version) == run_summary["assets"]["trained_model"]["model_version"] == "1"


def test_lifecycle_reads_s3_source(moto_s3, platform_env):
    source_uri = f"s3://{BUCKET}/{SOURCE_PREFIX}"
    write_small_spec(platform_env.models_dir, source_uri)

    [summary] = run_lifecycle(platform_env, [SMALL_NAME], end=SMALL_END)

    _assert_champion(platform_env, summary)
    raw = summary["assets"]["raw_data"]
    assert raw["source"] == source_uri
    assert raw["partitions"] == len(SMALL_DAYS)
    assert summary["assets"]["features"]["partition_range"] == f"{SMALL_DAYS[0]}..{SMALL_END}"
    # The platform's own store stayed local: partitions were copied out of the bucket, not into it.
    assert all(k.startswith(SOURCE_PREFIX) for k in _keys(moto_s3, ""))
    for day in SMALL_DAYS:
        assert os.path.exists(os.path.join(platform_env.data_uri, validated_key(SMALL_NAME, day)))


def test_platform_data_store_on_s3(moto_s3, platform_env, monkeypatch):
    source_uri = f"s3://{BUCKET}/{SOURCE_PREFIX}"
    data_prefix = "platform-data"
    monkeypatch.setenv("MLPLATFORM_DATA_URI", f"s3://{BUCKET}/{data_prefix}")
    config = load_config()
    assert config.data_uri == f"s3://{BUCKET}/{data_prefix}"
    write_small_spec(config.models_dir, source_uri)

    [summary] = run_lifecycle(config, [SMALL_NAME], end=SMALL_END)

    _assert_champion(config, summary)
    assert summary["assets"]["raw_data"]["source"] == source_uri
    keys = _keys(moto_s3, f"{data_prefix}/")
    for day in SMALL_DAYS:
        assert f"{data_prefix}/{raw_key(SMALL_NAME, day)}" in keys
        assert f"{data_prefix}/{validated_key(SMALL_NAME, day)}" in keys
    # The training dataset handed from features to training went through the IO manager, into S3 too.
    assert f"{data_prefix}/{SMALL_NAME}/features/runs/{summary['run_id']}/manifest.json" in keys
    body = moto_s3.get_object(Bucket=BUCKET, Key=f"{data_prefix}/{validated_key(SMALL_NAME, SMALL_END)}")["Body"].read()
    frame = pd.read_parquet(io.BytesIO(body))
    assert len(frame) > 0 and "churned" in frame.columns
    # Nothing landed in a local data directory.
    assert not os.path.exists(os.path.join(config.state_dir, "data"))
    # No shared filesystem: the audit mirror of the promotion lives in the bucket (one object per record)
    # and agrees with the registry's own trail; no local audit file was written.
    assert config.audit_log_path == f"s3://{BUCKET}/{data_prefix}/_platform/audit"
    assert len([k for k in keys if k.startswith(f"{data_prefix}/_platform/audit/")]) == 1
    mirrored = read_records(config.audit_log_path)
    trail = Registry(MlflowSettings.from_config(config)).audit_records(SMALL_NAME)
    assert [r["to_version"] for r in mirrored] == [r["to_version"] for r in trail] == ["1"]
    assert not os.path.exists(os.path.join(config.state_dir, "audit"))


def test_alert_log_on_s3_keeps_every_record_in_order(moto_s3):
    log_uri = f"s3://{BUCKET}/platform-data/_platform/alerts"
    for day in ("2026-06-01", "2026-06-02", "2026-06-03"):
        record = send_alert(Alert(kind="drift", model=SMALL_NAME, message=f"drift on {day}", partition=day), log_uri)
        assert record["delivery"] == {}  # no sink configured: logged only
    alerts = read_alerts(log_uri, model=SMALL_NAME, kind="drift")
    assert [a["partition"] for a in alerts] == ["2026-06-01", "2026-06-02", "2026-06-03"]
    assert len(_keys(moto_s3, "platform-data/_platform/alerts/")) == 3
