"""Resources: each one an interface with a local and a cloud implementation, chosen by configuration."""


import json
from typing import Any, Optional

import dagster as dg
from dagster_aws.s3 import S3Resource

from mlplatform_assets.defs.coordination import LIVE_STATUSES, TrainingLockResource
from mlplatform_assets.lib import config
from mlplatform_assets.lib.config import PlatformConfig
from mlplatform_assets.lib.data.storage import ObjectStore
from mlplatform_assets.lib.model.features import TrainingDataset
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry


class MlflowRegistryResource(dg.ConfigurableResource):
    """The MLflow tracking server / model registry the platform writes to.

    Locally a SQLite file under the state directory; in production a tracking server URL.
    Credentials (MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN) are read by MLflow from the
    environment and never pass through Dagster config or metadata.
    """

    tracking_uri: str
    registry_uri: str
    artifact_root: Optional[str] = None  # None: the tracking server's own artifact store
    ui_url: Optional[str] = None
    audit_log_path: Optional[str] = None

    def registry(self) -> Registry:
        settings = MlflowSettings(self.tracking_uri, self.registry_uri, self.artifact_root, self.ui_url)
        return Registry(settings, self.audit_log_path)


class DataStore(dg.ConfigurableResource):
    """Where the platform keeps partition data and training datasets (interface)."""

    def store(self) -> ObjectStore:
        raise NotImplementedError

    def source_s3_client(self) -> Any:
        """A client for reading ``s3://`` model sources."""
        raise NotImplementedError


class LocalDataStore(DataStore):
    """Partition data in a local directory; ``s3://`` sources are still readable through ``s3``."""

    root: str
    s3: dg.ResourceDependency[S3Resource]

    def store(self) -> ObjectStore:
        return ObjectStore(self.root)

    def source_s3_client(self) -> Any:
        return self.s3.get_client()


class S3DataStore(DataStore):
    """Partition data under an ``s3://bucket/prefix``, through dagster-aws's S3 resource."""

    root_uri: str
    s3: dg.ResourceDependency[S3Resource]

    def store(self) -> ObjectStore:
        return ObjectStore(self.root_uri, self.s3.get_client())

    def source_s3_client(self) -> Any:
        return self.s3.get_client()


class PlatformResource(dg.ConfigurableResource):
    """Where the platform's own records live: scratch space (state_dir), the alert log and the prediction log."""

    state_dir: str
    alerts_log_path: str
    prediction_log_uri: str


STORAGE_PREFIX_META = "storage_prefix"


