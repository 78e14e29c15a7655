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
    artifact_root: str
    data_uri: str
    audit_log_path: str
    alerts_log_path: str
    prediction_log_uri: str
    reports_dir: str
    mlflow_ui_url: str | None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def load_config(environ: Mapping[str, str] | None = None) -> PlatformConfig:
    """Resolve the configuration from ``environ`` (default: ``os.environ``).

    Pure: it creates nothing on disk; callers that write use :func:`ensure_dirs`.
    """
    env = os.environ if environ is None else environ
    state_dir = Path(env.get(ENV_HOME) or ".mlplatform").expanduser().resolve()
    tracking_uri = env.get(ENV_TRACKING_URI) or _sqlite_uri(state_dir / "mlflow" / "mlflow.db")
    return PlatformConfig(
        state_dir=str(state_dir),
        dagster_home=str(Path(env.get(ENV_DAGSTER_HOME) or state_dir / "dagster").expanduser().resolve()),
        models_dir=str(Path(env.get(ENV_MODELS_DIR) or examples_models_dir()).expanduser().resolve()),
        mlflow_tracking_uri=tracking_uri,
        mlflow_registry_uri=env.get(ENV_REGISTRY_URI) or tracking_uri,
        artifact_root=env.get(ENV_ARTIFACT_ROOT) or (state_dir / "mlflow" / "artifacts").as_uri(),
        data_uri=env.get(ENV_DATA_URI) or str(state_dir / "data"),
        audit_log_path=str(state_dir / "audit" / "promotions.jsonl"),
        alerts_log_path=str(state_dir / "audit" / "alerts.jsonl"),
        prediction_log_uri=env.get("MLPLATFORM_PREDICTION_LOG_URI") or str(state_dir / "predictions"),
        reports_dir=str(state_dir / "reports"),
        mlflow_ui_url=env.get(ENV_MLFLOW_UI_URL) or None,
    )


def ensure_dirs(config: PlatformConfig) -> None:
    """Create the local directories the configuration points at (never remote ones)."""
    for path in (config.state_dir, config.dagster_home, config.reports_dir,
                 str(Path(config.audit_log_path).parent)):
        Path(path).mkdir(parents=True, exist_ok=True)
    if config.mlflow_tracking_uri.startswith("sqlite:///"):
        Path(config.mlflow_tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if config.artifact_root.startswith("file://"):
        Path(config.artifact_root[len("file://"):]).mkdir(parents=True, exist_ok=True)
    if "://" not in config.data_uri:
        Path(config.data_uri).mkdir(parents=True, exist_ok=True)
    if "://" not in config.prediction_log_uri:
        Path(config.prediction_log_uri).mkdir(parents=True, exist_ok=True)
