"""The platform's configuration: every environment variable it reads, read here, cast and validated.

Defaults put everything under one local state directory (``MLPLATFORM_HOME``, default
``./.mlplatform``): Dagster home, the MLflow SQLite store and artifacts, partition data, audit
and prediction logs. Production points the same code elsewhere with environment variables only.

Each variable is declared once in :data:`VARIABLES` (name, type, default, accepted values, what it
does); :func:`read` is the only way code reads one, and :func:`load_config` checks them all, so a
bad value stops the process at start with a message naming the variable and what it accepts.
docs/configuration.md is generated from the same declarations (a test keeps it in sync).
Alert sinks declare their own URL variables next to their code (one module per sink); they are
read and validated through this module too (:func:`read_variable`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ENV_HOME = "MLPLATFORM_HOME"
ENV_MODELS_DIR = "MLPLATFORM_MODELS_DIR"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
ENV_ARTIFACT_ROOT = "MLPLATFORM_ARTIFACT_ROOT"
ENV_DATA_URI = "MLPLATFORM_DATA_URI"
ENV_PREDICTION_LOG_URI = "MLPLATFORM_PREDICTION_LOG_URI"
ENV_MLFLOW_UI_URL = "MLPLATFORM_MLFLOW_UI_URL"
ENV_DAGSTER_HOME = "DAGSTER_HOME"
# The port ``mlplatform ui`` serves the MLflow UI on by default: links in asset metadata point there unless
# MLPLATFORM_MLFLOW_UI_URL says otherwise (a tracking server is its own UI).
DEFAULT_MLFLOW_UI_PORT = 5000
ENV_TRAIN_THREADS = "MLPLATFORM_TRAIN_THREADS"
ENV_TRUSTED_MODULES = "MLPLATFORM_TRUSTED_MODULES"
ENV_SENSOR_INTERVAL = "MLPLATFORM_SENSOR_INTERVAL_S"
ENV_SENSORS_DEFAULT = "MLPLATFORM_SENSORS_DEFAULT"
ENV_NEW_DATA_MAX = "MLPLATFORM_NEW_DATA_MAX_PER_TICK"
ENV_S3_ENDPOINT = "AWS_ENDPOINT_URL"
ENV_S3_ENDPOINT_S3 = "AWS_ENDPOINT_URL_S3"
ENV_PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
ENV_PRICE_CPU_HOUR = "MLPLATFORM_PRICE_CPU_HOUR"
ENV_PRICE_GB_MONTH = "MLPLATFORM_PRICE_GB_MONTH"
ENV_SERVING_SPEC = "MLPLATFORM_SERVING_SPEC"


class ConfigError(ValueError):
    """A configuration value the platform cannot run with. The message names the variable and what it accepts,
    and never repeats a secret value."""


# --- casts: each takes the stripped text and returns the value or raises ValueError ----------------------------

Cast = Callable[[str], Any]


def text(raw: str) -> str:
    return raw


def number(*, minimum: float | None = None, maximum: float | None = None, integer: bool = False) -> Cast:
    """A number in a range."""
    def cast(raw: str) -> float | int:
        value = float(raw)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
        if integer:
            if value != int(value):
                raise ValueError("not a whole number")
            value = int(value)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ValueError("out of range")
        return value
    return cast


def choice(*values: str) -> Cast:
    def cast(raw: str) -> str:
        if raw.lower() not in values:
            raise ValueError("not one of the accepted values")
        return raw.lower()
    return cast


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def boolean(raw: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError("not a boolean")


def url(*schemes: str) -> Cast:
    def cast(raw: str) -> str:
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme.lower() not in schemes or not rest.strip("/"):
            raise ValueError("not a URL with an accepted scheme")
        return raw
    return cast


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Variable:
    """One environment variable: how to cast it, its default (``None``: unset), and what it accepts."""

    name: str
    cast: Cast
    default: Any
    accepts: str
    description: str
    group: str
    secret: bool = False
    # Read by a library we hand it to (MLflow, Dagster, boto3, prometheus_client), listed for the docs table.
    read_by: str = "mlplatform"

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        raw = (os.environ if environ is None else environ).get(self.name)
        if raw is None or raw.strip() == "":
            return self.default
        try:
            return self.cast(raw.strip())
        except (ValueError, TypeError):
            shown = "" if self.secret else f"={raw.strip()!r}"
            raise ConfigError(f"{self.name}{shown} is invalid: expected {self.accepts}") from None


VARIABLES: tuple[Variable, ...] = (
    # Where state lives
    Variable(ENV_HOME, text, None, "a directory path", "Local state directory of the embedded default "
             "(default ./.mlplatform); per-pod scratch on a cluster.", "state"),
    Variable(ENV_MODELS_DIR, text, None, "a directory of *.yaml model specs",
             "Where the model specs are (default: the examples shipped in the package).", "state"),
    Variable(ENV_DATA_URI, text, None, "a directory path or s3://bucket/prefix",
             "Partition data, datasets handed between assets, reports (default $MLPLATFORM_HOME/data).", "state"),
    Variable(ENV_PREDICTION_LOG_URI, text, None, "a directory path or s3://bucket/prefix",
             "Where serving writes its prediction log (default $MLPLATFORM_HOME/predictions).", "state"),
    Variable(ENV_DAGSTER_HOME, text, None, "a directory with dagster.yaml",
             "Dagster instance directory (default $MLPLATFORM_HOME/dagster).", "state", read_by="mlplatform, Dagster"),
    # MLflow
    Variable(ENV_TRACKING_URI, text, None, "sqlite:///PATH, postgresql://..., or http(s)://server",
             "MLflow tracking store (default SQLite under $MLPLATFORM_HOME/mlflow).", "mlflow",
             read_by="mlplatform, MLflow"),
    Variable(ENV_REGISTRY_URI, text, None, "like MLFLOW_TRACKING_URI",
             "MLflow model registry (default: the tracking URI).", "mlflow", read_by="mlplatform, MLflow"),
    Variable(ENV_ARTIFACT_ROOT, text, None, "file:///PATH or s3://bucket/prefix",
             "Artifact root of new experiments (default: local directory; none against a tracking server, "
             "whose proxied store owns artifacts).", "mlflow"),
    Variable(ENV_MLFLOW_UI_URL, url("http", "https"), None, "an http(s) URL",
             "Public URL of the MLflow UI used in asset metadata links (default: the tracking server's URL, "
             "or the UI `mlplatform ui` starts).", "mlflow"),
    # Training and plugins
    Variable(ENV_TRAIN_THREADS, number(minimum=1, integer=True), 1, "a whole number >= 1",
             "Threads an estimator may use while training (n_jobs / OpenMP).", "training"),
    Variable(ENV_TRUSTED_MODULES, comma_list, (), "comma-separated dotted module prefixes",
             "Operator-trusted plugin packages for estimators and feature transformers (training and loading).",
             "training"),
    # Sensors
    Variable(ENV_SENSOR_INTERVAL, number(minimum=1, integer=True), 30, "a whole number of seconds >= 1",
             "Minimum interval between ticks of the platform's sensors.", "automation"),
    Variable(ENV_SENSORS_DEFAULT, choice("running", "stopped"), "stopped", "running or stopped",
             "Whether sensors start running when the code location loads (a cluster sets running).", "automation"),
    Variable(ENV_NEW_DATA_MAX, number(minimum=1, integer=True), 10, "a whole number >= 1",
             "Most days one tick of a new-data sensor requests.", "automation"),
    # Object store
    Variable(ENV_S3_ENDPOINT, url("http", "https"), None, "an http(s) URL",
             "S3-compatible endpoint (MinIO, moto); unset: AWS.", "object store", read_by="mlplatform, boto3"),
    Variable(ENV_S3_ENDPOINT_S3, url("http", "https"), None, "an http(s) URL",
             "S3 endpoint for the prediction log only (overrides AWS_ENDPOINT_URL there).", "object store",
             read_by="mlplatform, boto3"),
    Variable(ENV_PROMETHEUS_MULTIPROC_DIR, text, None, "a directory path",
             "Multi-process metrics directory (set by `mlplatform serve --workers N` itself).", "serving",
             read_by="mlplatform, prometheus_client"),
    Variable(ENV_SERVING_SPEC, text, None, "(internal)", "Set by `mlplatform serve --workers N` for its worker "
             "processes; never set it yourself.", "serving"),
    # Cost (mlplatform cost): prices turning measured resources into money, in any one currency
    Variable(ENV_PRICE_CPU_HOUR, number(minimum=0), None, "a number >= 0 (price of one CPU-hour)",
             "Price of one CPU-hour: training and serving CPU seconds / 3600 x this.", "cost"),
    Variable(ENV_PRICE_GB_MONTH, number(minimum=0), None, "a number >= 0 (price of 1 GB = 2^30 bytes for a month)",
             "Price of storing one GB for a month: bytes stored / 2^30 x this, per month.", "cost"),
)

def all_variables() -> tuple[Variable, ...]:
    """Every declared variable: the ones above, the serving settings, the alert delivery settings and each
    alert sink's own variables (declared next to the sink)."""
    from mlplatform_assets.lib.monitoring.alerting.sink import alert_variables
    from mlplatform_assets.lib.serving.settings import serving_variables

    found: dict[str, Variable] = {}
    for var in (*VARIABLES, *serving_variables(), *alert_variables()):
        if var.name in found:
            raise RuntimeError(f"configuration variable {var.name} is declared twice")
        found[var.name] = var
    return tuple(found.values())


