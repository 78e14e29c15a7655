"""drift_report, batch_predictions and model_performance on a real instance and MLflow store."""

import datetime as dt
from pathlib import Path

import dagster as dg
import pandas as pd

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.monitoring.batch import predictions_key
from mlplatform_assets.lib.spec import load_specs
from mlplatform_tests.conftest import SMALL_END, write_small_spec


def _monitor(defs, instance, day):
    return defs.resolve_job_def("small_churn__monitoring").execute_in_process(
        instance=instance, partition_key=str(day), raise_on_error=False)


def _meta(result, asset):
    for e in result.get_asset_materialization_events():
        if e.asset_key.path[-1] == asset:
            return {k: getattr(v, "value", v) for k, v in e.event_specific_data.materialization.metadata.items()}
    raise AssertionError(f"{asset} not materialized")


def test_drift_batch_predictions_and_realized_quality(platform_env, small_source):
    write_small_spec(Path(platform_env.models_dir), small_source)
    [lifecycle] = run_lifecycle(platform_env, ["small_churn"], SMALL_END)
    assert lifecycle["success"]
    # The evaluation's Markdown summary and the link that opens the Evidently report in the MLflow UI.
    evaluation = lifecycle["assets"]["evaluation_report"]
    assert "challenger v1 vs no champion yet" in evaluation["summary"] and "Per class" in evaluation["summary"]
    assert evaluation["report"].startswith("http://127.0.0.1:5000/#/experiments/")
    assert evaluation["report"].endswith("/artifacts/evaluation/evaluation_v1.html")
    instance = dg.DagsterInstance.get()
    defs = build_definitions(platform_env, load_specs(platform_env.models_dir, platform_env.state_dir))
    store = ObjectStore(platform_env.data_uri)

    # A normal day and a drifted day land and are ingested.
    normal, drifted = SMALL_END + dt.timedelta(days=1), SMALL_END + dt.timedelta(days=2)
    example_data.write_example_days("customer_churn", small_source, [normal], rows=300)
    example_data.write_example_days("customer_churn", small_source, [drifted], rows=300, drift=True)
    ingest = defs.resolve_job_def("small_churn__ingest")
    for day in (normal, drifted):
        assert ingest.execute_in_process(instance=instance, partition_key=str(day)).success

    calm = _monitor(defs, instance, normal)
    assert calm.success
    calm_meta = _meta(calm, "drift_report")
    shifted = _monitor(defs, instance, drifted)
    assert shifted.success
    drift_meta = _meta(shifted, "drift_report")
    assert calm_meta["dataset_drift"] is False and drift_meta["dataset_drift"] is True
    assert drift_meta["drift_share"] > calm_meta["drift_share"]
    assert drift_meta["n_drifted_columns"] >= 3
    assert "monthly_charges | numerical" in drift_meta["columns"] and "**yes**" in drift_meta["columns"]
    assert isinstance(drift_meta["prediction_drift_score"], float)
    assert Path(drift_meta["report_uri"]).stat().st_size > 10_000
    assert drift_meta["champion_version"] == "1" and len(drift_meta["data_sha256"]) == 64
    # The WARN check: passes on the calm day, fails on the drifted one naming the drifted columns.
    [calm_check] = calm.get_asset_check_evaluations()
    [drift_check] = shifted.get_asset_check_evaluations()
    assert calm_check.check_name == "no_dataset_drift" and calm_check.passed
    assert not drift_check.passed and drift_check.severity == dg.AssetCheckSeverity.WARN
    assert drift_check.description.startswith("dataset drift: drift share ")
    assert "monthly_charges" in drift_check.description.split("drifted: ")[1]
    assert "monthly_charges" in drift_check.metadata["drifted_columns"].value

    # Batch predictions: one row per validated row, each with the version that made it.
    preds = store.read_frame(predictions_key("small_churn", normal))
    validated = store.read_frame(f"small_churn/validated/date={normal}/data.parquet")
    assert len(preds) == len(validated) and set(preds["model_version"]) == {"1"}
    assert preds["probability"].between(0, 1).all()

    # Realized quality: labels are present for these days, so the metric of the served version is computed.
    perf = _meta(calm, "model_performance")
    assert perf["labels_available"] is True and perf["served_version"] == "1"
    assert perf["matched_rows"] == len(validated)
    assert 0.5 < perf["realized_roc_auc"] <= 1.0


