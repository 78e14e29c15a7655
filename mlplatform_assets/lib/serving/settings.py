"""Serving settings: resolved from arguments first, then the environment, then defaults.

Pure: reading settings never changes the process (no env writes, no files created).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Mapping

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


def _num(env: Mapping[str, str], name: str, default: float, cast=float):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return cast(default)
    try:
        value = cast(raw)
    except ValueError as exc:
        raise ServingConfigError(f"{name} must be a number") from exc
    if value < 0:
        raise ServingConfigError(f"{name} must be >= 0")
    return value


def _auth_off(env: Mapping[str, str]) -> bool:
    raw = env.get(ENV_AUTH, "").strip().lower()
    if raw in ("", "on", "required"):
        return False
    if raw == "off":
        return True
    raise ServingConfigError(f"{ENV_AUTH} must be 'on' or 'off'")


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

        env = os.environ if environ is None else environ
        if not model_name or not isinstance(model_name, str):
            raise ServingConfigError("model_name is required")
        unknown = set(numbers) - set(NUMERIC_SETTINGS)
        if unknown:
            raise TypeError(f"unknown serving setting(s): {', '.join(sorted(unknown))}")
        resolved = {}
        for name, env_name in NUMERIC_SETTINGS.items():
            default = cls.__dataclass_fields__[name].default
            value = numbers.get(name)
            resolved[name] = type(default)(value) if value is not None else _num(env, env_name, default, type(default))

        key_hashes = tuple(hash_key(k) for k in (api_keys if api_keys is not None else split_keys(env.get(ENV_API_KEYS, ""))))
        revoked = tuple(
            hash_key(k)
            for k in (revoked_api_keys if revoked_api_keys is not None else split_keys(env.get(ENV_REVOKED_API_KEYS, "")))
        )
        types = trusted_types if trusted_types is not None else [
            t.strip() for t in env.get(ENV_TRUSTED_TYPES, "").split(",") if t.strip()
        ]
        if prediction_log is None:
            prediction_log = env.get(ENV_PREDICTION_LOG, "on").strip().lower() not in ("off", "0", "false", "no")
        settings = cls(
            model_name=model_name,
            alias=alias or env.get(ENV_ALIAS) or "champion",
            prediction_log=bool(prediction_log),
            extra_trusted_types=tuple(types),
            api_key_hashes=key_hashes,
            revoked_key_hashes=revoked,
            api_keys_file=api_keys_file or env.get(ENV_API_KEYS_FILE) or None,
            revoked_api_keys_file=revoked_api_keys_file or env.get(ENV_REVOKED_API_KEYS_FILE) or None,
            allow_unauthenticated=(_auth_off(env) if allow_unauthenticated is None else bool(allow_unauthenticated)),
            log_spool_dir=log_spool_dir or env.get(ENV_LOG_SPOOL_DIR) or None,
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