class DatasetIOManager(dg.ConfigurableIOManager):
    """Stores lifecycle outputs in the data store as open formats: training datasets as Parquet
    (plus a JSON manifest), small records as JSON. No pickle, readable from any tool.

    Outputs are scoped to the run that produced them, ``<model>/<asset>/runs/<run_id>/``, so two runs
    in flight never read each other's intermediate data. A step loads its upstream's output from its own
    run (or, in a re-execution, the parent run that produced it); an upstream that the run does not
    materialize is loaded from its latest materialization, whose metadata names its storage prefix.
    Storage stays bounded: after each write the outputs of all but the ``keep_finished_runs`` newest
    finished runs of that asset are deleted (in-flight runs and the latest materialization are kept).
    """

    data_store: dg.ResourceDependency[DataStore]
    keep_finished_runs: int = 3

    @staticmethod
    def _runs_root(asset_key: dg.AssetKey) -> str:
        return "/".join(asset_key.path) + "/runs"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        store = self.data_store.store()
        root = self._runs_root(context.asset_key)
        prefix = f"{root}/{context.run_id}"
        if isinstance(obj, TrainingDataset):
            store.write_frame(f"{prefix}/train.parquet", obj.train)
            store.write_frame(f"{prefix}/holdout.parquet", obj.holdout)
            manifest = {"kind": "training_dataset", "numeric": obj.numeric, "categorical": obj.categorical,
                        "target": obj.target, "timestamp": obj.timestamp,
                        "train_days": [d.isoformat() for d in obj.train_days],
                        "holdout_days": [d.isoformat() for d in obj.holdout_days], "data_sha256": obj.data_sha256,
                        "quarantined_days": [d.isoformat() for d in obj.quarantined_days]}
            # The manifest is written last: a reader that finds it finds both frames complete.
            store.write_bytes(f"{prefix}/manifest.json", json.dumps(manifest).encode())
        else:
            store.write_bytes(f"{prefix}/value.json", json.dumps({"kind": "json", "value": obj}, default=str).encode())
        context.add_output_metadata({STORAGE_PREFIX_META: dg.MetadataValue.text(prefix)})
        self._prune(context, store, root)

    def _source_prefix(self, context: dg.InputContext) -> str:
        # Dagster gives an upstream that this run does not materialize a placeholder run id.
        from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

        upstream = context.upstream_output
        key = upstream.asset_key
        try:
            run_id = upstream.run_id  # this run, or the parent run that produced it in a re-execution
        except dg.DagsterInvariantViolationError:
            run_id = RUN_ID_PLACEHOLDER
        if run_id != RUN_ID_PLACEHOLDER:
            return f"{self._runs_root(key)}/{run_id}"
        event = context.instance.get_latest_materialization_event(key)
        if event is None or event.asset_materialization is None:
            raise dg.Failure(f"{'/'.join(key.path)} has not been materialized yet")
        stored = event.asset_materialization.metadata.get(STORAGE_PREFIX_META)
        return str(stored.value) if stored is not None else f"{self._runs_root(key)}/{event.run_id}"

    def load_input(self, context: dg.InputContext) -> Any:
        import datetime as dt

        store = self.data_store.store()
        prefix = self._source_prefix(context)
        if store.exists(f"{prefix}/manifest.json"):
            m = json.loads(store.read_bytes(f"{prefix}/manifest.json"))
            return TrainingDataset(
                train=store.read_frame(f"{prefix}/train.parquet"), holdout=store.read_frame(f"{prefix}/holdout.parquet"),
                numeric=m["numeric"], categorical=m["categorical"], target=m["target"], timestamp=m["timestamp"],
                train_days=[dt.date.fromisoformat(d) for d in m["train_days"]],
                holdout_days=[dt.date.fromisoformat(d) for d in m["holdout_days"]], data_sha256=m["data_sha256"],
                quarantined_days=[dt.date.fromisoformat(d) for d in m.get("quarantined_days", [])])
        key = f"{prefix}/value.json"
        if not store.exists(key):
            raise dg.Failure(f"{'/'.join(context.upstream_output.asset_key.path)}: its stored output {prefix} is "
                             f"gone (only the {self.keep_finished_runs} newest finished runs are kept): "
                             f"materialize it again")
        return json.loads(store.read_bytes(key))["value"]

    def _prune(self, context: dg.OutputContext, store: ObjectStore, root: str) -> None:
        """Delete the outputs of this asset's older finished runs (see the class docstring)."""
        try:
            instance = context.step_context.instance
        except dg.DagsterInvariantViolationError:
            return  # an output context built outside a run: nothing to compare against
        others = sorted({k[len(root) + 1:].split("/", 1)[0] for k in store.list(f"{root}/")} - {context.run_id})
        if len(others) <= self.keep_finished_runs:
            return
        records = {r.dagster_run.run_id: r for r in instance.get_run_records(dg.RunsFilter(run_ids=others))}
        latest = instance.get_latest_materialization_event(context.asset_key)
        finished = [rid for rid in others
                    if rid not in records or records[rid].dagster_run.status not in LIVE_STATUSES]
        # Newest first; runs the instance no longer knows sort last (deleted first).
        finished.sort(key=lambda rid: records[rid].create_timestamp.timestamp() if rid in records else 0.0,
                      reverse=True)
        for rid in finished[self.keep_finished_runs:]:
            if latest is None or rid != latest.run_id:
                store.delete_prefix(f"{root}/{rid}")


def _env_or_none(name: str) -> Any:
    # Only reference variables that are set: an EnvVar for an unset variable fails at run time,
    # while unset means "let boto3 use its default credential chain".
    return dg.EnvVar(name) if config.environment().get(name) else None


def build_resources(config: PlatformConfig) -> dict[str, Any]:
    s3 = S3Resource(
        endpoint_url=_env_or_none("AWS_ENDPOINT_URL"),
        region_name=_env_or_none("AWS_DEFAULT_REGION"),
        aws_access_key_id=_env_or_none("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_env_or_none("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_env_or_none("AWS_SESSION_TOKEN"),
    )
    data_store: DataStore = (S3DataStore(root_uri=config.data_uri, s3=s3) if config.data_uri.startswith("s3://")
                             else LocalDataStore(root=config.data_uri, s3=s3))
    return {
        "s3": s3,
        "data_store": data_store,
        "mlflow": MlflowRegistryResource(
            tracking_uri=config.mlflow_tracking_uri, registry_uri=config.mlflow_registry_uri,
            artifact_root=config.artifact_root, ui_url=config.mlflow_ui_url, audit_log_path=config.audit_log_path),
        "platform": PlatformResource(state_dir=config.state_dir,
                                     alerts_log_path=config.alerts_log_path,
                                     prediction_log_uri=config.prediction_log_uri),
        "io_manager": DatasetIOManager(data_store=data_store),
        "training_lock": TrainingLockResource(),
    }
