"""The ASGI application: a thin hand-written router over orjson (no framework per request).

Routes:
  POST /invocations                  MLflow scoring-server compatible
  POST /v1/models/{name}/predict     same bodies; 404 for another model name
  GET  /v1/models/{name}             served version, input columns, classes (needs a key when auth is on)
  GET  /healthz                      liveness (never touches MLflow)
  GET  /readyz                       200 once a model is loaded, else 503
  GET  /metrics                      Prometheus text format

Connection-level limits (header size and time, body rate, connection cap, upgrades) live in
protocol.py; the app enforces the per-request ones: body size, the process-wide budget of body
bytes held, content type and encoding. Bodies of ``parse_thread_bytes`` or more are parsed and
validated in a worker thread so the loop keeps answering probes while large requests arrive.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson

from mlplatform_assets.lib.serving import auth as _auth
from mlplatform_assets.lib.serving.batcher import Batcher, Item
from mlplatform_assets.lib.serving.errors import ClientError, error_body, safe_name
from mlplatform_assets.lib.serving.manager import ModelManager
from mlplatform_assets.lib.serving.metrics import ServingMetrics
from mlplatform_assets.lib.serving.predlog import PredictionLogWriter
from mlplatform_assets.lib.serving.settings import ServingSettings

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
# The routes a connection beyond the connection cap may still reach (kubelet and Prometheus open a
# new connection per probe or scrape, so these must work while the server is full).
PROBE_PATHS = frozenset({R_HEALTH.encode(), R_READY.encode(), R_METRICS.encode()})
_RETRY_CLOSE = ((b"retry-after", b"1"), (b"connection", b"close"))


class _Disconnected(Exception):
    pass


class BodyBudget:
    """Bytes of request bodies held by the requests in progress, across all connections.

    Used from the event-loop thread only. A request reserves its declared Content-Length before
    reading (or each chunk as it arrives when chunked) and releases it when it has been answered.
    """

    def __init__(self, limit: int, gauge):
        self.limit = limit
        self.held = 0
        self._gauge = gauge

    def reserve(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        self._gauge.inc(n)
        return True

    def release(self, n: int) -> None:
        if n:
            self.held -= n
            self._gauge.dec(n)


def _identity_encoding(value: bytes) -> bool:
    return all(token.strip().lower() in (b"identity", b"") for token in value.split(b","))


def _request_headers(headers):
    """(content-type, content-length, authorization, x-request-id, content-encoding) of a request."""
    ctype = clen = authz = rid = cenc = None
    for k, v in headers:
        if k == b"content-type":
            ctype = v
        elif k == b"content-length":
            clen = v
        elif k == b"authorization":
            if authz is not None:  # which one would count? refuse rather than guess
                raise ClientError(400, "duplicate_header", "more than one Authorization header", "authorization")
            authz = v
        elif k == b"x-request-id":
            rid = v
        elif k == b"content-encoding" and not _identity_encoding(v):
            cenc = v
    return ctype, clen, authz, rid, cenc


def _decode(body: bytes, handle):
    """Parse ``body`` and validate it for ``handle`` -> (columns, rows); (None, 0) without a model."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ClientError(
            400, "invalid_json", "the body is not valid JSON (UTF-8, RFC 8259: NaN and Infinity are not "
            "accepted; send null for a missing value of an optional column)", "body") from None
    if handle is None:
        return None, 0
    return handle.validator.parse(payload)


def harden_process_env() -> None:
    """Process-wide settings of a serving process (called at startup, never at import)."""
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"


_serving_process = False


def tune_serving_process() -> None:
    """Mark this process as a serving process: :func:`freeze_heap` then acts after model loads.

    Called by ``serve`` and each worker process at start (never at import; not by ThreadedServer).
    """
    global _serving_process
    _serving_process = True


def freeze_heap() -> None:
    """After a model version is loaded: move every live object out of the collector's reach.

    MLflow, scikit-learn and pandas leave ~250k tracked objects; a full collection walks them all
    in ~200 ms with the GIL held, which stalled every request and probe whenever the garbage of
    large request bodies triggered one (health p99 ~250 ms under a flood of 10 000-row requests;
    ~40-75 ms once frozen). Frozen, a full collection only walks what came later. Costs one
    collection (~0.2 s) per model load. Only in a serving process (a test process keeps its
    collector as it is).
    """
    if _serving_process:
        import gc

        gc.collect()
        gc.freeze()


