"""Where the platform keeps its state, resolved from the environment at call time.

Defaults put everything under one local state directory (``MLPLATFORM_HOME``,
default ``./.mlplatform``): Dagster home, the MLflow SQLite store and artifacts,
partition data, reports, audit and prediction logs. Production points the same
code elsewhere with environment variables only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

ENV_HOME = "MLPLATFORM_HOME"
ENV_MODELS_DIR = "MLPLATFORM_MODELS_DIR"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
ENV_ARTIFACT_ROOT = "MLPLATFORM_ARTIFACT_ROOT"
ENV_DATA_URI = "MLPLATFORM_DATA_URI"
ENV_MLFLOW_UI_URL = "MLPLATFORM_MLFLOW_UI_URL"
ENV_DAGSTER_HOME = "DAGSTER_HOME"
# The port ``mlplatform ui`` serves the MLflow UI on by default: links in asset metadata point there unless
# MLPLATFORM_MLFLOW_UI_URL says otherwise (a tracking server is its own UI).
DEFAULT_MLFLOW_UI_PORT = 5000


def examples_models_dir() -> Path:
    """The example specs shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "examples" / "models"


@dataclass(frozen=True)
class PlatformConfig:
    """The effective configuration. Build it with :func:`load_config`."""

    state_dir: str
    dagster_home: str
    models_dir: str
    mlflow_tracking_uri: str
    mlflow_registry_uri: str
    # None: the MLflow tracking server chooses (its proxied ``mlflow-artifacts:`` store); see load_config.
    artifact_root: str | None
    data_uri: str
    audit_log_path: str
    alerts_log_path: str
    prediction_log_uri: str
    # Where people open MLflow (links in asset metadata): MLPLATFORM_MLFLOW_UI_URL, else the tracking server,
    # else the MLflow UI that ``mlplatform ui`` starts on DEFAULT_MLFLOW_UI_PORT.
    mlflow_ui_url: str

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def is_tracking_server(uri: str) -> bool:
    """True for an MLflow tracking server (HTTP), False for a store the client opens itself (SQLite, PostgreSQL)."""
    return uri.split("://", 1)[0].lower() in ("http", "https")


def _artifact_root(env: Mapping[str, str], tracking_uri: str, state_dir: Path) -> str | None:
    """``MLPLATFORM_ARTIFACT_ROOT`` when set. Otherwise a tracking server keeps the artifacts in its own store
    (None: experiments are created without a location, so the server assigns its proxied ``mlflow-artifacts:``
    root and the client needs no access to it); a store the client opens itself gets a local directory."""
    if env.get(ENV_ARTIFACT_ROOT):
        return env[ENV_ARTIFACT_ROOT]
    if is_tracking_server(tracking_uri):
        return None
    return (state_dir / "mlflow" / "artifacts").as_uri()


def load_config(environ: Mapping[str, str] | None = None) -> PlatformConfig:
    """Resolve the configuration from ``environ`` (default: ``os.environ``).

    Pure: it creates nothing on disk; callers that write use :func:`ensure_dirs`.
    """
    env = os.environ if environ is None else environ
    state_dir = Path(env.get(ENV_HOME) or ".mlplatform").expanduser().resolve()
    tracking_uri = env.get(ENV_TRACKING_URI) or _sqlite_uri(state_dir / "mlflow" / "mlflow.db")
    data_uri = env.get(ENV_DATA_URI) or str(state_dir / "data")
    # No shared filesystem on a cluster: when the data lives in the object store, so do the audit
    # mirror and the alert log (one object per record), and MLPLATFORM_HOME is only per-pod scratch.
    records_root = f"{data_uri.rstrip('/')}/_platform" if data_uri.startswith("s3://") else None
    return PlatformConfig(
        state_dir=str(state_dir),
        dagster_home=str(Path(env.get(ENV_DAGSTER_HOME) or state_dir / "dagster").expanduser().resolve()),
        models_dir=str(Path(env.get(ENV_MODELS_DIR) or examples_models_dir()).expanduser().resolve()),
        mlflow_tracking_uri=tracking_uri,
        mlflow_registry_uri=env.get(ENV_REGISTRY_URI) or tracking_uri,
        artifact_root=_artifact_root(env, tracking_uri, state_dir),
        data_uri=data_uri,
        audit_log_path=f"{records_root}/audit" if records_root else str(state_dir / "audit" / "promotions.jsonl"),
        alerts_log_path=f"{records_root}/alerts" if records_root else str(state_dir / "audit" / "alerts.jsonl"),
        prediction_log_uri=env.get("MLPLATFORM_PREDICTION_LOG_URI") or str(state_dir / "predictions"),
        mlflow_ui_url=(env.get(ENV_MLFLOW_UI_URL) or (tracking_uri if is_tracking_server(tracking_uri) else
                                                       f"http://127.0.0.1:{DEFAULT_MLFLOW_UI_PORT}")).rstrip("/"),
    )


def ensure_dirs(config: PlatformConfig) -> None:
    """Create the local directories the configuration points at (never remote ones)."""
    for path in (config.state_dir, config.dagster_home):
        Path(path).mkdir(parents=True, exist_ok=True)
    if "://" not in config.audit_log_path:
        Path(config.audit_log_path).parent.mkdir(parents=True, exist_ok=True)
    if config.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(config.mlflow_tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if config.artifact_root and config.artifact_root.startswith("file://"):
        Path(config.artifact_root[len("file://"):]).mkdir(parents=True, exist_ok=True)
    if "://" not in config.data_uri:
        Path(config.data_uri).mkdir(parents=True, exist_ok=True)
    if "://" not in config.prediction_log_uri:
        Path(config.prediction_log_uri).mkdir(parents=True, exist_ok=True)
