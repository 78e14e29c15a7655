"""The MLflow side: experiments, runs with full lineage, registered versions, aliases and the audit trail.

Every alias move (promotion, rollback) appends one audit record. Records live in
two places: as tags on the registered model in MLflow (the source of truth, shared by every
machine that talks to the same registry) and, mirrored, in an append-only record log
(:func:`~mlplatform_assets.lib.data.storage.append_record`: a local JSONL file, or one object per record
under an ``s3://`` prefix when the platform's data lives in the object store).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from mlplatform_assets.lib.data.storage import append_record
from mlplatform_assets.lib.model.model_io import (
    ModelFileError,
    load_skops_file,
    pip_requirements_for,
    skops_path,
    trusted_types_for,
)

CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_TAG_PREFIX = "mlplatform.audit."
TAG_SPEC_SHA = "mlplatform.spec_sha256"
TAG_DATA_SHA = "mlplatform.data_sha256"
TAG_CODE_VERSION = "mlplatform.code_version"
TAG_DAGSTER_RUN = "mlplatform.dagster_run_id"
TAG_PARTITIONS = "mlplatform.partitions"
TAG_HOLDOUT_SHA = "mlplatform.holdout_predictions_sha256"
LINEAGE_TAGS = (TAG_SPEC_SHA, TAG_DATA_SHA, TAG_CODE_VERSION, TAG_DAGSTER_RUN, TAG_PARTITIONS)
# A version's state: registered (pending_evaluation) -> evaluated, or abandoned when the run that
# registered it died before evaluating it. Only an evaluated version may become champion; versions
# registered before states existed carry no state tag and count as evaluated.
TAG_STATE = "mlplatform.state"
STATE_PENDING = "pending_evaluation"
STATE_EVALUATED = "evaluated"
STATE_ABANDONED = "abandoned"


class RegistryError(RuntimeError):
    """A registry operation was refused (unknown model/version, nothing to roll back to, ...)."""


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str
    registry_uri: str
    artifact_root: str | None  # None: the tracking server's own artifact store
    ui_url: str | None = None

    @classmethod
    def from_config(cls, config: Any) -> "MlflowSettings":
        return cls(config.mlflow_tracking_uri, config.mlflow_registry_uri, config.artifact_root, config.mlflow_ui_url)


@dataclass
class AuditRecord:
    time: str
    model: str
    action: str  # "promote", "reject", "rollback", "initial"
    from_version: str | None
    to_version: str | None
    decision: str  # "promoted", "kept_champion", "rolled_back"
    reason: str
    actor: str
    dagster_run_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RegisteredVersion:
    model: str
    version: str
    run_id: str
    experiment_id: str
    model_uri: str
    run_url: str


@contextlib.contextmanager
def mlflow_uris(settings: MlflowSettings) -> Iterator[None]:
    """Point MLflow's process-global fluent API at the platform's stores for the duration of a block.

    MLflow 3.17 otherwise falls back to ``sqlite:///mlflow.db`` in the current directory.
    """
    import mlflow

    # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into os.environ; restore both the globals
    # and the environment on the way out so one model's store never leaks into the next caller.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.registry_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_name(model: str) -> str:
    """The MLflow experiment holding every training run of ``model``."""
    return f"mlplatform/{model}"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Registry:
    def __init__(self, settings: MlflowSettings, audit_log_path: str | None = None):
        self.settings = settings
        self.audit_log_path = audit_log_path
        self._client = None

    @property
    def client(self):  # noqa: ANN201 - MlflowClient
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.settings.tracking_uri,
                                        registry_uri=self.settings.registry_uri)
        return self._client

    # --- experiments and links ------------------------------------------------
    def experiment_id(self, model: str) -> str:
        name = experiment_name(model)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        from mlflow.exceptions import MlflowException

        root = self.settings.artifact_root
        try:
            return self.client.create_experiment(name, artifact_location=f"{root.rstrip('/')}/{model}" if root else None)
        except MlflowException:  # created concurrently by another run
            return self.client.get_experiment_by_name(name).experiment_id

    def run_url(self, experiment_id: str, run_id: str) -> str:
        base = (self.settings.ui_url or "http://127.0.0.1:5000").rstrip("/")
        return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"

    def model_url(self, model: str, version: str) -> str:
        base = (self.settings.ui_url or "http://127.0.0.1:5000").rstrip("/")
        return f"{base}/#/models/{model}/versions/{version}"

    # --- versions ---------------------------------------------------------------
    def alias_version(self, model: str, alias: str):  # noqa: ANN201 - ModelVersion | None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(model, alias)
        except MlflowException:
            return None

    def champion(self, model: str):  # noqa: ANN201
        return self.alias_version(model, CHAMPION)

    def get_version(self, model: str, version: str):  # noqa: ANN201
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(model, str(version))
        except MlflowException:
            raise RegistryError(f"model {model!r} has no version {version!r}") from None

    def load_pipeline(self, model: str, version: str) -> Any:
        """Load a version's sklearn pipeline with skops under the model trust policy (lib/model_io), never pickle.

        The artifact is read directly: MLflow's own loader would trust whatever types the artifact
        lists about itself. A file the policy refuses raises RegistryError naming the refused types.
        """
        from mlflow.artifacts import download_artifacts
        from mlflow.models import Model

        what = f"{model} v{version}"
        with tempfile.TemporaryDirectory() as tmp:
            source = self.client.get_model_version_download_uri(model, str(version))
            local = download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=self.settings.tracking_uri)
            try:
                path = skops_path(local, Model.load(str(Path(local) / "MLmodel")).flavors, what)
                return load_skops_file(path, what)
            except ModelFileError as exc:
                raise RegistryError(str(exc)) from None

    def download_artifact(self, run_id: str, path: str) -> bytes:
        import mlflow.artifacts

        with tempfile.TemporaryDirectory() as tmp, mlflow_uris(self.settings):
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
            return Path(local).read_bytes()

    def log_training(self, *, spec: Any, dataset: Any, fit_result: Any, lineage: dict[str, str],
                     extra_artifacts: dict[str, bytes] | None = None) -> RegisteredVersion:
        """Log a run with params, metrics, input datasets, lineage tags and the model; then register it
        as a new version with alias ``challenger``. Registration comes last and is undone on failure,
        so a half-logged model never appears in the registry."""
        import mlflow
        import mlflow.data
        import mlflow.sklearn
        from mlflow.models import infer_signature

        model = spec.name
        exp_id = self.experiment_id(model)
        X_train = dataset.X("train")
        example = X_train.head(5)
        pipeline = fit_result.pipeline
        import warnings

        with warnings.catch_warnings():
            # MLflow hints that integer outputs cannot hold missing values; predicted labels never are.
            warnings.simplefilter("ignore", UserWarning)
            signature = infer_signature(X_train.head(2000), pipeline.predict(X_train.head(2000)))
        trusted = trusted_types_for(pipeline)
        estimator_params = {f"estimator.{k}": v for k, v in pipeline.named_steps["model"].get_params().items()
                            if isinstance(v, (int, float, str, bool, type(None)))}
        # Values the spec filled from the environment are logged as written (${VAR}), never expanded.
        estimator_params.update({f"estimator.{k}": spec.as_written("estimator", "params", k)
                                 for k, v in spec.estimator.params.items() if isinstance(v, str)})
        params = {
            "estimator": spec.as_written("estimator", "class_path"),
            **estimator_params,
            "task": spec.task,
            "target": spec.target.column,
            "numeric_features": ",".join(dataset.numeric)[:6000],
            "categorical_features": ",".join(dataset.categorical)[:6000],
            "window_days": spec.training.window_days,
            "holdout_days": spec.training.holdout_days,
            "seed": spec.training.seed,
            "primary_metric": spec.metrics.primary,
            "train_rows": len(dataset.train),
            "holdout_rows": len(dataset.holdout),
            "partition_range": dataset.partition_range,
        }
        tags = {**lineage, "mlplatform.model": model}
        holdout_buf = io.BytesIO()
        fit_result.holdout_predictions.to_parquet(holdout_buf, index=False)
        holdout_bytes = holdout_buf.getvalue()
        from mlplatform_assets.lib.data.hashing import bytes_sha256

        tags[TAG_HOLDOUT_SHA] = bytes_sha256(fit_result.holdout_predictions["prediction"].to_numpy().tobytes())
        manifest = {
            "model": model, "data_sha256": dataset.data_sha256, "partition_range": dataset.partition_range,
            "train_days": [d.isoformat() for d in dataset.train_days],
            "holdout_days": [d.isoformat() for d in dataset.holdout_days],
            "numeric": dataset.numeric, "categorical": dataset.categorical,
            "train_rows": len(dataset.train), "holdout_rows": len(dataset.holdout),
        }
        with mlflow_uris(self.settings), tempfile.TemporaryDirectory() as tmp:
            with mlflow.start_run(experiment_id=exp_id, run_name=f"{model}-train", tags=tags) as run:
                mlflow.log_params(params)
                if getattr(fit_result, "search", None) is not None:  # trials as child runs, the choice as params
                    from mlplatform_assets.lib.model.search import SEARCH_ARTIFACT, log_search, search_artifact

                    mlflow.log_params(log_search(self.client, exp_id, run.info.run_id, fit_result.search, lineage))
                    extra_artifacts = {**(extra_artifacts or {}), SEARCH_ARTIFACT: search_artifact(fit_result.search)}
                mlflow.log_metrics({f"holdout_{k}": v for k, v in fit_result.metrics.items() if v == v})
                train_ds = mlflow.data.from_pandas(dataset.train, name=f"{model}-train", targets=dataset.target,
                                                   digest=dataset.data_sha256[:32])
                hold_ds = mlflow.data.from_pandas(dataset.holdout, name=f"{model}-holdout", targets=dataset.target,
                                                  digest=dataset.data_sha256[:32])
                mlflow.log_input(train_ds, context="training")
                mlflow.log_input(hold_ds, context="holdout")
                files = {"spec.yaml": spec.to_yaml().encode(),
                         "training_manifest.json": json.dumps(manifest, indent=2).encode(),
                         "holdout_predictions.parquet": holdout_bytes, **(extra_artifacts or {})}
                for name, data in files.items():
                    path = Path(tmp) / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                    folder = str(Path(name).parent)
                    mlflow.log_artifact(str(path), None if folder == "." else folder)
                info = mlflow.sklearn.log_model(pipeline, name="model", signature=signature, input_example=example,
                                                serialization_format="skops", skops_trusted_types=trusted,
                                                pip_requirements=pip_requirements_for(pipeline))
                run_id = run.info.run_id
            # The state tag is written with the version itself: no instant exists in which the version is
            # visible without it, whenever the process dies.
            mv = mlflow.register_model(info.model_uri, model, tags={**tags, TAG_STATE: STATE_PENDING})
        version = str(mv.version)
        try:
            self.client.set_registered_model_tag(model, "mlplatform.task", spec.task)
            self.client.set_model_version_tag(model, version, "mlplatform.run_id", run_id)
            self.client.set_model_version_tag(model, version, "mlplatform.holdout_metrics",
                                              json.dumps(fit_result.metrics, sort_keys=True))
            self.client.set_registered_model_alias(model, CHALLENGER, version)
        except Exception:
            self.client.delete_model_version(model, version)
            raise
        return RegisteredVersion(model, version, run_id, exp_id, f"models:/{model}/{version}",
                                 self.run_url(exp_id, run_id))

    def log_evaluation(self, model: str, version: str, run_id: str, report_path: str | Path,
                       decision: dict[str, Any], champion_metrics: dict[str, float] | None, primary: str) -> None:
        """Attach the evaluation to the challenger's run and version: report, decision, champion's scores."""
        client = self.client
        client.log_artifact(run_id, str(report_path), "evaluation")
        client.log_text(run_id, json.dumps(decision, indent=2, default=str), "evaluation/decision.json")
        for k, v in (champion_metrics or {}).items():
            if v == v:  # NaN (undefined on this holdout) is not a metric
                client.log_metric(run_id, f"champion_{k}", v)
        if decision.get("delta") is not None:
            client.log_metric(run_id, f"delta_{primary}", decision["delta"])
        client.set_model_version_tag(model, str(version), "mlplatform.evaluation",
                                     json.dumps({"promote": decision["promote"], "reason": decision["reason"]}))
        client.set_model_version_tag(model, str(version), TAG_STATE, STATE_EVALUATED)  # last: all of the above exists

    def reconcile_incomplete(self, model: str, is_live: Callable[[str], bool]) -> dict[str, list[str]]:
        """Clean up after training runs of ``model`` that died (``is_live(dagster_run_id)`` is False).

        Their MLflow runs still RUNNING are marked FAILED; their versions still ``pending_evaluation`` become
        ``abandoned`` and lose the ``challenger`` alias (they can never become champion). Idempotent.
        """
        client = self.client
        done: dict[str, list[str]] = {"failed_mlflow_runs": [], "abandoned_versions": []}
        running = client.search_runs([self.experiment_id(model)], filter_string="attributes.status = 'RUNNING'",
                                     max_results=1000)
        for run in running:
            if not is_live(run.data.tags.get(TAG_DAGSTER_RUN, "")):
                client.set_terminated(run.info.run_id, status="FAILED")
                done["failed_mlflow_runs"].append(run.info.run_id)
        challenger = self.alias_version(model, CHALLENGER)
        for mv in client.search_model_versions(f"name='{model}'"):
            tags = mv.tags or {}
            if tags.get(TAG_STATE) != STATE_PENDING or is_live(tags.get(TAG_DAGSTER_RUN, "")):
                continue
            version = str(mv.version)
            client.set_model_version_tag(model, version, TAG_STATE, STATE_ABANDONED)
            client.set_model_version_tag(model, version, "mlplatform.abandoned_reason",
                                         f"Dagster run {tags.get(TAG_DAGSTER_RUN) or '?'} ended before evaluating it")
            if challenger is not None and str(challenger.version) == version:
                client.delete_registered_model_alias(model, CHALLENGER)
            done["abandoned_versions"].append(version)
        return done

    # --- alias moves and the audit trail ----------------------------------------
    def audit_records(self, model: str) -> list[dict[str, Any]]:
        from mlflow.exceptions import MlflowException

        try:
            rm = self.client.get_registered_model(model)
        except MlflowException:
            return []
        items = sorted((k, v) for k, v in rm.tags.items() if k.startswith(AUDIT_TAG_PREFIX))
        return [json.loads(v) for _, v in items]

    def record(self, rec: AuditRecord) -> AuditRecord:
        # Keys sort chronologically and never collide (nanosecond clock + random suffix), so two
        # writers recording at once cannot overwrite each other's record the way a counter could.
        import uuid

        key = f"{AUDIT_TAG_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        payload = json.dumps(asdict(rec), sort_keys=True, default=str)
        self.client.set_registered_model_tag(rec.model, key, payload)
        if self.audit_log_path:
            append_record(self.audit_log_path, asdict(rec))
        return rec

    def move_champion(self, model: str, to_version: str, *, action: str, reason: str, actor: str,
                      dagster_run_id: str | None = None, details: dict[str, Any] | None = None) -> AuditRecord:
        target = self.get_version(model, to_version)  # raises a clear error for an unknown version
        state = (target.tags or {}).get(TAG_STATE, STATE_EVALUATED)
        if state != STATE_EVALUATED:
            raise RegistryError(f"model {model!r}: v{to_version} is {state}, not evaluated; it cannot become champion")
        current = self.champion(model)
        from_version = str(current.version) if current else None
        self.client.set_registered_model_alias(model, CHAMPION, str(to_version))
        decision = "rolled_back" if action == "rollback" else "promoted"
        return self.record(AuditRecord(time=_now(), model=model, action=action, from_version=from_version,
                                       to_version=str(to_version), decision=decision, reason=reason, actor=actor,
                                       dagster_run_id=dagster_run_id, details=details or {}))

    def record_rejection(self, model: str, challenger_version: str, *, reason: str, actor: str,
                         dagster_run_id: str | None = None, details: dict[str, Any] | None = None) -> AuditRecord:
        current = self.champion(model)
        return self.record(AuditRecord(time=_now(), model=model, action="reject",
                                       from_version=str(current.version) if current else None,
                                       to_version=str(challenger_version), decision="kept_champion", reason=reason,
                                       actor=actor, dagster_run_id=dagster_run_id, details=details or {}))

    def previous_champion(self, model: str) -> str:
        """The version that was champion before the current one, from the audit trail."""
        current = self.champion(model)
        if current is None:
            raise RegistryError(f"model {model!r} has no champion to roll back from")
        for rec in reversed(self.audit_records(model)):
            if rec["decision"] in ("promoted", "rolled_back") and rec["to_version"] == str(current.version):
                if rec["from_version"]:
                    return rec["from_version"]
                break
        raise RegistryError(f"model {model!r}: champion v{current.version} has no previous champion in the audit trail")

    def rollback(self, model: str, to_version: str | None = None, *, actor: str, reason: str = "manual rollback",
                 dagster_run_id: str | None = None) -> AuditRecord:
        target = str(to_version) if to_version is not None else self.previous_champion(model)
        current = self.champion(model)
        if current is not None and str(current.version) == target:
            raise RegistryError(f"model {model!r}: v{target} is already the champion")
        return self.move_champion(model, target, action="rollback", reason=reason, actor=actor,
                                  dagster_run_id=dagster_run_id)


def version_lineage(registry: Registry, model: str, version: str) -> dict[str, Any]:
    """Everything needed to trace a version back to data, code, spec and the Dagster run."""
    mv = registry.get_version(model, version)
    run = registry.client.get_run(mv.run_id) if mv.run_id else None
    tags = dict(run.data.tags) if run else {}
    return {
        "model": model, "version": str(mv.version), "run_id": mv.run_id,
        "aliases": list(getattr(mv, "aliases", []) or []),
        **{k: tags.get(k) for k in LINEAGE_TAGS},
        "metrics": dict(run.data.metrics) if run else {},
        "run_url": registry.run_url(run.info.experiment_id, run.info.run_id) if run else None,
    }
