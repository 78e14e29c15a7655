"""Run coordination: one training of a model at a time, whoever launches it, and recovery from killed runs.

The rule: only what can race for the ``champion`` alias is serialised. A run that trains a model
(``<model>__lifecycle``, ``<model>__training``, or any run whose asset selection includes that model's
training assets) holds the model's *training lock* from its start to its end, through the
``training_lock`` resource. Ingest and monitoring runs never take it and run beside a training.

- The lock is an :class:`~mlplatform_assets.lib.locks.PgAdvisoryLock` on the instance's database when
  the Dagster instance is PostgreSQL (several hosts), else a :class:`~mlplatform_assets.lib.locks.FileLock`
  under the instance's root directory. Either is dropped by the OS/database when its holder dies.
- Daemon runs additionally queue on the run tag ``mlplatform/training`` (``infra/dagster.yaml`` limits it
  to 1 per value), so a second training is not even launched while one is in progress; CLI runs
  (``execute_in_process``) carry the tag too, so the daemon also waits for them.
- While a run holds the lock its tag ``mlplatform/training_lock`` is ``held`` (``released`` just before the
  lock is let go). Whoever next takes the lock and still finds a ``held`` run of that model knows its
  holder died (kill -9, host lost): it marks that run FAILED.
- CLI runs record their host, pid and process start time as run tags; :func:`recover_dead_runs` marks
  in-progress runs whose recorded process is gone as FAILED (the CLI calls it at start).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Iterator

import dagster as dg

from mlplatform_assets.defs.names import (  # noqa: F401 - re-exported for the lifecycle assets and the CLI
    CLI_HOST_TAG,
    CLI_PID_TAG,
    CLI_PROCESS_START_TAG,
    LOCK_STATE_TAG,
    MODEL_TAG,
    TRAINING_ASSETS,
    TRAINING_TAG,
)
from mlplatform_assets.lib.locks import (
    FileLock,
    InterProcessLock,
    PgAdvisoryLock,
    holding,
    process_alive,
)

HELD, RELEASED = "held", "released"
LIVE_STATUSES = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING,
                 dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def training_tags(model: str) -> dict[str, str]:
    """Tags of a job that trains ``model``: one such run at a time (run coordinator + training lock)."""
    return {MODEL_TAG: model, TRAINING_TAG: model}


def trained_models(run: dg.DagsterRun) -> list[str]:
    """The models a run trains: its ``mlplatform/training`` tag, else those whose training assets it selects."""
    if run.tags.get(TRAINING_TAG):
        return [run.tags[TRAINING_TAG]]
    selected = run.asset_selection or set()
    return sorted({k.path[0] for k in selected if len(k.path) == 2 and k.path[1] in TRAINING_ASSETS})


# --- locks --------------------------------------------------------------------------------------

def _postgres_url(instance: dg.DagsterInstance) -> str | None:
    storage = instance.run_storage
    # ``storage: postgres:`` (infra/dagster.yaml, the Helm chart) wraps DagsterPostgresStorage in a
    # LegacyRunStorage; ``run_storage: postgres:`` is PostgresRunStorage itself. Both know the URL.
    for candidate in (storage, getattr(storage, "_storage", None)):
        url = getattr(candidate, "postgres_url", None)
        if url:
            return url
    return None


def instance_lock(instance: dg.DagsterInstance, name: str) -> InterProcessLock:
    """A lock named ``name`` shared by every process that uses ``instance``."""
    url = _postgres_url(instance)
    if url:
        return PgAdvisoryLock(url, f"mlplatform:{name}")
    return FileLock(Path(instance.root_directory) / "locks" / f"{name}.lock")


def training_lock(instance: dg.DagsterInstance, model: str) -> InterProcessLock:
    return instance_lock(instance, f"training-{model}")


def open_instance(dagster_home: str) -> dg.DagsterInstance:
    """The Dagster instance of ``dagster_home``, its storages created/migrated by one process at a time.

    Opening a SQLite instance creates and stamps its databases; two processes doing that at once on a
    fresh home left the schedule storage with two migration heads (every later open then failed).
    """
    with holding(FileLock(Path(dagster_home) / ".init.lock")):
        return dg.DagsterInstance.from_config(dagster_home)


# --- liveness and recovery -------------------------------------------------------------------------

def run_is_live(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id) if run_id else None
    return run is not None and run.status in LIVE_STATUSES


def _fail(instance: dg.DagsterInstance, run: dg.DagsterRun, why: str) -> None:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    instance.report_run_failed(run, f"{why}; marked FAILED at {now} by mlplatform's run recovery. What it "
                                    f"left half done in MLflow (a RUNNING run, a version never evaluated) is "
                                    f"cleaned up at the latest before the model's next training.")


def fail_dead_holders(instance: dg.DagsterInstance, model: str, own_run_id: str | None = None) -> list[dg.DagsterRun]:
    """Runs that still say they hold ``model``'s training lock. Call only while holding that lock: a live
    holder would hold it (and marks itself ``released`` before letting go), so these are dead."""
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=LIVE_STATUSES, tags={LOCK_STATE_TAG: HELD})):
        if run.run_id != own_run_id and model in trained_models(run):
            _fail(instance, run, f"run {run.run_id} held the training lock of {model} but its process is gone "
                                 f"(the lock was free)")
            dead.append(run)
    return dead


def recover_dead_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Mark FAILED the in-progress runs whose process is known to be dead.

    - CLI runs of this host whose recorded process (pid + start time) no longer exists;
    - runs of any host that held a model's training lock which is now free (checked by taking the lock).
    """
    failed: list[dg.DagsterRun] = []
    held_models: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=LIVE_STATUSES)):
        tags = run.tags
        alive = process_alive(tags.get(CLI_HOST_TAG, ""), tags.get(CLI_PID_TAG, ""),
                              tags.get(CLI_PROCESS_START_TAG, "")) if tags.get(CLI_PID_TAG) else None
        if alive is False:
            _fail(instance, run, f"the mlplatform CLI process that ran it (pid {tags[CLI_PID_TAG]} on "
                                 f"{tags[CLI_HOST_TAG]}) no longer exists")
            failed.append(run)
        elif tags.get(LOCK_STATE_TAG) == HELD:
            held_models.update(trained_models(run))
    for model in sorted(held_models):
        lock = training_lock(instance, model)
        if lock.try_acquire():
            try:
                failed.extend(fail_dead_holders(instance, model))
            finally:
                lock.release()
    return failed