_BY_NAME: dict[str, Variable] = {v.name: v for v in VARIABLES}


def read(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The cast value of a variable declared in :data:`VARIABLES` (its default when unset or empty)."""
    return _BY_NAME[name].read(environ)


def read_variable(variable: Variable, environ: Mapping[str, str] | None = None) -> Any:
    """The cast value of a variable declared elsewhere (serving settings, an alert sink)."""
    return variable.read(environ)


def environment(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The raw environment, for code that hands it on whole (child processes)."""
    return os.environ if environ is None else environ


def check_environment(environ: Mapping[str, str] | None = None,
                      variables: Sequence[Variable] | None = None) -> None:
    """Raise :class:`ConfigError` listing every declared variable whose value is invalid."""
    problems = []
    for var in (all_variables() if variables is None else variables):
        try:
            var.read(environ)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))


def variables_markdown() -> str:
    """The table of docs/configuration.md."""
    lines = ["| variable | default | accepts | read by | what it does |", "|---|---|---|---|---|"]
    for var in sorted(all_variables(), key=lambda v: (v.group, v.name)):
        default = "(unset)" if var.default in (None, ()) else f"`{var.default}`"
        if isinstance(var.default, bool):
            default = "`on`" if var.default else "`off`"
        secret = " Secret: never logged." if var.secret else ""
        lines.append(f"| `{var.name}` | {default} | {var.accepts} | {var.read_by} | "
                     f"{var.description}{secret} |")
    return "\n".join(lines) + "\n"


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
    root = read(ENV_ARTIFACT_ROOT, env)
    if root:
        return root
    if is_tracking_server(tracking_uri):
        return None
    return (state_dir / "mlflow" / "artifacts").as_uri()


