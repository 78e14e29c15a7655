"""Cost measurement pieces on real files, a real MLflow store and the real CLI (fast)."""

import os
import time

import boto3
import numpy as np
import pytest
from moto import mock_aws

from mlplatform_assets.lib.config import ConfigError, load_config
from mlplatform_assets.lib.cost.report import (
    OTHER,
    RUN_DATASETS,
    data_store_kind,
    scrape_endpoint,
)
from mlplatform_assets.lib.cost.usage import TRAINING_METRICS, TrainingCost, UsageMeter
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_tests.conftest import free_port


def test_meter_sees_the_memory_and_cpu_the_step_used():
    with UsageMeter() as meter:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page touched
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            pass
        del block
    usage = meter.usage
    assert usage.peak_increase_bytes >= 180 * 2**20
    assert usage.peak_rss_bytes >= usage.baseline_rss_bytes + usage.peak_increase_bytes
    assert 0.3 <= usage.cpu_seconds <= usage.wall_seconds * (os.cpu_count() or 1) + 0.05


def test_training_cost_round_trips_through_run_metrics():
    cost = TrainingCost(12.5, 10.25, 400_000_000, 50_000_000, 2400, 600)
    metrics = cost.metrics()
    assert set(metrics) == set(TRAINING_METRICS.values())
    assert metrics["cost.train_cpu_seconds"] == 10.25 and metrics["cost.train_rows"] == 2400.0
    assert TrainingCost.from_metrics({**metrics, "holdout_roc_auc": 0.8}) == cost
    # A run trained before costs were measured has none of them.
    assert TrainingCost.from_metrics({"holdout_roc_auc": 0.8}) is None


def test_data_store_keys_are_classified_by_kind():
    assert data_store_kind("m", "m/raw/date=2026-06-01/data.parquet") == "raw data"
    assert data_store_kind("m", "m/validated/date=2026-06-01/data.parquet") == "validated data"
    assert data_store_kind("m", "m/predictions/date=2026-06-01/data.parquet") == "batch predictions"
    assert data_store_kind("m", "m/drift/date=2026-06-01/report.html") == "drift reports"
    assert data_store_kind("m", "m/features/runs/abc/train.parquet") == RUN_DATASETS
    assert data_store_kind("m", "m/something/else.json") == OTHER


def test_object_sizes_local_skip_files_being_written(tmp_path):
    root = tmp_path / "data"
    (root / "m" / "raw").mkdir(parents=True)
    (root / "m" / "raw" / "a.parquet").write_bytes(b"x" * 100)
    (root / "m" / "raw" / ".a.parquet.123.tmp").write_bytes(b"x" * 7)  # an atomic write in progress
    (root / "m2").mkdir()
    (root / "m2" / "b").write_bytes(b"y" * 5)  # another model whose name starts the same
    store = ObjectStore(str(root))
    assert store.sizes("m/") == {"m/raw/a.parquet": 100}
    assert store.list("m/") == ["m/raw/a.parquet"]
    assert store.sizes("absent/") == {}


@mock_aws
def test_object_sizes_s3_listing_pages():
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="cost-bucket")
    for i in range(12):
        client.put_object(Bucket="cost-bucket", Key=f"root/m/raw/{i:02d}", Body=b"z" * i)
    client.put_object(Bucket="cost-bucket", Key="root/m2/x", Body=b"zz")

    class SmallPages:  # the store's client, paginating by 5 keys so several pages are read
        def __init__(self, real):
            self.real = real

        def get_paginator(self, name):
            paginator = self.real.get_paginator(name)

            class Pages:
                def paginate(self, **kw):
                    return paginator.paginate(**kw, PaginationConfig={"PageSize": 5})
            return Pages()

    store = ObjectStore("s3://cost-bucket/root", SmallPages(client))
    sizes = store.sizes("m/")
    assert sizes == {f"m/raw/{i:02d}": i for i in range(12)}


def test_invalid_price_fails_naming_the_variable():
    with pytest.raises(ConfigError, match="MLPLATFORM_PRICE_CPU_HOUR='-0.5'.*>= 0"):
        load_config({"MLPLATFORM_PRICE_CPU_HOUR": "-0.5"})
    with pytest.raises(ConfigError, match="MLPLATFORM_PRICE_GB_MONTH='cheap'"):
        load_config({"MLPLATFORM_PRICE_GB_MONTH": "cheap"})


def test_unreachable_endpoint_is_reported_not_zero():
    status = scrape_endpoint(f"http://127.0.0.1:{free_port()}")
    assert not status.reachable and status.error.startswith("unreachable")
    refused = scrape_endpoint("ftp://127.0.0.1/")
    assert not refused.reachable and "http" in refused.error