# --- the resource ----------------------------------------------------------------------------------

class TrainingLockResource(dg.ConfigurableResource):
    """Holds the training lock of every model the run trains, from the run's start to its end.

    Required by the training assets; a run that trains nothing (tag and selection say so) takes no lock.
    With the in-process executor (every job of the platform) the resource lives once per run, so the
    whole of training -> evaluation -> promotion is one critical section.
    """

    @contextlib.contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator["TrainingLockResource"]:
        run, instance = context.dagster_run, context.instance
        models = trained_models(run) if run is not None else []
        if not models or instance is None:
            yield self
            return
        with contextlib.ExitStack() as stack:
            for model in models:  # sorted: two multi-model runs cannot deadlock
                stack.enter_context(self._hold(context, instance, run, model))
            instance.add_run_tags(run.run_id, {LOCK_STATE_TAG: HELD})
            try:
                yield self
            finally:
                # Marked released before the lock is let go: whoever takes it next must not see a live
                # run as a dead holder.
                instance.add_run_tags(run.run_id, {LOCK_STATE_TAG: RELEASED})

    @staticmethod
    @contextlib.contextmanager
    def _hold(context: dg.InitResourceContext, instance: dg.DagsterInstance, run: dg.DagsterRun,
              model: str) -> Iterator[None]:
        lock = training_lock(instance, model)

        def waiting(waited_s: float) -> None:
            others = [r.run_id for r in instance.get_runs(
                filters=dg.RunsFilter(statuses=LIVE_STATUSES, tags={TRAINING_TAG: model})) if r.run_id != run.run_id]
            msg = (f"{model}: another training of this model is in progress (run(s) {', '.join(others) or '?'}); "
                   f"this run waits for it to finish ({waited_s:.0f} s so far, {lock.description})")
            if context.log is not None:
                context.log.warning(msg)

        with holding(lock, on_wait=waiting):
            for dead in fail_dead_holders(instance, model, run.run_id):
                if context.log is not None:
                    context.log.warning(f"{model}: run {dead.run_id} held the training lock but is gone; "
                                        f"marked it FAILED")
            yield
