"""The ASGI application: a thin hand-written router over orjson (no framework per request).

Routes:
  POST /invocations                  MLflow scoring-server compatible
  POST /v1/models/{name}/predict     same bodies; 404 for another model name
  GET  /v1/models/{name}             served version, input columns, classes
  GET  /healthz                      liveness (never touches MLflow)
  GET  /readyz                       200 once a model is loaded, else 503
  GET  /metrics                      Prometheus text format
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid

import orjson

from . import auth as _auth
from .batcher import Batcher, Item
from .errors import ClientError, error_body, safe_name
from .manager import ModelManager
from .metrics import ServingMetrics
from .predlog import PredictionLogWriter
from .settings import ServingSettings

log = logging.getLogger("mlplatform.serving")

_JSON = b"application/json"
_REQUEST_ID_RE = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_V1_PREFIX = "/v1/models/"
R_INVOCATIONS = "/invocations"
R_V1_PREDICT = "/v1/models/{name}/predict"
R_V1_MODEL = "/v1/models/{name}"
R_HEALTH = "/healthz"
R_READY = "/readyz"
R_METRICS = "/metrics"
R_OTHER = "other"


class _Disconnected(Exception):
    pass


def harden_process_env() -> None:
    """Process-wide settings of a serving process (called at startup, never at import)."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"


