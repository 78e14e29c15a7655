"""End-to-end lifecycle through Dagster on a real instance and a real MLflow SQLite store."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mlplatform_assets.cli import main, run_lifecycle
from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.data.storage import ObjectStore, read_records
from mlplatform_assets.lib.model import registry as reg_mod
from mlplatform_assets.lib.model.lifecycle import reproduce
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry, RegistryError
from mlplatform_assets.lib.spec import load_specs
from mlplatform_tests.conftest import SMALL_DAYS, SMALL_END, write_small_spec


def _registry(config):
    return Registry(MlflowSettings.from_config(config), config.audit_log_path)


def _run(config, **kw):
    return run_lifecycle(config, ["small_churn"], SMALL_END, **kw)[0]


def test_train_promote_reject_rollback_with_audit(platform_env, small_source, capsys):
    platform_models = Path(platform_env.models_dir)
    write_small_spec(platform_models, small_source)
    first = _run(platform_env)
    assert first["success"], first
    registry = _registry(platform_env)
    champ = registry.champion("small_churn")
    assert champ is not None and str(champ.version) == "1"

    # Complete lineage on the run and the version.
    run = registry.client.get_run(champ.run_id)
    for tag in reg_mod.LINEAGE_TAGS:
        assert run.data.tags.get(tag), f"missing lineage tag {tag}"
    assert run.data.tags[reg_mod.TAG_PARTITIONS] == f"{SMALL_DAYS[0]}..{SMALL_DAYS[-1]}"
    assert run.data.tags[reg_mod.TAG_DAGSTER_RUN] == first["run_id"]
    assert run.data.metrics["holdout_roc_auc"] > 0.6
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"small_churn-train", "small_churn-holdout"}
    # The Dagster materialization points back at MLflow.
    tm = first["assets"]["trained_model"]
    assert tm["mlflow_run_id"] == champ.run_id and tm["model_version"] == "1"
    assert isinstance(tm["holdout_roc_auc"], float)

    # A deliberately worse challenger: same model, a constant predictor, no floor so the champion comparison decides.
    write_small_spec(platform_models, small_source, estimator="sklearn.dummy.DummyClassifier",
                     params="{strategy: prior}")
    second = _run(platform_env)
    assert second["success"], second
    assert second["assets"]["deployed_endpoint"]["promoted"] is False
    # A constant predictor is refused by the baseline check before the champion comparison.
    assert "not better than the baseline prior" in second["assets"]["deployed_endpoint"]["reason"]
    assert str(registry.champion("small_churn").version) == "1"
    assert str(registry.alias_version("small_churn", "challenger").version) == "2"
    # The evaluation is attached to the challenger's run: both models' scores on the same holdout.
    run2 = registry.client.get_run(registry.get_version("small_churn", "2").run_id)
    assert run2.data.metrics["delta_roc_auc"] < 0
    assert run2.data.metrics["champion_roc_auc"] == pytest.approx(run.data.metrics["holdout_roc_auc"])
    evaluation = {a.path for a in registry.client.list_artifacts(run2.info.run_id, "evaluation")}
    assert "evaluation/decision.json" in evaluation and any(p.endswith(".html") for p in evaluation)
    # The gate's rigor is on the run: the paired interval vs the champion and the baselines.
    assert "evaluation/rigor.json" in evaluation
    assert run2.data.metrics["gate.delta_upper"] < 0 and run2.data.metrics["gate.rows"] > 0
    assert run2.data.metrics["baseline.prior.roc_auc"] == pytest.approx(0.5)

    # A better-enough third model is promoted over v1 (when its gain is significant); sliced by region and age.
    write_small_spec(platform_models, small_source, estimator="sklearn.ensemble.HistGradientBoostingClassifier",
                     params="{max_iter: 60, learning_rate: 0.1}",
                     promotion="{min_slice_rows: 50}", evaluation="{slices: [region, {column: age, bins: [35, 50]}]}")
    third = _run(platform_env)
    assert second["assets"]["evaluation_report"]["gate.delta_upper"] < 0
    assert third["assets"]["evaluation_report"]["slices.age.largest_gap"] >= 0
    run3 = registry.client.get_run(registry.get_version("small_churn", "3").run_id)
    slices = json.loads(registry.download_artifact(run3.info.run_id, "evaluation/slices.json"))
    assert {s["slice"] for s in slices["slices"] if s["column"] == "age"} == {"< 35", "[35, 50)", ">= 50", "(missing)"}
    assert sum(s["rows"] for s in slices["slices"] if s["column"] == "region") == run3.data.metrics["gate.rows"]
    promoted = third["assets"]["deployed_endpoint"]["promoted"]
    expected_champion = "3" if promoted else "1"
    assert str(registry.champion("small_churn").version) == expected_champion

    audit = registry.audit_records("small_churn")
    assert [a["decision"] for a in audit[:2]] == ["promoted", "kept_champion"]
    assert audit[0]["to_version"] == "1" and audit[0]["from_version"] is None
    assert audit[1]["to_version"] == "2" and "baseline prior" in audit[1]["reason"]
    assert audit[1]["details"]["interval"]["upper"] < 0 and audit[1]["details"]["require"] == "significant"
    assert audit[0]["details"]["baselines"]["linear"]["estimator"] == "LogisticRegression"
    assert all(a["dagster_run_id"] for a in audit)
    # The local mirror holds the same records.
    assert [r["decision"] for r in read_records(platform_env.audit_log_path)] == [a["decision"] for a in audit]

    if not promoted:
        registry.move_champion("small_churn", "3", action="promote", reason="test setup", actor="test")
    capsys.readouterr()
    assert main(["rollback", "small_churn", "--reason", "bad canary"]) == 0
    assert "champion v3 -> v1" in capsys.readouterr().out
    assert str(registry.champion("small_churn").version) == "1"
    last = registry.audit_records("small_churn")[-1]
    assert (last["from_version"], last["to_version"], last["decision"]) == ("3", "1", "rolled_back")
    assert last["reason"] == "bad canary" and last["actor"].startswith("cli:")
    assert main(["audit", "small_churn"]) == 0
    assert capsys.readouterr().out.count("\n") == len(registry.audit_records("small_churn"))
    with pytest.raises(RegistryError, match="already the champion"):
        registry.rollback("small_churn", to_version="1", actor="test")
    with pytest.raises(RegistryError, match="no version '99'"):
        registry.rollback("small_churn", to_version="99", actor="test")

    # Reproduce v1 exactly from its recorded spec and partitions (library and CLI).
    result = reproduce(registry, ObjectStore(platform_env.data_uri), "small_churn", "1")
    assert result.identical and result.data_matches and result.rows > 0, result.message
    assert main(["reproduce", "small_churn", "3"]) == 0
    assert "v3 reproduced exactly" in capsys.readouterr().out

    # Reproduction refuses when the recorded data changed underneath.
    store = ObjectStore(platform_env.data_uri)
    key = f"small_churn/validated/date={SMALL_DAYS[0]}/data.parquet"
    frame = store.read_frame(key)
    store.write_frame(key, frame.iloc[1:])
    changed = reproduce(registry, store, "small_churn", "1")
    assert not changed.identical and not changed.data_matches and "data changed" in changed.message


@pytest.fixture(scope="module")
def trained_state(tmp_path_factory):
    """One trained champion for the bad-partition cases; each case works on its own copy of it."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        for var, sub in (("MLPLATFORM_HOME", "state"), ("MLPLATFORM_MODELS_DIR", "models"),
                         ("DAGSTER_HOME", "state/dagster")):
            mp.setenv(var, str(base / sub))
        for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLPLATFORM_DATA_URI", "MLPLATFORM_ARTIFACT_ROOT"):
            mp.delenv(var, raising=False)
        from mlplatform_assets.lib.config import ensure_dirs, load_config
        from mlplatform_assets.lib.data import example_data

        config = load_config()
        ensure_dirs(config)
        example_data.write_example_days("customer_churn", base / "source", SMALL_DAYS, rows=300)
        write_small_spec(Path(config.models_dir), base / "source")
        assert _run(config)["success"]
    return base


