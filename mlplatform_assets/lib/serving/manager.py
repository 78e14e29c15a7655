"""Keeps the champion loaded: initial load, registry polling, background reload, atomic swap."""

from __future__ import annotations

import logging
import threading
import time

from mlplatform_assets.lib.serving.model import (
    ModelHandle,
    ModelLoadError,
    load_version,
    resolve_alias,
)

log = logging.getLogger("mlplatform.serving.manager")
MAX_RETRY_BACKOFF_S = 600.0


class ModelManager:
    """``current`` is the only shared state: a reference replaced in one assignment.

    Requests read it once and keep using the handle they read, so a swap never changes the
    model under a request; the old handle stays alive until its last request finishes.
    """

    def __init__(self, config, settings, metrics, on_swap=None):
        self.config = config
        self._on_swap = on_swap  # called on the poller thread after each new version went live
        self.settings = settings
        self.metrics = metrics
        self.current: ModelHandle | None = None
        self.last_error: str | None = None
        self._failed: dict[str, tuple[int, float]] = {}  # version -> (attempts, retry_at)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._alias_missing_logged = False
        self._extra_trusted = frozenset(settings.extra_trusted_types)
        self.loaded = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mlplatform-model-poller", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # noqa: BLE001 - the registry may be down; keep serving
                self.metrics.poll_errors.labels(self.settings.model_name).inc()
                self.last_error = f"registry poll failed: {type(exc).__name__}"
                log.warning("registry poll for %s failed: %s: %s", self.settings.model_name, type(exc).__name__, exc)
            self._stop.wait(self.settings.poll_interval_s)

    def poll_once(self) -> bool:
        """Check the alias; load and swap if it moved. Returns True if a new version went live."""
        name, alias = self.settings.model_name, self.settings.alias
        version = resolve_alias(self.config, name, alias)
        if version is None:
            if not self._alias_missing_logged:
                log.warning("models:/%s@%s does not exist (yet); waiting for it", name, alias)
                self._alias_missing_logged = True
            if self.current is None:
                self.last_error = f"models:/{name}@{alias} does not exist"
            return False
        self._alias_missing_logged = False
        cur = self.current
        if cur is not None and cur.version == version:
            return False
        failed = self._failed.get(version)
        if failed is not None and time.monotonic() < failed[1]:
            return False
        log.info("loading %s version %s (alias %s)%s", name, version, alias,
                 f", replacing version {cur.version}" if cur else "")
        started = time.perf_counter()
        try:
            handle = load_version(self.config, name, version, self.settings.max_rows, self._extra_trusted)
        except ModelLoadError as exc:
            attempts = (failed[0] if failed else 0) + 1
            backoff = min(self.settings.poll_interval_s * (2 ** attempts), MAX_RETRY_BACKOFF_S)
            self._failed[version] = (attempts, time.monotonic() + backoff)
            self.metrics.reload_failures.labels(name).inc()
            self.last_error = str(exc)
            log.error("could not load %s version %s (attempt %d, retry in %.0fs); %s: %s", name, version, attempts,
                      backoff, "still serving version " + cur.version if cur else "no model is being served", exc)
            return False
        self._failed.pop(version, None)
        self.current = handle  # the swap: one reference assignment
        self.last_error = None
        self.metrics.model_version.labels(name).set(_as_number(version))
        self.metrics.reloads.labels(name).inc()
        self.loaded.set()
        log.info("now serving %s version %s (loaded in %.2fs)", name, version, time.perf_counter() - started)
        if self._on_swap is not None:
            self._on_swap()
        return True


def _as_number(version: str) -> float:
    try:
        return float(version)
    except ValueError:
        return -1.0