class ServingApp:
    """ASGI app serving ``models:/NAME@<alias>``. Create with :func:`create_app`."""

    def __init__(self, settings: ServingSettings, config, harden_env: bool = True):
        self.settings = settings
        self.config = config
        self.model_name = settings.model_name
        self.harden_env = harden_env
        self.metrics = ServingMetrics(settings.model_name)
        self.auth = _auth.ApiKeyAuth.from_settings(settings)
        self.manager = ModelManager(config, settings, self.metrics)
        self.writer = (PredictionLogWriter(config.prediction_log_uri, settings.model_name, settings.log_flush_rows,
                                           settings.log_flush_interval_s, self.metrics)
                       if settings.prediction_log else None)
        self.batcher = Batcher(self.metrics, self.writer, settings.batch_window_ms / 1000.0, settings.max_batch_rows)
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------
    def startup(self, loop) -> None:
        if self.harden_env:
            harden_process_env()
        from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

        self.metrics.pickle_allowed.set(1 if MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get() else 0)
        if self.writer is not None:
            self.writer.start()
        self.batcher.start(loop)
        self.manager.start()
        self.started = True
        log.info("serving models:/%s@%s (auth %s, prediction log %s)", self.model_name, self.settings.alias,
                 "on" if self.auth.enabled else "off", self.config.prediction_log_uri if self.writer else "off")

    def shutdown(self) -> None:
        """After the server has finished in-flight requests: stop polling, drain, flush the log."""
        if not self.started:
            return
        self.started = False
        self.manager.stop()
        self.batcher.stop()
        if self.writer is not None:
            self.writer.close()
        self.metrics.mark_dead()
        log.info("serving of %s stopped; prediction log flushed", self.model_name)

    async def _lifespan(self, receive, send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    self.startup(asyncio.get_running_loop())
                except Exception as exc:  # noqa: BLE001
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": f"{type(exc).__name__}: {exc}"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- HTTP -----------------------------------------------------------------------------
    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight.inc()
        route = R_OTHER
        status = 500
        try:
            path = scope["path"]
            method = scope["method"]
            if path == R_INVOCATIONS:
                route = R_INVOCATIONS
                status = await self._predict(scope, receive, send, method, None)
            elif path.startswith(_V1_PREFIX):
                rest = path[len(_V1_PREFIX):]
                if rest.endswith("/predict") and "/" not in rest[:-8] and rest[:-8]:
                    route = R_V1_PREDICT
                    status = await self._predict(scope, receive, send, method, rest[:-8])
                elif rest and "/" not in rest:
                    route = R_V1_MODEL
                    status = await self._model_info(send, method, rest)
                else:
                    status = await self._error(send, ClientError(404, "not_found", "no such route", None))
            elif path == R_HEALTH:
                route = R_HEALTH
                status = await self._simple(send, method, 200, b'{"status":"ok"}')
            elif path == R_READY:
                route = R_READY
                status = await self._ready(send, method)
            elif path == R_METRICS:
                route = R_METRICS
                status = await self._metrics(send, method)
            else:
                status = await self._error(send, ClientError(404, "not_found", "no such route", None))
        except _Disconnected:
            status = 499
        except Exception:  # noqa: BLE001 - last resort: still a JSON answer
            log.exception("unhandled error on %s", route)
            status = 500
            try:
                await self._send(send, 500, error_body("internal_error", "internal server error"))
            except Exception:  # noqa: BLE001
                pass
        finally:
            metrics.in_flight.dec()
            metrics.observe_request(route, status, time.perf_counter() - started)

    @staticmethod
    async def _send(send, status: int, body: bytes, headers=(), content_type: bytes = _JSON) -> None:
        hdrs = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        hdrs.extend(headers)
        await send({"type": "http.response.start", "status": status, "headers": hdrs})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send, err: ClientError) -> int:
        await self._send(send, err.status, err.body(), err.headers)
        return err.status

    async def _method_not_allowed(self, send, allowed: str) -> int:
        return await self._error(send, ClientError(405, "method_not_allowed", f"method not allowed; use {allowed}",
                                                   None, [(b"allow", allowed.encode())]))

    async def _simple(self, send, method, status, body) -> int:
        if method != "GET":
            return await self._method_not_allowed(send, "GET")
        await self._send(send, status, body)
        return status

    async def _ready(self, send, method) -> int:
        if method != "GET":
            return await self._method_not_allowed(send, "GET")
        handle = self.manager.current
        if handle is None:
            body = {"status": "not_ready", "model_name": self.model_name, "model_version": None,
                    "reason": self.manager.last_error or "model not loaded yet"}
            await self._send(send, 503, orjson.dumps(body))
            return 503
        await self._send(send, 200, orjson.dumps({"status": "ready", "model_name": self.model_name,
                                                  "model_version": handle.version}),
                         [(b"x-model-version", handle.version.encode())])
        return 200

    async def _metrics(self, send, method) -> int:
        if method != "GET":
            return await self._method_not_allowed(send, "GET")
        body, ctype = self.metrics.render()
        await self._send(send, 200, body, content_type=ctype.encode())
        return 200

    async def _model_info(self, send, method, name) -> int:
        if method != "GET":
            return await self._method_not_allowed(send, "GET")
        if name != self.model_name:
            return await self._error(send, ClientError(404, "model_not_found", f"model {safe_name(name)!r} is not "
                                                       "served here", "name"))
        handle = self.manager.current
        if handle is None:
            await self._send(send, 503, error_body("model_not_ready", "model not loaded yet"))
            return 503
        body = {"model_name": handle.name, "model_version": handle.version, "alias": self.settings.alias,
                "inputs": [{"name": c.name, "type": c.kind, "required": c.required} for c in handle.columns],
                "classes": handle.classes, "max_rows": self.settings.max_rows,
                "max_body_bytes": self.settings.max_body_bytes}
        await self._send(send, 200, orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS))
        return 200

    async def _read_body(self, receive, content_length) -> bytes:
        limit = self.settings.max_body_bytes
        if content_length is not None:
            if not content_length.isdigit():
                raise ClientError(400, "invalid_content_length", "invalid Content-Length header", "content-length")
            if int(content_length) > limit:
                raise ClientError(413, "body_too_large", f"request body over the {limit}-byte limit", "body",
                                  [(b"connection", b"close")])
        chunks = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _Disconnected()
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise ClientError(413, "body_too_large", f"request body over the {limit}-byte limit", "body",
                                      [(b"connection", b"close")])
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _predict(self, scope, receive, send, method, name) -> int:
        batcher = self.batcher
        batcher.parsing += 1
        submitted = False
        try:
            if method != "POST":
                return await self._method_not_allowed(send, "POST")
            ctype = clen = authz = rid = None
            for k, v in scope["headers"]:
                if k == b"content-type":
                    ctype = v
                elif k == b"content-length":
                    clen = v
                elif k == b"authorization":
                    authz = v
                elif k == b"x-request-id":
                    rid = v
            verdict = self.auth.check(authz)
            if verdict is not _auth.OK:
                self.metrics.auth_failures.labels(verdict).inc()
                if verdict is _auth.REVOKED:
                    return await self._error(send, ClientError(403, "forbidden", "this API key has been revoked",
                                                               "authorization"))
                msg = ("missing bearer token" if verdict is _auth.MISSING else "unknown API key")
                return await self._error(send, ClientError(401, "unauthorized", f"{msg}; send Authorization: "
                                                           "Bearer <key>", "authorization",
                                                           [(b"www-authenticate", b"Bearer")]))
            if name is not None and name != self.model_name:
                return await self._error(send, ClientError(404, "model_not_found", f"model {safe_name(name)!r} is "
                                                           "not served here", "name"))
            if ctype is None or ctype.split(b";", 1)[0].strip().lower() != _JSON:
                return await self._error(send, ClientError(415, "unsupported_media_type",
                                                           "Content-Type must be application/json", "content-type"))
            ts_us = time.time_ns() // 1000
            body = await self._read_body(receive, clen)
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                return await self._error(send, ClientError(
                    400, "invalid_json", "the body is not valid JSON (UTF-8, RFC 8259: NaN and Infinity are not "
                    "accepted; send null for a missing value of an optional column)", "body"))
            handle = self.manager.current
            if handle is None:
                await self._send(send, 503, error_body("model_not_ready", "no model version is loaded yet"),
                                 [(b"retry-after", b"1")])
                return 503
            cols, n = handle.validator.parse(payload)
            request_id = rid.decode() if rid is not None and _REQUEST_ID_RE.match(rid) else uuid.uuid4().hex
            fut = asyncio.get_running_loop().create_future()
            batcher.parsing -= 1
            submitted = True
            batcher.submit(Item(handle, cols, n, fut, request_id, ts_us))
            status, out = await fut
            await self._send(send, status, out, [(b"x-model-version", handle.version.encode()),
                                                 (b"x-request-id", request_id.encode())])
            return status
        except ClientError as err:
            return await self._error(send, err)
        finally:
            if not submitted:
                batcher.parsing -= 1


