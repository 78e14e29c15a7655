"""The cost of one model end to end: a real lifecycle (Dagster + MLflow SQLite), a real serving server on
127.0.0.1 scraped for requests and CPU, and ``mlplatform cost`` checked against the files on disk."""

import json
import os
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from mlplatform_assets.cli import main, run_lifecycle
from mlplatform_assets.lib.cost.report import GIB, MLFLOW_MODELS, MLFLOW_RUNS, PREDICTION_LOG, RUN_DATASETS
from mlplatform_assets.lib.cost.usage import TRAINING_METRICS
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_tests.conftest import SMALL_DAYS, free_port
from mlplatform_tests.lib.serving.conftest import metric_value, start_server

REQUESTS, ROWS_PER_REQUEST = 7, 3
CPU_PRICE, GB_PRICE = 0.05, 0.023


def _bytes_under(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file() and not p.name.startswith("."))


def _cost_json(capsys, *args: str) -> dict:
    assert main(["cost", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cost_of_a_trained_and_served_model(small_churn_spec, platform_env, monkeypatch, capsys):
    name = small_churn_spec.name
    unreachable = f"http://127.0.0.1:{free_port()}"

    # Before any training: nothing measured, nothing stored, and a dead endpoint is "unavailable", not zero.
    assert main(["cost", name, "--endpoint", unreachable]) == 0
    out = capsys.readouterr().out
    assert "no prices configured" in out
    assert "serving: unavailable (no endpoint reachable)" in out and f"{unreachable}: unreachable" in out
    empty = _cost_json(capsys, name)
    assert empty["training"]["last_run"] is None and empty["training"]["total"]["runs"] == 0
    assert empty["storage"]["total_bytes"] == 0 and empty["serving"]["total"] is None
    assert set(empty["money"].values()) == {None}
    assert main(["cost", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err

    summary = run_lifecycle(platform_env, [name], small_churn_spec.end)[0]
    assert summary["success"], summary
    capsys.readouterr()
    features, trained = summary["assets"]["features"], summary["assets"]["trained_model"]

    # trained_model metadata carries the training step's cost, the same figures as the MLflow run.
    registry = Registry(MlflowSettings.from_config(platform_env))
    run_metrics = registry.client.get_run(trained["mlflow_run_id"]).data.metrics
    for metric in TRAINING_METRICS.values():
        assert trained[metric] == pytest.approx(run_metrics[metric]), metric
    assert trained["cost.train_rows"] == features["train_rows"] > 0
    assert trained["cost.holdout_rows"] == features["holdout_rows"] > 0
    wall, cpu = trained["cost.train_wall_seconds"], trained["cost.train_cpu_seconds"]
    assert 0 < cpu <= wall * (os.cpu_count() or 1) + 0.5
    assert trained["cost.train_peak_memory_bytes"] > 50 * 2**20  # a Python process with pandas/sklearn loaded
    assert trained["cost.train_peak_memory_bytes"] >= trained["cost.train_peak_memory_increase_bytes"]

    # Serve the champion and make a known number of prediction requests.
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # the app sets it; restored afterwards
    rows = pd.read_parquet(small_churn_spec.source_dir / f"{SMALL_DAYS[-1]}.parquet")
    columns = [*features["numeric_features"], *features["categorical_features"]]
    server = start_server(platform_env, model=name)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(REQUESTS):
                body = {"dataframe_records": json.loads(
                    rows[columns].iloc[i * ROWS_PER_REQUEST:(i + 1) * ROWS_PER_REQUEST].to_json(orient="records"))}
                response = client.post("/invocations", json=body)
                assert response.status_code == 200, response.text
            deadline = time.monotonic() + 10  # the prediction log is written in the background
            while metric_value(client.get("/metrics").text, "mlplatform_serving_prediction_log_rows_written_total") \
                    < REQUESTS * ROWS_PER_REQUEST:
                assert time.monotonic() < deadline, "prediction log rows not written"
                time.sleep(0.1)
        monkeypatch.setenv("MLPLATFORM_PRICE_CPU_HOUR", str(CPU_PRICE))
        monkeypatch.setenv("MLPLATFORM_PRICE_GB_MONTH", str(GB_PRICE))
        # The server runs in this process, so the CPU it reports lies between this process's CPU time just
        # before and just after the scrape (the cost command itself burns CPU in between).
        cpu_before = time.process_time()
        report = _cost_json(capsys, name, "--endpoint", server.url)
        cpu_after = time.process_time()
        assert main(["cost", name, "--endpoint", server.url]) == 0
        table = capsys.readouterr().out
    finally:
        server.stop()
    print(table)

    # Training: one measured run, the same figures as the metadata.
    training = report["training"]
    assert training["unmeasured_runs"] == 0 and training["total"]["runs"] == 1
    last = training["last_run"]
    assert last["version"] == "1" and last["run_id"] == trained["mlflow_run_id"]
    assert last["cpu_seconds"] == pytest.approx(cpu) and last["train_rows"] == features["train_rows"]

    # Storage: every kind equals the bytes of its files on disk.
    data = Path(platform_env.data_uri) / name
    by_kind = {k: v["bytes"] for k, v in report["storage"]["by_kind"].items()}
    assert by_kind["raw data"] == _bytes_under(data / "raw", "**/*") > 0
    assert by_kind["validated data"] == _bytes_under(data / "validated", "**/*") > 0
    assert by_kind[RUN_DATASETS] == _bytes_under(data, "*/runs/**/*") > 0
    experiment_dir = Path(platform_env.artifact_root[len("file://"):]) / name
    assert by_kind[MLFLOW_RUNS] > 0 and by_kind[MLFLOW_MODELS] > 0
    assert by_kind[MLFLOW_RUNS] + by_kind[MLFLOW_MODELS] == _bytes_under(experiment_dir, "**/*")
    assert by_kind[PREDICTION_LOG] == _bytes_under(Path(platform_env.prediction_log_uri) / name, "**/*") > 0
    assert report["storage"]["total_bytes"] == sum(by_kind.values())

    # Serving: exactly the requests made, and the process CPU (this test process) since it started.
    serving = report["serving"]["total"]
    assert serving["prediction_requests"] == REQUESTS
    assert serving["predicted_rows"] == REQUESTS * ROWS_PER_REQUEST
    assert serving["requests"] > REQUESTS  # readiness probes and /metrics scrapes count too
    # /proc counts CPU in clock ticks (10 ms), hence the small slack on either side.
    assert cpu_before - 0.05 <= serving["cpu_seconds"] <= cpu_after + 0.05

    # Money: CPU-hours and GB-months times the configured prices.
    money = report["money"]
    assert report["prices"] == {"cpu_hour": CPU_PRICE, "gb_month": GB_PRICE}
    assert money["training_cpu_total"] == pytest.approx(cpu / 3600 * CPU_PRICE)
    assert money["serving_cpu"] == pytest.approx(serving["cpu_seconds"] / 3600 * CPU_PRICE)
    assert money["storage_per_month"] == pytest.approx(report["storage"]["total_bytes"] / GIB * GB_PRICE)

    # The table shows the same figures.
    lines = table.splitlines()
    assert f"(prices: CPU-hour {CPU_PRICE:g}, GB-month {GB_PRICE:g})" in lines[0]
    raw_line = next(line for line in lines if line.startswith("raw data"))
    assert str(by_kind["raw data"]) in raw_line.split()
    serving_total = [line for line in lines if line.startswith("total")][-1].split()
    assert serving_total[2] == str(REQUESTS) and serving_total[3] == str(REQUESTS * ROWS_PER_REQUEST)
    assert any(line.startswith("last run (v1,") for line in lines)
