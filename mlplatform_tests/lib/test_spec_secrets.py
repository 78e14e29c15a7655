"""A value a spec takes from the environment is used by the run but recorded nowhere: not in the Dagster
event log, asset or sensor descriptions, MLflow params, tags, artifacts or its store. The recorded spec keeps
the ${VAR} reference, so `reproduce` resolves it again from its own environment."""

from pathlib import Path

import dagster as dg
import pytest

from mlplatform_assets.definitions import build_definitions
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.model.lifecycle import reproduce
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.spec import load_specs, parse_spec
from mlplatform_tests.conftest import (
    SMALL_DAYS,
    SMALL_NAME,
    write_churn_days,
    write_small_spec,
)

TOKEN = "tok-5ecr3t-81f2c9"


@pytest.mark.slow  # a real ingest + training run through Dagster and MLflow
def test_environment_values_stay_out_of_dagster_and_mlflow(platform_env, tmp_path, monkeypatch):
    config = platform_env
    source = tmp_path / "sources" / TOKEN / SMALL_NAME  # stands for a credential-bearing location
    write_churn_days(source)
    monkeypatch.setenv("CHURN_SOURCE_DIR", str(source))
    monkeypatch.setenv("CHURN_SOLVER", "liblinear")
    write_small_spec(config.models_dir, "${CHURN_SOURCE_DIR}", params="{solver: '${CHURN_SOLVER}', max_iter: 300}")
    (spec,) = load_specs(config.models_dir, config.state_dir)
    assert spec.source.uri == str(source) and spec.estimator.params["solver"] == "liblinear"

    defs = build_definitions(config, [spec])
    instance = dg.DagsterInstance.ephemeral()
    ingest = defs.resolve_job_def(f"{SMALL_NAME}__ingest").execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": str(SMALL_DAYS[0]),
        "dagster/asset_partition_range_end": str(SMALL_DAYS[-1])})
    training = defs.resolve_job_def(f"{SMALL_NAME}__training").execute_in_process(instance=instance)
    assert ingest.success and training.success

    raw_meta = ingest.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
    assert raw_meta["source"].value == "${CHURN_SOURCE_DIR}"
    repo = defs.get_repository_def()
    descriptions = [repo.asset_graph.get(k).description or "" for k in repo.asset_graph.get_all_asset_keys()]
    descriptions += [s.description or "" for s in repo.sensor_defs]
    assert any("${CHURN_SOURCE_DIR}" in d for d in descriptions)
    event_log = "".join(repr(record) for run in (ingest, training) for record in instance.all_logs(run.run_id))
    for text in (event_log, *descriptions):
        assert TOKEN not in text

    registry = Registry(MlflowSettings.from_config(config), config.audit_log_path)
    version = registry.champion(SMALL_NAME).version
    run = registry.client.get_run(registry.get_version(SMALL_NAME, version).run_id)
    assert run.data.params["estimator.solver"] == "${CHURN_SOLVER}"
    recorded = registry.download_artifact(run.info.run_id, "spec.yaml").decode()
    assert "${CHURN_SOURCE_DIR}" in recorded
    # Nothing MLflow stored holds the value: its database, params, tags and every artifact file.
    mlflow_files = [p for p in Path(config.state_dir, "mlflow").rglob("*") if p.is_file()]
    assert any(p.name == "spec.yaml" for p in mlflow_files) and any(p.suffix == ".db" for p in mlflow_files)
    leaking = [str(p) for p in mlflow_files if TOKEN.encode() in p.read_bytes()]
    assert leaking == []
    assert TOKEN not in repr(run.data.params) + repr(run.data.tags)

    # The recorded spec resolves the reference from the reader's environment, and reproduces exactly.
    assert parse_spec(recorded).source.uri == str(source)
    result = reproduce(registry, ObjectStore(config.data_uri), SMALL_NAME, str(version))
    assert result.identical and result.data_matches, result.message
