"""Running the service: ``serve()`` (blocking), a threaded runner for tests, and CLI glue."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time

import orjson

from mlplatform_assets.lib.serving.app import (
    ServingApp,
    create_app,
    harden_process_env,
    tune_serving_process,
)
from mlplatform_assets.lib.serving.errors import ServingConfigError
from mlplatform_assets.lib.serving.settings import ENV_MAX_CONNECTIONS, ServingSettings

log = logging.getLogger("mlplatform.serving")

_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# File descriptors a serving process needs besides its client connections (store, model files, log).
_FD_RESERVE = 256


def _uvicorn_kwargs(host: str, port: int, log_level: str, settings: ServingSettings) -> dict:
    from mlplatform_assets.lib.serving.protocol import GuardedHttpToolsProtocol

    # ws="none": uvicorn never upgrades; the protocol answers upgrade requests with 400.
    return dict(host=host, port=port, loop="uvloop", http=GuardedHttpToolsProtocol, ws="none", lifespan="on",
                access_log=False, log_level=log_level, timeout_graceful_shutdown=settings.drain_timeout_s,
                timeout_keep_alive=settings.keep_alive_timeout_s, backlog=4096, server_header=False)


def ensure_fd_limit(settings: ServingSettings) -> None:
    """Raise this process's open-file soft limit to fit the connection cap, or refuse to start."""
    import resource

    need = settings.max_connections + settings.overflow_connections + _FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise ServingConfigError(
            f"{ENV_MAX_CONNECTIONS}={settings.max_connections} needs {need} open files (the cap, "
            f"{settings.overflow_connections} probe-only connections beyond it, {_FD_RESERVE} for the process) but "
            f"the hard limit is {hard}: lower {ENV_MAX_CONNECTIONS} or raise the limit (ulimit -n)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def serve(model_name: str, host: str = "127.0.0.1", port: int = 8080, workers: int = 1, config=None,
          poll_interval_s: float | None = None, api_keys: list[str] | None = None,
          revoked_api_keys: list[str] | None = None, api_keys_file: str | None = None,
          revoked_api_keys_file: str | None = None, max_body_bytes: int | None = None, max_rows: int | None = None,
          batch_window_ms: float | None = None, max_batch_rows: int | None = None,
          prediction_log: bool | None = None, alias: str | None = None, log_level: str = "info",
          **overrides) -> None:
    """Serve ``models:/<model_name>@champion`` over HTTP until SIGINT/SIGTERM (blocking).

    Every ``None`` argument falls back to its ``MLPLATFORM_SERVING_*`` / ``MLPLATFORM_API_KEYS*``
    environment variable, then to the default (see docs/serving.md); ``overrides`` are further
    :meth:`ServingSettings.resolve` arguments (``allow_unauthenticated``, ``max_connections``,
    ``log_spool_dir``, the other limits). Raises ServingConfigError before listening if a setting is
    invalid, no API key is configured without ``allow_unauthenticated``, or a key file is unreadable.
    ``workers > 1`` starts that many processes (uvicorn's supervisor), each loading the model and
    polling the registry; metrics are then aggregated with prometheus_client's multiprocess mode.
    On SIGTERM uvicorn stops accepting connections, completes in-flight requests (up to
    ``drain_timeout_s``, default 20 s), then each worker flushes its prediction log.
    """
    import uvicorn

    from mlplatform_assets.lib.serving.auth import ApiKeyAuth

    if config is None:
        from mlplatform_assets.lib.config import load_config

        config = load_config()
    settings = ServingSettings.resolve(
        model_name, poll_interval_s=poll_interval_s, api_keys=api_keys, revoked_api_keys=revoked_api_keys,
        api_keys_file=api_keys_file, revoked_api_keys_file=revoked_api_keys_file, max_body_bytes=max_body_bytes,
        max_rows=max_rows, batch_window_ms=batch_window_ms, max_batch_rows=max_batch_rows,
        prediction_log=prediction_log, alias=alias, **overrides)
    if workers < 1:
        raise ServingConfigError("workers must be >= 1")
    ApiKeyAuth.from_settings(settings)  # unreadable key files stop us here, before any worker starts
    ensure_fd_limit(settings)
    for k, v in _THREAD_ENV.items():
        os.environ.setdefault(k, v)
    harden_process_env()
    tune_serving_process()
    _configure_logging(log_level)
    kwargs = _uvicorn_kwargs(host, port, log_level, settings)
    if workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(model_name, config, settings), **kwargs))
        server.run()
        return
    mp_dir = tempfile.mkdtemp(prefix="mlplatform-serving-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
    os.environ["MLPLATFORM_SERVING_SPEC"] = orjson.dumps(
        {"settings": settings.to_json_dict(), "config": config.as_dict()}).decode()
    try:
        uvicorn.run("mlplatform_assets.lib.serving.app:app_from_env", factory=True, workers=workers, **kwargs)
    finally:
        shutil.rmtree(mp_dir, ignore_errors=True)


def _configure_logging(level: str) -> None:
    root = logging.getLogger("mlplatform")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"))
        root.addHandler(handler)
    root.setLevel(level.upper())


class ThreadedServer:
    """Run a ServingApp under uvicorn in a background thread (tests, notebooks).

    >>> srv = ThreadedServer(create_app("m", config)).start()   # doctest: +SKIP
    >>> srv.url; srv.stop()                                     # doctest: +SKIP
    """

    def __init__(self, app: ServingApp, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.app = app
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_kwargs(host, self.port, log_level, app.settings)))
        self.thread = threading.Thread(target=self.server.run, name="mlplatform-serving-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0, wait_model: bool = False) -> "ThreadedServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("serving thread did not start")
            time.sleep(0.01)
        if wait_model and not self.app.manager.loaded.wait(max(0.0, deadline - time.monotonic())):
            raise RuntimeError(f"model not loaded: {self.app.manager.last_error}")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, read it back)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``mlplatform serve`` arguments to ``parser``."""
    parser.add_argument("--model", required=True, help="registered model name; serves models:/NAME@champion")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes, each loading the model (default 1; see docs/serving.md)")
    parser.add_argument("--poll-interval", type=float, default=None, dest="poll_interval_s",
                        help="seconds between registry polls for a moved alias (env MLPLATFORM_SERVING_POLL_INTERVAL_S)")
    parser.add_argument("--alias", default=None, help="registry alias to serve (default champion)")
    parser.add_argument("--api-keys-file", default=None, help="file with one API key per line (env MLPLATFORM_API_KEYS_FILE)")
    parser.add_argument("--revoked-api-keys-file", default=None)
    parser.add_argument("--max-body-bytes", type=int, default=None)
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument("--batch-window-ms", type=float, default=None)
    parser.add_argument("--no-prediction-log", action="store_true")
    parser.add_argument("--log-spool-dir", default=None,
                        help="append every logged batch to a local spool here before answering (bounded loss on "
                             "SIGKILL; env MLPLATFORM_SERVING_LOG_SPOOL_DIR)")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="open connections served in full (env MLPLATFORM_SERVING_MAX_CONNECTIONS, default 2048)")
    parser.add_argument("--allow-unauthenticated", action="store_true", default=None,
                        help="serve without API keys (env MLPLATFORM_SERVING_AUTH=off); without keys and without "
                             "this the server refuses to start")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


def run_from_args(args: argparse.Namespace) -> None:
    """Run ``serve`` from parsed :func:`add_serve_arguments` arguments (API keys only via env/file).

    A configuration error is printed (no traceback) and exits with status 2.
    """
    try:
        serve(args.model, host=args.host, port=args.port, workers=args.workers, poll_interval_s=args.poll_interval_s,
              alias=args.alias, api_keys_file=args.api_keys_file, revoked_api_keys_file=args.revoked_api_keys_file,
              max_body_bytes=args.max_body_bytes, max_rows=args.max_rows, batch_window_ms=args.batch_window_ms,
              prediction_log=False if args.no_prediction_log else None, log_level=args.log_level,
              allow_unauthenticated=args.allow_unauthenticated, max_connections=args.max_connections,
              log_spool_dir=args.log_spool_dir)
    except ServingConfigError as exc:
        print(f"mlplatform serve: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv=None) -> None:
    """``python -m mlplatform_assets.lib.serving --model NAME`` (same arguments as ``mlplatform serve``)."""
    parser = add_serve_arguments(argparse.ArgumentParser(prog="mlplatform-serve"))
    run_from_args(parser.parse_args(argv))
