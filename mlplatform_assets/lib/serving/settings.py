"""Serving settings: resolved from arguments first, then the environment, then defaults.

Pure: reading settings never changes the process (no env writes, no files created).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Mapping

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

DEFAULT_POLL_INTERVAL_S = 10.0
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_ROWS = 10_000
DEFAULT_BATCH_WINDOW_MS = 1.0
DEFAULT_MAX_BATCH_ROWS = 2_048
DEFAULT_LOG_FLUSH_ROWS = 50_000
DEFAULT_LOG_FLUSH_INTERVAL_S = 10.0


def _num(env: Mapping[str, str], name: str, default: float, cast=float):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return cast(default)
    try:
        value = cast(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number") from exc
    if value < 0:
        raise ValueError(f"{name} must be >= 0")
    return value


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
    extra: dict = field(default_factory=dict)

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
        poll_interval_s: float | None = None,
        max_body_bytes: int | None = None,
        max_rows: int | None = None,
        batch_window_ms: float | None = None,
        max_batch_rows: int | None = None,
        prediction_log: bool | None = None,
        log_flush_rows: int | None = None,
        log_flush_interval_s: float | None = None,
        api_keys: list[str] | tuple[str, ...] | None = None,
        revoked_api_keys: list[str] | tuple[str, ...] | None = None,
        api_keys_file: str | None = None,
        revoked_api_keys_file: str | None = None,
        trusted_types: list[str] | tuple[str, ...] | None = None,
    ) -> "ServingSettings":
        from .auth import hash_key, split_keys

        env = os.environ if environ is None else environ
        if not model_name or not isinstance(model_name, str):
            raise ValueError("model_name is required")

        def pick(value, name, default, cast):
            return cast(value) if value is not None else _num(env, name, default, cast)

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
            poll_interval_s=pick(poll_interval_s, ENV_POLL_INTERVAL, DEFAULT_POLL_INTERVAL_S, float),
            max_body_bytes=pick(max_body_bytes, ENV_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, int),
            max_rows=pick(max_rows, ENV_MAX_ROWS, DEFAULT_MAX_ROWS, int),
            batch_window_ms=pick(batch_window_ms, ENV_BATCH_WINDOW_MS, DEFAULT_BATCH_WINDOW_MS, float),
            max_batch_rows=pick(max_batch_rows, ENV_MAX_BATCH_ROWS, DEFAULT_MAX_BATCH_ROWS, int),
            prediction_log=bool(prediction_log),
            log_flush_rows=pick(log_flush_rows, ENV_LOG_FLUSH_ROWS, DEFAULT_LOG_FLUSH_ROWS, int),
            log_flush_interval_s=pick(log_flush_interval_s, ENV_LOG_FLUSH_INTERVAL, DEFAULT_LOG_FLUSH_INTERVAL_S, float),
            extra_trusted_types=tuple(types),
            api_key_hashes=key_hashes,
            revoked_key_hashes=revoked,
            api_keys_file=api_keys_file or env.get(ENV_API_KEYS_FILE) or None,
            revoked_api_keys_file=revoked_api_keys_file or env.get(ENV_REVOKED_API_KEYS_FILE) or None,
        )
        if settings.poll_interval_s <= 0:
            raise ValueError("poll interval must be > 0")
        if settings.max_rows < 1 or settings.max_body_bytes < 1 or settings.max_batch_rows < 1:
            raise ValueError("max_rows, max_body_bytes and max_batch_rows must be >= 1")
        return settings
