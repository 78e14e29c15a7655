"""Run coordination on a real Dagster instance: run-scoped intermediate data, the training lock,
and recovery of runs whose process is gone.

Concurrent runs are separate processes, as in production (two runs in threads of one process deadlock
in Python's logging configuration, which is not what is under test). They meet through files in the
test's directory: a run tagged ``gate=wait`` stops at its ``gate`` step until the test releases it.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from mlplatform_assets.defs.coordination import (
    CLI_HOST_TAG,
    CLI_PID_TAG,
    CLI_PROCESS_START_TAG,
    HELD,
    LOCK_STATE_TAG,
    TRAINING_TAG,
    TrainingLockResource,
    recover_dead_runs,
    training_lock,
)
from mlplatform_assets.defs.resources import (
    STORAGE_PREFIX_META,
    DatasetIOManager,
    LocalDataStore,
)
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.locks import process_identity

WAIT_S = 120
REPO = Path(__file__).resolve().parents[2]


def build_defs(root: Path) -> dg.Definitions:
    """A miniature of the lifecycle's wiring (IO manager, training lock) over assets of a model ``m``."""

    def wait_for(path: Path) -> None:
        deadline = time.monotonic() + WAIT_S
        while not path.exists():
            assert time.monotonic() < deadline, f"{path} never appeared"
            time.sleep(0.05)

    @dg.asset(key=["m", "dataset"])
    def dataset(context: dg.AssetExecutionContext) -> dict:
        return {"written_by": context.run.tags.get("writer", "?")}

    @dg.asset(key=["m", "gate"], deps=[dataset])
    def gate(context: dg.AssetExecutionContext) -> None:
        if context.run.tags.get("gate") == "wait":
            (root / "arrived").touch()
            wait_for(root / "release")

    @dg.asset(key=["m", "consumer"], ins={"dataset": dg.AssetIn(key=["m", "dataset"])}, deps=[gate])
    def consumer(context: dg.AssetExecutionContext, dataset: dict) -> dict:
        (root / f"loaded-{context.run.tags.get('writer', 'later')}.json").write_text(json.dumps(dataset))
        return dataset

    @dg.asset(key=["m", "trained_model"])
    def trained_model(training_lock: TrainingLockResource) -> dict:
        (root / "trained_at").write_text(str(time.time()))
        return {}

    @dg.asset(key=["m", "drift_report"])
    def drift_report() -> dict:
        return {}

    store = LocalDataStore(root=str(root / "data"), s3=dg.ResourceDefinition.none_resource())
    return dg.Definitions(
        assets=[dataset, gate, consumer, trained_model, drift_report],
        jobs=[dg.define_asset_job("pipeline", selection=[dataset, gate, consumer], executor_def=dg.in_process_executor),
              dg.define_asset_job("consume", selection=[consumer], executor_def=dg.in_process_executor),
              dg.define_asset_job("write", selection=[dataset], executor_def=dg.in_process_executor),
              dg.define_asset_job("training", selection=[trained_model], executor_def=dg.in_process_executor,
                                  tags={TRAINING_TAG: "m"}),
              dg.define_asset_job("monitoring", selection=[drift_report], executor_def=dg.in_process_executor)],
        resources={"io_manager": DatasetIOManager(data_store=store), "data_store": store,
                   "training_lock": TrainingLockResource()})


def run_job(root: str, job: str, tags_json: str) -> None:
    """Entry point of a run in its own process (see ``_start``)."""
    instance = dg.DagsterInstance.from_config(str(Path(root) / "dagster"))
    result = build_defs(Path(root)).resolve_job_def(job).execute_in_process(
        instance=instance, tags=json.loads(tags_json), raise_on_error=False)
    sys.exit(0 if result.success else 1)


def _start(root: Path, job: str, **tags: str) -> subprocess.Popen:
    code = f"from mlplatform_tests.defs.test_coordination import run_job; run_job(*{[str(root), job, json.dumps(tags)]!r})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "dagster").mkdir()
    return tmp_path


@pytest.fixture()
def instance(root):
    return dg.DagsterInstance.from_config(str(root / "dagster"))


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {path.name}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_concurrent_runs_read_their_own_intermediate_data(root, instance):
    defs = build_defs(root)
    # Run A writes its dataset, then stops at the gate; run B writes, reads and finishes meanwhile.
    run_a = _start(root, "pipeline", writer="A", gate="wait")
    try:
        _wait_for(root / "arrived", run_a)
        result_b = defs.resolve_job_def("pipeline").execute_in_process(instance=instance, tags={"writer": "B"})
    finally:
        (root / "release").touch()
        assert run_a.wait(WAIT_S) == 0
    assert result_b.success
    # Each run consumed the dataset it wrote itself (with one shared location, A would have read B's).
    assert json.loads((root / "loaded-A.json").read_text()) == {"written_by": "A"}
    assert json.loads((root / "loaded-B.json").read_text()) == {"written_by": "B"}

    # A later run that materializes only the consumer loads the dataset's latest materialization (B's),
    # found through the storage prefix recorded in its metadata.
    latest = instance.get_latest_materialization_event(dg.AssetKey(["m", "dataset"]))
    assert latest.run_id == result_b.run_id
    assert latest.asset_materialization.metadata[STORAGE_PREFIX_META].value == f"m/dataset/runs/{result_b.run_id}"
    assert defs.resolve_job_def("consume").execute_in_process(instance=instance).success
    assert json.loads((root / "loaded-later.json").read_text()) == {"written_by": "B"}


