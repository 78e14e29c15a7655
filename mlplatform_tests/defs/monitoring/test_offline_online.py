"""model_performance on a real instance and MLflow store: holdout vs realized metric per served version,
the offline_online_divergence alert, and the champion_stale alert from the backtest's cadence."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.model.staleness import ARTIFACT, CADENCE_METRIC
from mlplatform_assets.lib.monitoring.alerts import read_alerts
from mlplatform_assets.lib.spec import load_specs
from mlplatform_tests.conftest import SMALL_END, write_small_spec
from mlplatform_tests.defs.monitoring.test_monitoring_assets import _meta


def test_divergence_and_staleness_alerts(platform_env, small_source):
    spec_path = write_small_spec(Path(platform_env.models_dir), small_source)
    spec_path.write_text(spec_path.read_text() + "monitoring: {max_offline_online_gap: 0.1, offline_online_min_rows: 50}\n")
    assert run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]["success"]
    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)
    champion = registry.champion("small_churn")
    holdout_auc = json.loads(champion.tags["mlplatform.holdout_metrics"])["roc_auc"]

    # The backtest ran at training and is recorded on the version's run: the curve with step = age.
    recorded = json.loads(registry.download_artifact(champion.run_id, ARTIFACT))
    assert recorded["metric"] == "roc_auc" and recorded["cuts"]
    history = registry.client.get_metric_history(champion.run_id, "staleness.roc_auc")
    assert sorted(m.step for m in history) == [p["age"] for p in recorded["curve"]]
    # Stationary churn data: no decay, so no cadence and no staleness alert. To exercise the alert path, give
    # the champion the cadence a decaying backtest would have logged: it is stale from 2 days after its data.
    assert recorded["cadence_days"] is None
    registry.client.log_metric(champion.run_id, CADENCE_METRIC, 1.0)

    # A normal day, and a day whose labels arrive inverted (a join/encoding bug upstream of serving).
    normal, skewed = SMALL_END + dt.timedelta(days=1), SMALL_END + dt.timedelta(days=2)
    example_data.write_example_days("customer_churn", small_source, [normal, skewed], rows=300)
    path = small_source / f"{skewed}.parquet"
    frame = pd.read_parquet(path)
    frame["churned"] = 1 - frame["churned"]
    frame.to_parquet(path, index=False)

    instance = dg.DagsterInstance.get()
    defs = build_definitions(platform_env, load_specs(platform_env.models_dir, platform_env.state_dir))
    for day in (normal, skewed):
        assert defs.resolve_job_def("small_churn__ingest").execute_in_process(
            instance=instance, partition_key=str(day)).success

    def monitor(day):
        result = defs.resolve_job_def("small_churn__monitoring").execute_in_process(
            instance=instance, partition_key=str(day))
        assert result.success
        return _meta(result, "model_performance")

    calm = monitor(normal)
    assert calm["holdout_roc_auc"] == holdout_auc
    assert calm["offline_online_gap"] == calm["realized_roc_auc"] - holdout_auc
    assert abs(calm["offline_online_gap"]) < 0.1 and calm["offline_online_diverged"] is False
    assert calm["champion_age_days"] == 1 and calm["staleness_cadence_days"] == 1 and calm["champion_stale"] is False
    assert read_alerts(platform_env.alerts_log_path, "small_churn") == []

    bad = monitor(skewed)
    assert bad["realized_roc_auc"] < 0.5 and bad["offline_online_gap"] < -0.1 and bad["offline_online_diverged"] is True
    assert bad["offline_online_by_version"]["1"]["rows"] == bad["matched_rows"]
    assert bad["champion_age_days"] == 2 and bad["champion_stale"] is True
    alerts = {a["kind"]: a for a in read_alerts(platform_env.alerts_log_path, "small_churn")}
    assert set(alerts) == {"offline_online_divergence", "champion_stale"}
    divergence = alerts["offline_online_divergence"]
    assert divergence["partition"] == str(skewed) and divergence["details"]["version"] == "1"
    assert divergence["details"]["gap"] == bad["offline_online_gap"]
    assert alerts["champion_stale"]["details"] == {"version": "1", "age_days": 2, "cadence_days": 1, "stale": True}
    assert bad["alerts_sent"] == ["champion_stale:v1", "offline_online_divergence:v1"]

    # Re-running the day (a retry, a backfill) repeats the verdict in the metadata, not the pages.
    again = monitor(skewed)
    assert again["offline_online_diverged"] is True and again["champion_stale"] is True
    assert again["alerts_sent"] == bad["alerts_sent"]
    assert len(read_alerts(platform_env.alerts_log_path, "small_churn")) == 2