@pytest.mark.parametrize("problem, expect_check, expect_text", [
    ("missing_column", "required_columns", "monthly_charges"),
    ("wrong_dtype", "dtypes", "monthly_charges is object"),
    ("empty_file", "non_empty", "0 rows"),
    ("all_null_target", "target_domain", "null in every row"),
    ("duplicated_rows", "duplicate_share", "duplicate share"),
    ("infinite_feature", "finite_values", "non-finite values in monthly_charges: 3 inf and 1 -inf"),
    ("rows_of_another_day", "timestamps_in_partition", "rows have event_time outside"),
])
def test_bad_partition_blocks_downstream_and_keeps_champion(trained_state, tmp_path, monkeypatch, problem,
                                                            expect_check, expect_text):
    import shutil

    from mlplatform_assets.lib.config import load_config

    # A private copy of the trained state. Paths inside the stores point at the original directory,
    # which this test only reads (nothing is trained here).
    shutil.copytree(trained_state / "state", tmp_path / "state", symlinks=True)
    shutil.copytree(trained_state / "source", tmp_path / "source")
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "state" / "dagster"))
    monkeypatch.setenv("MLPLATFORM_MODELS_DIR", str(tmp_path / "models"))
    for var in ("MLFLOW_TRACKING_URI", "MLPLATFORM_DATA_URI", "MLPLATFORM_ARTIFACT_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLPLATFORM_ARTIFACT_ROOT", (trained_state / "state" / "mlflow" / "artifacts").as_uri())
    platform_env = load_config()
    small_source = tmp_path / "source"
    write_small_spec(Path(platform_env.models_dir), small_source)
    registry = _registry(platform_env)
    champion_before = str(registry.champion("small_churn").version)

    bad_day = SMALL_END + dt.timedelta(days=1)
    df = pd.read_parquet(small_source / f"{SMALL_END}.parquet")
    df["event_time"] += pd.Timedelta(days=1)  # the copied rows belong to the bad day; only the problem is wrong
    if problem == "missing_column":
        df = df.drop(columns=["monthly_charges"])
    elif problem == "wrong_dtype":
        df["monthly_charges"] = df["monthly_charges"].map(lambda v: f"${v}")
    elif problem == "empty_file":
        df = df.iloc[0:0]
    elif problem == "all_null_target":
        df["churned"] = None
    elif problem == "duplicated_rows":
        df = pd.concat([df, df.head(len(df) // 2)])
    elif problem == "infinite_feature":
        df.loc[:2, "monthly_charges"] = float("inf")
        df.loc[3, "monthly_charges"] = float("-inf")
    elif problem == "rows_of_another_day":
        df["event_time"] -= pd.Timedelta(days=400)
    df.to_parquet(small_source / f"{bad_day}.parquet", index=False)

    summary = run_lifecycle(platform_env, ["small_churn"], bad_day)[0]
    assert summary["success"] is False
    failed = [c for c in summary["failed_checks"] if c.startswith(expect_check)]
    assert failed and expect_text in failed[0] and str(bad_day) in failed[0], summary["failed_checks"]
    failed_names = {c.split(":")[0] for c in summary["failed_checks"]}
    assert not failed_names & {"finite_values", "timestamps_in_partition"} - {expect_check}, failed_names
    # Nothing downstream of the raw data materialized in that run; no new version; champion unchanged.
    assert set(summary["assets"]) == {"raw_data"}
    assert str(registry.champion("small_churn").version) == champion_before
    assert len(registry.client.search_model_versions("name='small_churn'")) == 1
    if problem == "empty_file":  # the headless command reports the failure through its exit code
        assert main(["lifecycle", "--model", "small_churn", "--as-of", str(bad_day)]) == 1
        assert main(["lifecycle", "--model", "no_such_model"]) == 2
    store = ObjectStore(platform_env.data_uri)
    assert store.exists(f"small_churn/validated/date={SMALL_END}/data.parquet")
    assert not store.exists(f"small_churn/validated/date={bad_day}/data.parquet")


def test_unseen_dataset_single_csv_with_inferred_features(platform_env, tmp_path):
    """A dataset the platform_env has never seen (sklearn's wine data, with a synthetic timestamp), one CSV file,
    features inferred, a different estimator: trains and gets a champion with no code change."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame
    data = data.sample(frac=1.0, random_state=0).reset_index(drop=True)
    start = pd.Timestamp("2026-01-01")
    data.insert(0, "measured_at", start + pd.to_timedelta((data.index.to_numpy() * 20 * 86400) // len(data), unit="s"))
    data["clinic"] = ["a", "b", "c"] * (len(data) // 3) + ["a"] * (len(data) % 3)
    csv = tmp_path / "tumours.csv"
    data.to_csv(csv, index=False)
    (Path(platform_env.models_dir) / "tumour_malignancy.yaml").write_text(f"""
name: tumour_malignancy
task: classification
source: {{uri: {csv}}}
timestamp_column: measured_at
partition_start: 2026-01-01
target: {{column: target, classes: [0, 1]}}
features: {{infer: true, exclude: []}}
estimator: {{class_path: sklearn.ensemble.RandomForestClassifier, params: {{n_estimators: 50}}}}
training: {{window_days: 20, holdout_days: 4, min_partitions: 10}}
metrics: {{primary: roc_auc}}
promotion: {{absolute_floor: 0.8}}
validation: {{min_rows: 1}}
""")
    summary = run_lifecycle(platform_env, ["tumour_malignancy"], dt.date(2026, 1, 20))[0]
    assert summary["success"], summary
    champion = _registry(platform_env).champion("tumour_malignancy")
    assert champion is not None and str(champion.version) == "1"
    assert len(summary["assets"]["features"]["numeric_features"]) == 30
    assert summary["assets"]["features"]["categorical_features"] == ["clinic"]


def test_materialize_with_dg_materialize_on_ephemeral_instance(platform_env, small_source):
    """The asset graph also runs via dg.materialize (how the UI's Materialize button executes a selection)."""
    write_small_spec(Path(platform_env.models_dir), small_source)
    config = platform_env
    defs = build_definitions(config, load_specs(config.models_dir, config.state_dir))
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("small_churn__ingest")
    res = job.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": str(SMALL_DAYS[0]),
        "dagster/asset_partition_range_end": str(SMALL_DAYS[-1])})
    assert res.success
    materialized = instance.get_materialized_partitions(dg.AssetKey(["small_churn", "validated_data"]))
    assert materialized == {str(d) for d in SMALL_DAYS}
    training = defs.resolve_job_def("small_churn__training").execute_in_process(instance=instance)
    assert training.success
    mats = {e.asset_key.path[-1]: e for e in training.get_asset_materialization_events()}
    assert set(mats) == {"features", "trained_model", "evaluation_report", "deployed_endpoint"}
    report_meta = mats["evaluation_report"].event_specific_data.materialization.metadata
    run_id, artifact = report_meta["report_artifact"].value[len("runs:/"):].split("/", 1)
    html = _registry(platform_env).download_artifact(run_id, artifact).decode()
    assert "ROC AUC" in html and "Accuracy" in html
    assert report_meta["promote"].value is True


def test_lifecycle_on_a_source_without_data_is_a_clear_error(platform_env, tmp_path, capsys):
    empty = tmp_path / "empty_source"
    empty.mkdir()
    write_small_spec(Path(platform_env.models_dir), empty)
    assert main(["lifecycle", "--model", "small_churn"]) == 2
    err = capsys.readouterr().err
    assert "small_churn: source" in err and "has no data" in err