def test_old_run_outputs_are_pruned_but_latest_and_in_flight_kept(root, instance):
    defs = build_defs(root)
    write = defs.resolve_job_def("write")
    store = ObjectStore(str(root / "data"))

    def run_dirs() -> set[str]:
        return {k.split("/")[3] for k in store.list("m/dataset/runs/")}

    # An in-flight run (started, not finished) whose output exists is never pruned.
    in_flight = instance.create_run_for_job(write, status=dg.DagsterRunStatus.STARTED)
    store.write_bytes(f"m/dataset/runs/{in_flight.run_id}/value.json", b'{"kind": "json", "value": 0}')
    run_ids = [write.execute_in_process(instance=instance, tags={"writer": str(i)}).run_id for i in range(6)]
    # Kept: the three newest finished runs before the last one, the last one, and the in-flight run.
    assert run_dirs() == {*run_ids[-4:], in_flight.run_id}
    assert not (root / "data" / "m" / "dataset" / "runs" / run_ids[0]).exists()

    # An output that is gone is a clear error, not a silent stale read.
    store.delete_prefix(f"m/dataset/runs/{run_ids[-1]}")
    result = defs.resolve_job_def("consume").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "m/dataset: its stored output" in failure.event_specific_data.error.message
    assert "materialize it again" in failure.event_specific_data.error.message


def test_training_waits_for_the_lock_while_monitoring_runs_beside_it(root, instance):
    defs = build_defs(root)
    lock = training_lock(instance, "m")
    assert lock.try_acquire()  # another training of model m is in progress
    try:
        training = _start(root, "training")
        deadline = time.monotonic() + WAIT_S
        while not instance.get_runs(filters=dg.RunsFilter(job_name="training")):
            assert training.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        # A monitoring run of the same model does not wait for the training.
        assert defs.resolve_job_def("monitoring").execute_in_process(instance=instance).success
        time.sleep(2)
        assert not (root / "trained_at").exists() and training.poll() is None, "trained while the lock was held"
        [waiting] = instance.get_runs(filters=dg.RunsFilter(job_name="training"))
        assert waiting.status == dg.DagsterRunStatus.STARTED
        released_at = time.time()
    finally:
        lock.release()
    assert training.wait(WAIT_S) == 0
    assert float((root / "trained_at").read_text()) >= released_at
    run = instance.get_run_by_id(waiting.run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags[LOCK_STATE_TAG] == "released"  # marked before the lock was let go
    said = [e.message for e in instance.all_logs(run.run_id) if "waits for it to finish" in (e.message or "")]
    assert said, "the waiting run says what it waits for"


def test_recovery_fails_runs_whose_process_is_gone_and_only_those(root, instance):
    job = build_defs(root).resolve_job_def("training")
    me = process_identity()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = gone.stdout.strip()

    def started(tags: dict[str, str]) -> dg.DagsterRun:
        return instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags=tags)

    cli = {CLI_HOST_TAG: me["host"]}
    dead_cli = started({**cli, CLI_PID_TAG: dead_pid})
    live_cli = started({**cli, CLI_PID_TAG: me["pid"], CLI_PROCESS_START_TAG: me["start"]})
    reused_pid = started({**cli, CLI_PID_TAG: me["pid"], CLI_PROCESS_START_TAG: "1"})  # same pid, other process
    other_host = started({CLI_HOST_TAG: "some-other-host", CLI_PID_TAG: dead_pid})
    dead_holder = started({TRAINING_TAG: "m", LOCK_STATE_TAG: HELD})  # e.g. a daemon run on a lost host

    # While the lock is held its holder may be alive: not touched.
    lock = training_lock(instance, "m")
    assert lock.try_acquire()
    try:
        first = {r.run_id for r in recover_dead_runs(instance)}
    finally:
        lock.release()
    assert first == {dead_cli.run_id, reused_pid.run_id}
    assert {r.run_id for r in recover_dead_runs(instance)} == {dead_holder.run_id}

    status = {r.run_id: instance.get_run_by_id(r.run_id).status
              for r in (dead_cli, live_cli, reused_pid, other_host, dead_holder)}
    assert status == {dead_cli.run_id: dg.DagsterRunStatus.FAILURE, live_cli.run_id: dg.DagsterRunStatus.STARTED,
                      reused_pid.run_id: dg.DagsterRunStatus.FAILURE, other_host.run_id: dg.DagsterRunStatus.STARTED,
                      dead_holder.run_id: dg.DagsterRunStatus.FAILURE}
    failure = next(e for e in instance.all_logs(dead_cli.run_id) if e.dagster_event and
                   e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    assert f"pid {dead_pid} on {me['host']}) no longer exists" in failure.message


def test_a_postgres_instance_coordinates_through_its_database(postgres_server, postgres_db, tmp_path):
    """The instance config production uses (``storage: postgres:``): the training lock is an advisory lock on
    the instance's database, shared by every host, not a file that only one host sees."""
    from mlplatform_assets.lib.locks import PgAdvisoryLock

    homes = [tmp_path / "host-a", tmp_path / "host-b"]
    for home in homes:
        home.mkdir()
        (home / "dagster.yaml").write_text(
            "storage:\n  postgres:\n    postgres_url: " + postgres_server.dsn(postgres_db) + "\n")
    host_a, host_b = (dg.DagsterInstance.from_config(str(h)) for h in homes)
    lock_a, lock_b = training_lock(host_a, "m"), training_lock(host_b, "m")
    assert isinstance(lock_a, PgAdvisoryLock)
    assert lock_a.try_acquire()
    try:
        assert not lock_b.try_acquire()  # another host, same database: excluded
    finally:
        lock_a.release()
    assert lock_b.try_acquire()
    lock_b.release()
    assert not list(tmp_path.rglob("*.lock"))
