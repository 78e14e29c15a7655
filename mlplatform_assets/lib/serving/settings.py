"""Serving settings: resolved from arguments first, then the environment, then defaults.

Pure: reading settings never changes the process (no env writes, no files created).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

from mlplatform_assets.lib.config import ConfigError, Variable, boolean, choice, comma_list, environment, number, text
from mlplatform_assets.lib.serving.errors import ServingConfigError

ENV_POLL_INTERVAL = "MLPLATFORM_SERVING_POLL_INTERVAL_S"
ENV_MAX_BODY_BYTES = "MLPLATFORM_SERVING_MAX_BODY_BYTES"
ENV_MAX_ROWS = "MLPLATFORM_SERVING_MAX_ROWS"
ENV_BATCH_WINDOW_MS = "MLPLATFORM_SERVING_BATCH_WINDOW_MS"
ENV_MAX_BATCH_ROWS = "MLPLATFORM_SERVING_MAX_BATCH_ROWS"
ENV_LOG_FLUSH_ROWS = "MLPLATFORM_SERVING_LOG_FLUSH_ROWS"
ENV_LOG_FLUSH_INTERVAL = "MLPLATFORM_SERVING_LOG_FLUSH_INTERVAL_S"
ENV_PREDICTION_LOG = "MLPLATFORM_SERVING_PREDICTION_LOG"  # "off" disables the log
ENV_TRUSTED_TYPES = "MLPLATFORM_SERVING_TRUSTED_TYPES"
ENV_ALIAS = "MLPLATFORM_SERVING_ALIAS"
ENV_API_KEYS = "MLPLATFORM_API_KEYS"
ENV_API_KEYS_FILE = "MLPLATFORM_API_KEYS_FILE"
ENV_REVOKED_API_KEYS = "MLPLATFORM_REVOKED_API_KEYS"
ENV_REVOKED_API_KEYS_FILE = "MLPLATFORM_REVOKED_API_KEYS_FILE"
ENV_AUTH = "MLPLATFORM_SERVING_AUTH"  # "off": run without authentication (explicit opt-out)
ENV_MAX_HEADER_BYTES = "MLPLATFORM_SERVING_MAX_HEADER_BYTES"
ENV_HEADER_TIMEOUT = "MLPLATFORM_SERVING_HEADER_TIMEOUT_S"
ENV_KEEP_ALIVE_TIMEOUT = "MLPLATFORM_SERVING_KEEP_ALIVE_TIMEOUT_S"
ENV_BODY_TIMEOUT = "MLPLATFORM_SERVING_BODY_TIMEOUT_S"
ENV_MIN_BODY_RATE = "MLPLATFORM_SERVING_MIN_BODY_RATE"
ENV_MAX_CONNECTIONS = "MLPLATFORM_SERVING_MAX_CONNECTIONS"
ENV_BODY_BUDGET_BYTES = "MLPLATFORM_SERVING_BODY_BUDGET_BYTES"
ENV_PARSE_THREAD_BYTES = "MLPLATFORM_SERVING_PARSE_THREAD_BYTES"
ENV_DRAIN_TIMEOUT = "MLPLATFORM_SERVING_DRAIN_TIMEOUT_S"
ENV_LOG_SPOOL_DIR = "MLPLATFORM_SERVING_LOG_SPOOL_DIR"

DEFAULT_POLL_INTERVAL_S = 10.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_ROWS = 10_000
DEFAULT_BATCH_WINDOW_MS = 1.0
DEFAULT_MAX_BATCH_ROWS = 2_048
DEFAULT_LOG_FLUSH_ROWS = 50_000
DEFAULT_LOG_FLUSH_INTERVAL_S = 10.0
# Connection limits (docs/serving.md "Server limits").
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_TIMEOUT_S = 15.0
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_MIN_BODY_RATE = 16 * 1024
DEFAULT_MAX_CONNECTIONS = 2048
# Raw body bytes held across all requests of a process. Parsed JSON takes several times its raw
# size in Python objects, so 64 MiB of bodies is a few hundred MiB at peak (docs/serving.md).
DEFAULT_BODY_BUDGET_BYTES = 64 * 1024 * 1024
DEFAULT_PARSE_THREAD_BYTES = 64 * 1024
DEFAULT_DRAIN_TIMEOUT_S = 20.0


# Numeric settings: field of ServingSettings -> environment variable (the field's default is the default).
NUMERIC_SETTINGS = {
    "poll_interval_s": ENV_POLL_INTERVAL,
    "max_body_bytes": ENV_MAX_BODY_BYTES,
    "max_rows": ENV_MAX_ROWS,
    "batch_window_ms": ENV_BATCH_WINDOW_MS,
    "max_batch_rows": ENV_MAX_BATCH_ROWS,
    "log_flush_rows": ENV_LOG_FLUSH_ROWS,
    "log_flush_interval_s": ENV_LOG_FLUSH_INTERVAL,
    "max_header_bytes": ENV_MAX_HEADER_BYTES,
    "header_timeout_s": ENV_HEADER_TIMEOUT,
    "keep_alive_timeout_s": ENV_KEEP_ALIVE_TIMEOUT,
    "body_timeout_s": ENV_BODY_TIMEOUT,
    "min_body_rate": ENV_MIN_BODY_RATE,
    "max_connections": ENV_MAX_CONNECTIONS,
    "body_budget_bytes": ENV_BODY_BUDGET_BYTES,
    "parse_thread_bytes": ENV_PARSE_THREAD_BYTES,
    "drain_timeout_s": ENV_DRAIN_TIMEOUT,
}


_NUMERIC_DOCS = {
    "poll_interval_s": "Seconds between checks of the served alias (hot swap).",
    "max_body_bytes": "Largest request body accepted (413 above).",
    "max_rows": "Most rows in one request (413 above).",
    "batch_window_ms": "How long concurrent requests wait to be scored together.",
    "max_batch_rows": "Most rows scored in one batch.",
    "log_flush_rows": "Prediction-log rows buffered before a file is written.",
    "log_flush_interval_s": "Seconds between prediction-log flushes.",
    "max_header_bytes": "Largest request head accepted (431 above); at least 1024.",
    "header_timeout_s": "Seconds a client may take to send the request head.",
    "keep_alive_timeout_s": "Seconds an idle keep-alive connection stays open.",
    "body_timeout_s": "Seconds a client may take to send the body.",
    "min_body_rate": "Slowest accepted body upload, bytes per second (slow-loris defence).",
    "max_connections": "Open connections served before new ones only reach the probes.",
    "body_budget_bytes": "Raw body bytes held across all requests of a process (503 above).",
    "parse_thread_bytes": "Bodies larger than this are parsed off the event loop.",
    "drain_timeout_s": "Seconds in-flight requests get on shutdown.",
}


def _numeric_variable(field_name: str, env_name: str, default: float) -> Variable:
    integer = isinstance(default, int)
    kind = "a whole number" if integer else "a number"
    # >= 0 here; validate() then refuses the combinations the server cannot run with, naming the variable.
    return Variable(env_name, number(minimum=0, integer=integer), default, f"{kind} >= 0", _NUMERIC_DOCS[field_name],
                    "serving")


def _numeric_variables() -> dict[str, Variable]:
    defaults = {name: ServingSettings.__dataclass_fields__[name].default for name in NUMERIC_SETTINGS}
    return {name: _numeric_variable(name, env_name, defaults[name]) for name, env_name in NUMERIC_SETTINGS.items()}


def _read(variable: Variable, env: Mapping[str, str]):
    try:
        return variable.read(env)
    except ConfigError as exc:
        raise ServingConfigError(str(exc)) from None


@dataclass(frozen=True)
class ServingSettings:
    """Tunables of one serving process. Build with :meth:`resolve`."""

    model_name: str
    alias: str = "champion"
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_rows: int = DEFAULT_MAX_ROWS
    batch_window_ms: float = DEFAULT_BATCH_WINDOW_MS
    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    prediction_log: bool = True
    log_flush_rows: int = DEFAULT_LOG_FLUSH_ROWS
    log_flush_interval_s: float = DEFAULT_LOG_FLUSH_INTERVAL_S
    extra_trusted_types: tuple[str, ...] = ()
    # API keys: only sha256 hex digests are ever held. Files are re-read when they change.
    api_key_hashes: tuple[str, ...] = ()
    revoked_key_hashes: tuple[str, ...] = ()
    api_keys_file: str | None = None
    revoked_api_keys_file: str | None = None
    # Running without authentication must be asked for explicitly (fail closed).
    allow_unauthenticated: bool = False
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    min_body_rate: int = DEFAULT_MIN_BODY_RATE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    body_budget_bytes: int = DEFAULT_BODY_BUDGET_BYTES
    parse_thread_bytes: int = DEFAULT_PARSE_THREAD_BYTES
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    # A local directory: every logged batch is appended and fsynced there before its response
    # is sent (bounded loss on SIGKILL); None: in-memory buffering only.
    log_spool_dir: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def overflow_connections(self) -> int:
        """Connections accepted beyond ``max_connections`` that may only reach the probe routes."""
        return max(64, self.max_connections // 4)

    def to_json_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict) -> "ServingSettings":
        data = dict(data)
        for key in ("extra_trusted_types", "api_key_hashes", "revoked_key_hashes"):
            data[key] = tuple(data.get(key) or ())
        return cls(**data)

    @classmethod
    def resolve(
        cls,
        model_name: str,
        *,
        environ: Mapping[str, str] | None = None,
        alias: str | None = None,
        prediction_log: bool | None = None,
        api_keys: list[str] | tuple[str, ...] | None = None,
        revoked_api_keys: list[str] | tuple[str, ...] | None = None,
        api_keys_file: str | None = None,
        revoked_api_keys_file: str | None = None,
        trusted_types: list[str] | tuple[str, ...] | None = None,
        allow_unauthenticated: bool | None = None,
        log_spool_dir: str | None = None,
        **numbers: float | None,
    ) -> "ServingSettings":
        """Each setting from its argument, else its environment variable, else its default.

        ``numbers``: the numeric settings by field name (``max_body_bytes=..., header_timeout_s=...``;
        see :data:`NUMERIC_SETTINGS` for their variables); ``None`` means "not given".
        """
        from mlplatform_assets.lib.serving.auth import hash_key, split_keys

        env = environment(environ)
        if not model_name or not isinstance(model_name, str):
            raise ServingConfigError("model_name is required")
        unknown = set(numbers) - set(NUMERIC_SETTINGS)
        if unknown:
            raise TypeError(f"unknown serving setting(s): {', '.join(sorted(unknown))}")
        resolved = {}
        for name, variable in _numeric_variables().items():
            value = numbers.get(name)
            resolved[name] = type(variable.default)(value) if value is not None else _read(variable, env)

        other = {v.name: v for v in _OTHER_VARIABLES}
        key_hashes = tuple(hash_key(k) for k in (api_keys if api_keys is not None
                                                 else split_keys(_read(other[ENV_API_KEYS], env) or "")))
        revoked = tuple(hash_key(k) for k in (revoked_api_keys if revoked_api_keys is not None
                                              else split_keys(_read(other[ENV_REVOKED_API_KEYS], env) or "")))
        types = trusted_types if trusted_types is not None else _read(other[ENV_TRUSTED_TYPES], env)
        if prediction_log is None:
            prediction_log = _read(other[ENV_PREDICTION_LOG], env)
        if allow_unauthenticated is None:
            allow_unauthenticated = _read(other[ENV_AUTH], env) == "off"
        settings = cls(
            model_name=model_name,
            alias=alias or _read(other[ENV_ALIAS], env),
            prediction_log=bool(prediction_log),
            extra_trusted_types=tuple(types),
            api_key_hashes=key_hashes,
            revoked_key_hashes=revoked,
            api_keys_file=api_keys_file or _read(other[ENV_API_KEYS_FILE], env),
            revoked_api_keys_file=revoked_api_keys_file or _read(other[ENV_REVOKED_API_KEYS_FILE], env),
            allow_unauthenticated=bool(allow_unauthenticated),
            log_spool_dir=log_spool_dir or _read(other[ENV_LOG_SPOOL_DIR], env),
            **resolved,
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ServingConfigError for a value the server cannot run with (names the setting)."""
        if self.poll_interval_s <= 0:
            raise ServingConfigError(f"poll interval ({ENV_POLL_INTERVAL}) must be > 0")
        if self.max_rows < 1 or self.max_body_bytes < 1 or self.max_batch_rows < 1:
            raise ServingConfigError("max_rows, max_body_bytes and max_batch_rows must be >= 1")
        for name, value in ((ENV_HEADER_TIMEOUT, self.header_timeout_s), (ENV_BODY_TIMEOUT, self.body_timeout_s),
                            (ENV_KEEP_ALIVE_TIMEOUT, self.keep_alive_timeout_s), (ENV_MIN_BODY_RATE, self.min_body_rate),
                            (ENV_MAX_CONNECTIONS, self.max_connections)):
            if value <= 0:
                raise ServingConfigError(f"{name} must be > 0")
        if self.max_header_bytes < 1024:
            raise ServingConfigError(f"{ENV_MAX_HEADER_BYTES} must be >= 1024")
        if self.body_budget_bytes < self.max_body_bytes:
            raise ServingConfigError(f"{ENV_BODY_BUDGET_BYTES} ({self.body_budget_bytes}) must be >= "
                                     f"{ENV_MAX_BODY_BYTES} ({self.max_body_bytes}), or no full-size request fits")
        has_keys = bool(self.api_key_hashes or self.api_keys_file)
        if has_keys and self.allow_unauthenticated:
            raise ServingConfigError(f"API keys are configured and authentication is switched off "
                                     f"(--allow-unauthenticated / {ENV_AUTH}=off): choose one")
        if not has_keys and not self.allow_unauthenticated:
            raise ServingConfigError(
                f"no API keys configured: set {ENV_API_KEYS_FILE} (--api-keys-file) or {ENV_API_KEYS}, or run "
                f"without authentication explicitly with --allow-unauthenticated ({ENV_AUTH}=off)")


