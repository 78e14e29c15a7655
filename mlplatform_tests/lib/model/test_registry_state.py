"""Version states: what a training run that died leaves behind is cleaned up, and never becomes champion."""

import pytest

from mlplatform_assets.lib.model.registry import (
    CHALLENGER,
    STATE_ABANDONED,
    STATE_EVALUATED,
    STATE_PENDING,
    TAG_DAGSTER_RUN,
    TAG_STATE,
    MlflowSettings,
    Registry,
    RegistryError,
)


@pytest.fixture()
def registry(tmp_path):
    db = f"sqlite:///{tmp_path}/mlflow.db"
    return Registry(MlflowSettings(db, db, (tmp_path / "artifacts").as_uri()), str(tmp_path / "audit.jsonl"))


def _version(registry, dagster_run: str, state: str | None, finish: bool) -> tuple[str, str]:
    """A version as log_training leaves it: an MLflow run tagged with its Dagster run, a registered version."""
    client = registry.client
    run = client.create_run(registry.experiment_id("m"), tags={TAG_DAGSTER_RUN: dagster_run})
    if finish:
        client.set_terminated(run.info.run_id, status="FINISHED")
    tags = {TAG_DAGSTER_RUN: dagster_run, **({TAG_STATE: state} if state else {})}
    mv = client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id, tags=tags)
    return str(mv.version), run.info.run_id


def test_reconcile_abandons_what_dead_runs_left_and_keeps_the_rest(registry):
    client = registry.client
    client.create_registered_model("m")
    legacy, _ = _version(registry, "old", None, finish=True)                      # before states existed
    evaluated, _ = _version(registry, "done", STATE_EVALUATED, finish=True)
    orphan, orphan_run = _version(registry, "dead", STATE_PENDING, finish=False)  # killed before evaluation
    live, live_run = _version(registry, "alive", STATE_PENDING, finish=False)     # a run still in progress
    killed_while_logging = client.create_run(registry.experiment_id("m"), tags={TAG_DAGSTER_RUN: "dead2"})
    client.set_registered_model_alias("m", CHALLENGER, orphan)
    registry.move_champion("m", evaluated, action="initial", reason="setup", actor="test")

    done = registry.reconcile_incomplete("m", lambda run_id: run_id == "alive")

    assert sorted(done["failed_mlflow_runs"]) == sorted([orphan_run, killed_while_logging.info.run_id])
    assert done["abandoned_versions"] == [orphan]
    assert client.get_run(orphan_run).info.status == "FAILED"
    assert client.get_run(live_run).info.status == "RUNNING"
    states = {v: client.get_model_version("m", v).tags.get(TAG_STATE) for v in (legacy, evaluated, orphan, live)}
    assert states == {legacy: None, evaluated: STATE_EVALUATED, orphan: STATE_ABANDONED, live: STATE_PENDING}
    assert "ended before evaluating" in client.get_model_version("m", orphan).tags["mlplatform.abandoned_reason"]
    assert registry.alias_version("m", CHALLENGER) is None
    assert str(registry.champion("m").version) == evaluated
    # Idempotent: a second pass finds nothing more.
    assert registry.reconcile_incomplete("m", lambda run_id: run_id == "alive") == {
        "failed_mlflow_runs": [], "abandoned_versions": []}

    # Neither an abandoned nor a still-pending version can become champion, by promotion or rollback;
    # a version from before states existed can.
    for version, state in ((orphan, STATE_ABANDONED), (live, STATE_PENDING)):
        with pytest.raises(RegistryError, match=f"v{version} is {state}, not evaluated"):
            registry.rollback("m", to_version=version, actor="test")
    assert str(registry.champion("m").version) == evaluated
    registry.rollback("m", to_version=legacy, actor="test")
    assert str(registry.champion("m").version) == legacy