class ServingApp:
    """ASGI app serving ``models:/NAME@<alias>``. Create with :func:`create_app`."""

    def __init__(self, settings: ServingSettings, config, harden_env: bool = True):
        self.settings = settings
        self.config = config
        self.model_name = settings.model_name
        self.harden_env = harden_env
        self.metrics = ServingMetrics(settings.model_name)
        self.auth = _auth.ApiKeyAuth.from_settings(settings)
        self.manager = ModelManager(config, settings, self.metrics, on_swap=freeze_heap)
        self.writer = (PredictionLogWriter(config.prediction_log_uri, settings.model_name, settings.log_flush_rows,
                                           settings.log_flush_interval_s, self.metrics, settings.log_spool_dir)
                       if settings.prediction_log else None)
        self.batcher = Batcher(self.metrics, self.writer, settings.batch_window_ms / 1000.0, settings.max_batch_rows)
        self.budget = BodyBudget(settings.body_budget_bytes, self.metrics.body_bytes_held)
        self._parse_pool: ThreadPoolExecutor | None = None
        self.started = False

    # -- lifecycle ------------------------------------------------------------------------
    def startup(self, loop) -> None:
        if self.harden_env:
            harden_process_env()
        from mlflow.environment_variables import MLFLOW_ALLOW_PICKLE_DESERIALIZATION

        self.metrics.pickle_allowed.set(1 if MLFLOW_ALLOW_PICKLE_DESERIALIZATION.get() else 0)
        self.metrics.auth_enabled.set(1 if self.auth.enabled else 0)
        if not self.auth.enabled:
            log.warning("AUTHENTICATION IS OFF (--allow-unauthenticated / MLPLATFORM_SERVING_AUTH=off): anyone who "
                        "can reach this port can request predictions and read the model's input schema")
        if self.writer is not None:
            self.writer.start()
        self._parse_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlplatform-parse")
        self.batcher.start(loop)
        self.manager.start()
        self.started = True
        log.info("serving models:/%s@%s (auth %s, prediction log %s%s)", self.model_name, self.settings.alias,
                 "on" if self.auth.enabled else "OFF", self.config.prediction_log_uri if self.writer else "off",
                 f", spooled in {self.settings.log_spool_dir}" if self.writer and self.settings.log_spool_dir else "")

    def shutdown(self) -> None:
        """After the server has finished in-flight requests: stop polling, drain, flush the log."""
        if not self.started:
            return
        self.started = False
        self.manager.stop()
        self._parse_pool.shutdown(wait=True)
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
        elif kind == "websocket":
            # Our server never upgrades (protocol.py answers 400); under another ASGI server,
            # closing before accepting makes it answer the handshake with 403.
            await receive()
            await send({"type": "websocket.close", "code": 1008})

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
                    status = await self._model_info(scope, send, method, rest)
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

    def _authorize(self, authz) -> ClientError | None:
        """None if the Authorization header value is acceptable, else the error to answer."""
        verdict = self.auth.check(authz)
        if verdict is _auth.OK:
            return None
        self.metrics.auth_failures.labels(verdict).inc()
        if verdict is _auth.REVOKED:
            return ClientError(403, "forbidden", "this API key has been revoked", "authorization")
        msg = "missing bearer token" if verdict is _auth.MISSING else "unknown API key"
        return ClientError(401, "unauthorized", f"{msg}; send Authorization: Bearer <key>", "authorization",
                           [(b"www-authenticate", b"Bearer")])

    async def _model_info(self, scope, send, method, name) -> int:
        if method != "GET":
            return await self._method_not_allowed(send, "GET")
        try:
            denied = self._authorize(_request_headers(scope["headers"])[2])
        except ClientError as err:
            denied = err
        if denied is not None:  # the answer reveals the input schema: same keys as predictions
            return await self._error(send, denied)
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

    def _reserve(self, held: list, n: int) -> None:
        """Add ``n`` bytes to this request's share of the body budget (``held[0]``), or answer 503."""
        if not self.budget.reserve(n):
            self.metrics.rejections.labels("body_budget").inc()
            raise ClientError(503, "overloaded", "the server holds as many request bodies as it may; retry shortly",
                              "body", _RETRY_CLOSE)
        held[0] += n

    async def _read_body(self, receive, content_length, held: list) -> bytes:
        """Read the whole body; its bytes are reserved in the body budget (``held``) before they are read."""
        limit = self.settings.max_body_bytes
        if content_length is not None:
            if not content_length.isdigit():
                raise ClientError(400, "invalid_content_length", "invalid Content-Length header", "content-length")
            declared = int(content_length)
            if declared > limit:
                raise ClientError(413, "body_too_large", f"request body over the {limit}-byte limit", "body",
                                  [(b"connection", b"close")])
            self._reserve(held, declared)
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
                if size > held[0]:  # chunked: reserve as it arrives
                    self._reserve(held, size - held[0])
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _predict(self, scope, receive, send, method, name) -> int:
        batcher = self.batcher
        batcher.parsing += 1
        submitted = False
        held = [0]  # body-budget bytes this request holds until it is answered
        try:
            if method != "POST":
                return await self._method_not_allowed(send, "POST")
            ctype, clen, authz, rid, cenc = _request_headers(scope["headers"])
            denied = self._authorize(authz)
            if denied is not None:
                return await self._error(send, denied)
            if name is not None and name != self.model_name:
                return await self._error(send, ClientError(404, "model_not_found", f"model {safe_name(name)!r} is "
                                                           "not served here", "name"))
            if ctype is None or ctype.split(b";", 1)[0].strip().lower() != _JSON:
                return await self._error(send, ClientError(415, "unsupported_media_type",
                                                           "Content-Type must be application/json", "content-type"))
            if cenc is not None:
                return await self._error(send, ClientError(
                    415, "unsupported_content_encoding", "Content-Encoding is not supported; send the JSON body "
                    "uncompressed", "content-encoding", [(b"accept-encoding", b"identity")]))
            ts_us = time.time_ns() // 1000
            body = await self._read_body(receive, clen, held)
            handle = self.manager.current
            if len(body) >= self.settings.parse_thread_bytes:
                # Off the loop: /healthz and /readyz stay fast while large requests are parsed.
                cols, n = await asyncio.get_running_loop().run_in_executor(self._parse_pool, _decode, body, handle)
            else:
                cols, n = _decode(body, handle)
            del body
            if handle is None:
                await self._send(send, 503, error_body("model_not_ready", "no model version is loaded yet"),
                                 [(b"retry-after", b"1")])
                return 503
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
            self.budget.release(held[0])
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
    from mlplatform_assets.lib import config
    from mlplatform_assets.lib.config import PlatformConfig

    spec = orjson.loads(config.read(config.ENV_SERVING_SPEC) or "null")
    if not spec:
        raise config.ConfigError(f"{config.ENV_SERVING_SPEC} is unset: worker processes are started by "
                                 "`mlplatform serve --workers N`, which sets it")
    tune_serving_process()
    return ServingApp(ServingSettings.from_json_dict(spec["settings"]), PlatformConfig(**spec["config"]))