# The non-numeric serving variables; with the numeric ones they form SERVING_VARIABLES (docs/configuration.md).
_OTHER_VARIABLES: tuple[Variable, ...] = (
    Variable(ENV_ALIAS, text, "champion", "a registered-model alias", "The alias a server serves.", "serving"),
    Variable(ENV_PREDICTION_LOG, boolean, True, "on or off", "Log every prediction (for drift and delayed "
             "labels).", "serving"),
    Variable(ENV_TRUSTED_TYPES, comma_list, (), "comma-separated fully qualified class names",
             "Extra classes a served model file may contain (beyond the trust policy).", "serving"),
    Variable(ENV_API_KEYS, text, None, "comma-separated keys", "API keys accepted by the server (only their "
             "sha256 is kept).", "serving", secret=True),
    Variable(ENV_REVOKED_API_KEYS, text, None, "comma-separated keys", "API keys refused even if listed.",
             "serving", secret=True),
    Variable(ENV_API_KEYS_FILE, text, None, "a file path", "File of API keys (one per line), re-read on change.",
             "serving"),
    Variable(ENV_REVOKED_API_KEYS_FILE, text, None, "a file path", "File of revoked API keys.", "serving"),
    Variable(ENV_AUTH, choice("on", "required", "off"), "on", "on or off",
             "off runs the server without authentication (explicit opt-out; fail closed otherwise).", "serving"),
    Variable(ENV_LOG_SPOOL_DIR, text, None, "a directory path", "Spool every logged batch to this local "
             "directory (fsynced) before answering.", "serving"),
)


def serving_variables() -> tuple[Variable, ...]:
    return (*_numeric_variables().values(), *_OTHER_VARIABLES)