def create_app(model_name: str, config=None, settings: ServingSettings | None = None, *, harden_env: bool = True,
               **overrides) -> ServingApp:
    """Build the ASGI app for ``models:/<model_name>@champion``.

    ``config`` defaults to ``load_config()``; ``settings`` to ``ServingSettings.resolve(model_name,
    **overrides)`` (arguments, then environment, then defaults). The app does nothing until the
    ASGI server sends lifespan startup: then it sets ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``
    (unless ``harden_env=False``), and starts the predict thread, the prediction-log writer and the
    registry poller that loads the model in the background.
    """
    if config is None:
        from mlplatform_assets.lib.config import load_config

        config = load_config()
    if settings is None:
        settings = ServingSettings.resolve(model_name, **overrides)
    elif overrides:
        raise TypeError("pass either settings or keyword overrides, not both")
    return ServingApp(settings, config, harden_env=harden_env)


def app_from_env() -> ServingApp:
    """uvicorn factory for worker processes: settings and config come from MLPLATFORM_SERVING_SPEC."""
    from mlplatform_assets.lib.config import PlatformConfig

    spec = orjson.loads(os.environ["MLPLATFORM_SERVING_SPEC"])
    return ServingApp(ServingSettings.from_json_dict(spec["settings"]), PlatformConfig(**spec["config"]))
