"""The IO manager (DatasetIOManager) on a real Dagster instance and a local data store: run-scoped paths, a
training dataset and a JSON record round trip, cross-run loading from the latest materialization, pruning."""

import datetime as dt
import json

import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from mlplatform_assets.defs.resources import STORAGE_PREFIX_META, DatasetIOManager, LocalDataStore
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.model.features import TrainingDataset

D1, D2, D3 = dt.date(2026, 6, 1), dt.date(2026, 6, 2), dt.date(2026, 6, 3)
TRAIN = pd.DataFrame({"event_time": pd.to_datetime(["2026-06-01 01:00", "2026-06-01 02:00"]), "x": [1.5, None],
                      "c": ["u", None], "y": [0, 1]})
HOLDOUT = pd.DataFrame({"event_time": pd.to_datetime(["2026-06-03 01:00"]), "x": [2.0], "c": ["v"], "y": [1]})


def _dataset() -> TrainingDataset:
    return TrainingDataset(train=TRAIN, holdout=HOLDOUT, numeric=["x"], categorical=["c"], target="y",
                           timestamp="event_time", train_days=[D1], holdout_days=[D3], data_sha256="abc",
                           quarantined_days=[D2])


@dg.asset(key=["m", "dataset"])
def dataset_asset() -> TrainingDataset:
    return _dataset()


@dg.asset(key=["m", "record"], ins={"dataset": dg.AssetIn(key=["m", "dataset"])})
def record_asset(dataset: TrainingDataset) -> dict:
    return {"rows": len(dataset.train) + len(dataset.holdout), "days": [str(d) for d in dataset.days],
            "quarantined": [str(d) for d in dataset.quarantined_days], "nulls": int(dataset.train["c"].isna().sum())}


@pytest.fixture()
def env(tmp_path):
    root = tmp_path / "data"
    io_manager = DatasetIOManager(data_store=LocalDataStore(root=str(root), s3=S3Resource()), keep_finished_runs=2)
    return {"instance": dg.DagsterInstance.ephemeral(), "resources": {"io_manager": io_manager},
            "store": ObjectStore(str(root))}


def _materialize(env, *assets, selection=None):
    return dg.materialize(list(assets), instance=env["instance"], resources=env["resources"], selection=selection,
                          raise_on_error=False)


def test_outputs_are_run_scoped_and_round_trip(env):
    result = _materialize(env, dataset_asset, record_asset)
    assert result.success
    run = result.run_id
    store = env["store"]
    assert store.list("m/") == [f"m/dataset/runs/{run}/holdout.parquet", f"m/dataset/runs/{run}/manifest.json",
                                f"m/dataset/runs/{run}/train.parquet", f"m/record/runs/{run}/value.json"]
    manifest = json.loads(store.read_bytes(f"m/dataset/runs/{run}/manifest.json"))
    assert manifest["quarantined_days"] == [str(D2)] and manifest["train_days"] == [str(D1)]
    pd.testing.assert_frame_equal(store.read_frame(f"m/dataset/runs/{run}/train.parquet"), TRAIN)
    assert result.output_for_node("m__record") == {"rows": 3, "days": [str(D1), str(D3)], "quarantined": [str(D2)],
                                                   "nulls": 1}
    meta = result.asset_materializations_for_node("m__dataset")[0].metadata
    assert meta[STORAGE_PREFIX_META].value == f"m/dataset/runs/{run}"


def test_a_run_that_does_not_materialize_the_upstream_loads_its_latest_materialization(env):
    first = _materialize(env, dataset_asset, record_asset)
    second = _materialize(env, dataset_asset, record_asset, selection=[record_asset])
    assert second.success
    assert second.output_for_node("m__record")["rows"] == 3
    assert env["store"].list(f"m/dataset/runs/{second.run_id}/") == []  # read from the first run's outputs
    assert env["store"].exists(f"m/dataset/runs/{first.run_id}/manifest.json")

    env["store"].delete_prefix(f"m/dataset/runs/{first.run_id}")
    gone = _materialize(env, dataset_asset, record_asset, selection=[record_asset])
    assert not gone.success
    failure = next(e for e in gone.all_events if e.event_type_value == "STEP_FAILURE")
    assert (f"m/dataset: its stored output m/dataset/runs/{first.run_id} is gone (only the 2 newest finished runs "
            "are kept): materialize it again") in failure.event_specific_data.error.message


def test_an_upstream_never_materialized_is_a_clear_failure(env):
    result = _materialize(env, dataset_asset, record_asset, selection=[record_asset])
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "m/dataset has not been materialized yet" in failure.event_specific_data.error.message


def test_older_finished_runs_are_pruned_keeping_the_newest(env):
    runs = [_materialize(env, dataset_asset).run_id for _ in range(5)]
    kept = {k.split("/")[3] for k in env["store"].list("m/dataset/runs/")}
    assert kept == set(runs[-3:])  # this run plus the 2 newest finished ones
