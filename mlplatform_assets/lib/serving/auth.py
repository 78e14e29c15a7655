"""API-key authentication: only sha256 digests are held, compared in constant time.

Fail closed: authentication is on unless switched off explicitly (``--allow-unauthenticated`` /
``MLPLATFORM_SERVING_AUTH=off``); with it on and no key configured the server refuses to start
(see ServingSettings.validate), and a configured key file that cannot be read at start is an error.

Key sources (the union is accepted):

* ``MLPLATFORM_API_KEYS``: comma-separated keys;
* ``MLPLATFORM_API_KEYS_FILE``: a file with one key per line (blank lines and lines
  starting with ``#`` ignored). A line may also hold a digest as ``sha256:<64 hex>``
  so the file need not contain the secret itself.

Revoked keys use the same formats (``MLPLATFORM_REVOKED_API_KEYS`` /
``MLPLATFORM_REVOKED_API_KEYS_FILE``); a revoked key gets 403 even if it is also listed as valid.
Files are re-read when their modification time changes (checked at most once per second); a file
that becomes unreadable later keeps its last keys (a rotation in progress must not lock clients out
or un-revoke keys).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time

from mlplatform_assets.lib.serving.errors import ServingConfigError

log = logging.getLogger("mlplatform.serving.auth")

OK = "ok"
MISSING = "missing"
UNKNOWN = "unknown"
REVOKED = "revoked"


def hash_key(key: str) -> str:
    key = key.strip()
    if key.startswith("sha256:") and len(key) == 71:
        return key[7:].lower()
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def split_keys(raw: str) -> list[str]:
    return [k.strip() for k in (raw or "").split(",") if k.strip()]


def _read_key_file(path: str) -> tuple[str, ...]:
    hashes = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                hashes.append(hash_key(line))
    return tuple(hashes)


class _KeyFile:
    def __init__(self, path: str | None, what: str):
        self.path = path
        self.mtime: float | None = None
        self.hashes: tuple[str, ...] = ()
        if path:
            try:
                self.mtime = os.stat(path).st_mtime_ns
                self.hashes = _read_key_file(path)
            except (OSError, UnicodeDecodeError) as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise ServingConfigError(f"the {what} file {path} cannot be read ({detail})") from None

    def reload(self) -> None:
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            log.error("API key file %s is no longer readable; keeping the last keys read", self.path)
            return
        if mtime == self.mtime:
            return
        try:
            self.hashes = _read_key_file(self.path)
            self.mtime = mtime
        except (OSError, UnicodeDecodeError):
            log.error("API key file %s cannot be read; keeping the last keys read", self.path)


class ApiKeyAuth:
    """Decides whether a request's ``Authorization`` header is acceptable."""

    def __init__(self, key_hashes=(), revoked_hashes=(), keys_file=None, revoked_file=None, *, enabled: bool = True):
        """``enabled=False`` accepts every request (only with an explicit opt-out). Enabled with no
        key at all rejects every request. Raises ServingConfigError if a configured file is unreadable."""
        self._static = tuple(bytes.fromhex(h) for h in key_hashes)
        self._static_revoked = tuple(bytes.fromhex(h) for h in revoked_hashes)
        self._files = _KeyFile(keys_file, "API keys")
        self._revoked_file = _KeyFile(revoked_file, "revoked API keys")
        self.enabled = enabled
        self._lock = threading.Lock()
        self._last_check = time.monotonic()
        self._refresh_sets()

    @classmethod
    def from_settings(cls, settings) -> "ApiKeyAuth":
        return cls(settings.api_key_hashes, settings.revoked_key_hashes, settings.api_keys_file,
                   settings.revoked_api_keys_file, enabled=not settings.allow_unauthenticated)

    def _refresh_sets(self) -> None:
        self._valid = self._static + tuple(bytes.fromhex(h) for h in self._files.hashes)
        self._revoked = self._static_revoked + tuple(bytes.fromhex(h) for h in self._revoked_file.hashes)

    def maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._last_check < 1.0:
            return
        with self._lock:
            self._last_check = now
            self._files.reload()
            self._revoked_file.reload()
            self._refresh_sets()

    @staticmethod
    def _contains(digest: bytes, pool: tuple[bytes, ...]) -> bool:
        found = False
        for candidate in pool:  # no early exit: time does not depend on the position
            found |= hmac.compare_digest(digest, candidate)
        return found

    def check(self, authorization: bytes | None) -> str:
        """Return OK, MISSING, UNKNOWN or REVOKED for the raw header value."""
        if not self.enabled:
            return OK
        if self._files.path or self._revoked_file.path:
            self.maybe_reload()
        if not authorization:
            return MISSING
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return MISSING
        digest = hashlib.sha256(token).digest()
        revoked = self._contains(digest, self._revoked)
        valid = self._contains(digest, self._valid)
        if revoked:
            return REVOKED
        return OK if valid else UNKNOWN