def test_monitoring_without_champion_fails_clearly(platform_env, small_source):
    write_small_spec(Path(platform_env.models_dir), small_source)
    defs = build_definitions(platform_env, load_specs(platform_env.models_dir, platform_env.state_dir))
    instance = dg.DagsterInstance.ephemeral()
    assert defs.resolve_job_def("small_churn__ingest").execute_in_process(
        instance=instance, partition_key=str(SMALL_END)).success
    res = _monitor(defs, instance, SMALL_END)
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no champion" in failure.event_specific_data.error.message


def test_endpoint_prediction_log_feeds_prediction_drift(tmp_path, small_source):
    """The live endpoint's prediction log (its on-disk layout) is read for the day's prediction drift."""
    from mlplatform_assets.defs.monitoring.assets import _endpoint_scores
    from mlplatform_assets.defs.resources import PlatformResource
    from mlplatform_assets.lib.spec import load_spec

    spec = load_spec(write_small_spec(tmp_path / "models", small_source), state_dir=str(tmp_path))
    day = SMALL_END
    part = tmp_path / "predictions" / spec.name / f"date={day}"
    part.mkdir(parents=True)
    pd.DataFrame({"timestamp": pd.date_range(str(day), periods=3, freq="h"), "request_id": ["a", "b", "c"],
                  "row": [0, 0, 0], "model_version": ["1", "1", "2"], "prediction": [0, 1, 1],
                  "probability": [0.1, 0.7, 0.9]}).to_parquet(part / "part-0001.parquet", index=False)
    platform = PlatformResource(state_dir=str(tmp_path),
                                alerts_log_path=str(tmp_path / "a.jsonl"), prediction_log_uri=str(tmp_path / "predictions"))
    scores = _endpoint_scores(spec, platform, day)
    assert scores.tolist() == [0.1, 0.7, 0.9]
    assert _endpoint_scores(spec, platform, day + dt.timedelta(days=1)) is None  # nothing served that day


def test_delayed_labels_below_floor_roll_back_the_serving_version(platform_env, small_source):
    """The whole chain with real assets: v2 serves, a day's labels show it below the quality floor,
    the quality sensor alerts and (auto_rollback on) brings v1 back, audited."""
    from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
    from mlplatform_assets.lib.monitoring.alerts import read_alerts

    models = Path(platform_env.models_dir)
    write_small_spec(models, small_source, estimator="sklearn.dummy.DummyClassifier", params="{strategy: prior}",
                     promotion="{must_beat_baseline: false}")  # a constant is no better than the prior baseline
    assert run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]["success"]  # v1: constant scores
    spec_path = write_small_spec(models, small_source)  # v2: logistic regression, promoted over v1
    spec_path.write_text(spec_path.read_text() + "drift: {quality_floor: 0.99, auto_rollback: true}\n")
    assert run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]["assets"]["deployed_endpoint"]["promoted"]
    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)
    assert str(registry.champion("small_churn").version) == "2"

    instance = dg.DagsterInstance.get()
    defs = build_definitions(platform_env, load_specs(platform_env.models_dir, platform_env.state_dir))
    day = SMALL_END + dt.timedelta(days=1)
    example_data.write_example_days("customer_churn", small_source, [day], rows=300)
    assert defs.resolve_job_def("small_churn__ingest").execute_in_process(
        instance=instance, partition_key=str(day)).success
    perf = _meta(_monitor(defs, instance, day), "model_performance")
    assert perf["served_version"] == "2" and perf["below_floor"] is True and perf["realized_roc_auc"] < 0.99

    sensor = defs.get_sensor_def("small_churn__quality_sensor")
    with dg.build_sensor_context(instance=instance, cursor=None, definitions=defs,
                                 resources=defs.get_repository_def().get_top_level_resources()) as ctx:
        sensor.evaluate_tick(ctx)
    assert str(registry.champion("small_churn").version) == "1"
    last = registry.audit_records("small_churn")[-1]
    assert (last["decision"], last["from_version"], last["to_version"]) == ("rolled_back", "2", "1")
    kinds = [a["kind"] for a in read_alerts(platform_env.alerts_log_path, model="small_churn")]
    assert "quality_floor" in kinds and "rollback" in kinds
