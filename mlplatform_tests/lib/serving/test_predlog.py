from __future__ import annotations

import os
from datetime import datetime, timezone

import numpy as np
import pytest

from mlplatform_assets.lib.serving.predlog import (
    LogChunk,
    PredictionLogWriter,
    read_prediction_log,
)


def _chunk(n, version="1", ts_us=None, rid="r"):
    ts_us = ts_us or int(datetime(2026, 1, 2, 12, tzinfo=timezone.utc).timestamp() * 1e6)
    return LogChunk({"x": [float(i) for i in range(n)], "c": ["a"] * n, "prediction": [1] * n},
                    {"x": "double", "c": "string", "prediction": "long"}, n,
                    {"request_id": [f"{rid}{i}" for i in range(n)], "row": list(range(n)), "timestamp_us": [ts_us] * n,
                     "model_name": "m", "model_version": version, "prediction": np.arange(n),
                     "probabilities": np.tile([0.25, 0.75], (n, 1))})


def test_local_log_partitions_and_flush_on_close(tmp_path):
    w = PredictionLogWriter(str(tmp_path), "m", flush_rows=1000, flush_interval_s=60)
    w.start()
    w.submit(_chunk(3, "1"))
    day2 = int(datetime(2026, 1, 3, 0, 0, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    w.submit(_chunk(2, "2", ts_us=day2, rid="s"))
    w.close()
    parts = sorted(os.listdir(tmp_path / "m"))
    assert parts == ["date=2026-01-02", "date=2026-01-03"]
    for p in parts:
        files = os.listdir(tmp_path / "m" / p)
        assert all(f.startswith("part-") and f.endswith(".parquet") for f in files)  # no temp files left
    df = read_prediction_log(str(tmp_path), "m")
    assert len(df) == 5 and df["model_version"].tolist() == ["1", "1", "1", "2", "2"]
    assert "input_prediction" in df.columns  # an input colliding with a metadata name is prefixed
    assert df["probability"].tolist() == [0.75] * 5
    assert len(read_prediction_log(str(tmp_path), "m", date="2026-01-03")) == 2
    assert read_prediction_log(str(tmp_path), "other").empty


def test_flush_by_rows(tmp_path):
    w = PredictionLogWriter(str(tmp_path), "m", flush_rows=4, flush_interval_s=60)
    w.start()
    for _ in range(3):
        w.submit(_chunk(2))
    import time

    deadline = time.time() + 5
    while w.rows_written < 4 and time.time() < deadline:
        time.sleep(0.02)
    assert w.rows_written >= 4
    w.close()
    assert w.rows_written == 6


@pytest.mark.integration
def test_s3_log(monkeypatch):
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    srv = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    try:
        host, port = srv.get_host_and_port()
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")  # the writer's endpoint source
        s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        s3.create_bucket(Bucket="logs")
        w = PredictionLogWriter("s3://logs/pred", "m", flush_rows=100, flush_interval_s=60)
        w.start()
        w.submit(_chunk(3))
        w.close()
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="logs")["Contents"]]
        assert len(keys) == 1 and keys[0].startswith("pred/m/date=2026-01-02/part-")
        df = read_prediction_log("s3://logs/pred", "m", date="2026-01-02")
        assert len(df) == 3 and (df["date"] == "2026-01-02").all()
        assert read_prediction_log("s3://logs/pred", "m", date="2026-01-05").empty
    finally:
        srv.stop()