def load_config(environ: Mapping[str, str] | None = None) -> PlatformConfig:
    """Resolve the configuration from ``environ`` (default: ``os.environ``), after checking every variable.

    Pure: it creates nothing on disk; callers that write use :func:`ensure_dirs`. Raises :class:`ConfigError`.
    """
    env = os.environ if environ is None else environ
    check_environment(env)
    state_dir = Path(read(ENV_HOME, env) or ".mlplatform").expanduser().resolve()
    tracking_uri = read(ENV_TRACKING_URI, env) or _sqlite_uri(state_dir / "mlflow" / "mlflow.db")
    data_uri = read(ENV_DATA_URI, env) or str(state_dir / "data")
    # No shared filesystem on a cluster: when the data lives in the object store, so do the audit
    # mirror and the alert log (one object per record), and MLPLATFORM_HOME is only per-pod scratch.
    records_root = f"{data_uri.rstrip('/')}/_platform" if data_uri.startswith("s3://") else None
    return PlatformConfig(
        state_dir=str(state_dir),
        dagster_home=str(Path(read(ENV_DAGSTER_HOME, env) or state_dir / "dagster").expanduser().resolve()),
        models_dir=str(Path(read(ENV_MODELS_DIR, env) or examples_models_dir()).expanduser().resolve()),
        mlflow_tracking_uri=tracking_uri,
        mlflow_registry_uri=read(ENV_REGISTRY_URI, env) or tracking_uri,
        artifact_root=_artifact_root(env, tracking_uri, state_dir),
        data_uri=data_uri,
        audit_log_path=f"{records_root}/audit" if records_root else str(state_dir / "audit" / "promotions.jsonl"),
        alerts_log_path=f"{records_root}/alerts" if records_root else str(state_dir / "audit" / "alerts.jsonl"),
        prediction_log_uri=read(ENV_PREDICTION_LOG_URI, env) or str(state_dir / "predictions"),
        mlflow_ui_url=(read(ENV_MLFLOW_UI_URL, env) or (tracking_uri if is_tracking_server(tracking_uri) else
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
