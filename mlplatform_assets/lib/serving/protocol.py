"""HTTP/1.1 connections with limits: uvicorn's httptools protocol plus the guards it lacks.

uvicorn 0.54 with httptools has no limit on header size or header time, never closes a
connection that sends nothing, has no minimum body rate, and its only connection limit
(``limit_concurrency``) answers 503 to every request, health probes included. This subclass adds:

* header size: request line + headers over ``max_header_bytes`` -> 431, then close;
* header deadline: a new connection that sends nothing within ``header_timeout_s`` is closed; a
  request whose headers are not complete ``header_timeout_s`` after its first byte gets 408;
* body rate: from ``body_timeout_s`` after the headers on, the body must have arrived at
  ``min_body_rate`` bytes/s on average, else 408 (a stalled body is cut after ``body_timeout_s``);
* connection cap: at ``max_connections`` a new connection takes the place of the oldest one that
  is only waiting (silent since it opened, mid-headers, or idle between requests; the one
  mid-headers gets 503), as nginx reuses idle keep-alive connections, so slowloris and idle
  floods cannot lock new clients out. If every connection is busy with a request, the new one
  may only reach the probe routes (kubelet opens a new connection for every probe, Prometheus
  for every scrape) and is closed after that answer; any other request on it gets 503. Beyond
  ``max_connections + overflow_connections`` open sockets a connection gets 503 at once;
* upgrades (WebSocket, h2c, CONNECT) -> 400: llhttp treats every byte after such a request's
  headers as the new protocol's, so it cannot be served as plain HTTP;
* lingering close: when the server closes a connection whose request it has not read to the end
  (413, 503, 431, 408), it sends the answer, shuts down its write side and discards input for up
  to LINGER_S, so the client reads the answer instead of a connection reset.

A complete request arriving in one read costs a few attribute checks more than uvicorn's own.
"""

from __future__ import annotations

from collections import OrderedDict

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlplatform_assets.lib.serving.app import PROBE_PATHS, ServingApp
from mlplatform_assets.lib.serving.errors import error_body

LINGER_S = 2.0
LINGER_MAX_BYTES = 64 * 1024 * 1024
# A connection beyond the cap is only good for a probe, and probes send their request at once.
PROBE_ONLY_HEADER_TIMEOUT_S = 2.0
# Only a connection that has waited this long may be evicted: in a burst of new connections the
# ones accepted a moment ago (a probe among them, its request not read yet) are not the victims.
EVICT_MIN_WAIT_S = 0.5

# Connection phases. IDLE: no request being received (new, between requests, or the whole
# request is in and being answered); HEADERS/BODY: receiving that part; CLOSING: answered and
# closing, input is discarded.
_IDLE, _HEADERS, _BODY, _CLOSING = range(4)
_T_NONE, _T_IDLE, _T_HEADERS, _T_BODY, _T_LINGER = range(5)


class _Abort(Exception):
    """Raised from a parser callback to stop parsing a request that has been answered already."""


class _Admission:
    """Per server: how many connections are admitted in full, and which may be evicted (longest waiting first)."""

    __slots__ = ("admitted", "evictable")

    def __init__(self):
        self.admitted = 0
        self.evictable: OrderedDict = OrderedDict()  # protocol -> loop time it became idle, oldest first

    @classmethod
    def of(cls, server_state) -> "_Admission":
        admission = getattr(server_state, "mlplatform_admission", None)
        if admission is None:
            admission = server_state.mlplatform_admission = cls()
        return admission


def _error_response(status: int, code: str, message: str, retry_after: bool = False) -> bytes:
    """A complete JSON error answer that closes the connection."""
    body = error_body(code, message)
    return b"".join((STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                     b"connection: close\r\n", b"retry-after: 1\r\n" if retry_after else b"", b"\r\n", body))


def serving_app_of(app) -> ServingApp:
    """The ServingApp inside uvicorn's middleware wrappers (each keeps the wrapped app as ``.app``)."""
    while not isinstance(app, ServingApp):
        app = getattr(app, "app", None)
        if app is None:
            raise TypeError("GuardedHttpToolsProtocol needs a ServingApp")
    return app


class _GuardedTransport:
    """The transport uvicorn's request cycle writes to: ``close()`` goes through the protocol."""

    __slots__ = ("_raw", "_protocol")

    def __init__(self, raw, protocol: "GuardedHttpToolsProtocol"):
        self._raw = raw
        self._protocol = protocol

    def write(self, data) -> None:
        self._raw.write(data)

    def close(self) -> None:
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._protocol._phase == _CLOSING or self._raw.is_closing()

    def __getattr__(self, name):
        return getattr(self._raw, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        serving = serving_app_of(self.app)
        self.limits = serving.settings
        self.metrics = serving.metrics
        self._admission = _Admission.of(server_state)
        self._admitted = False
        self._raw = None
        self._phase = _IDLE
        self._timer = None
        self._timer_kind = _T_NONE
        self._header_bytes = 0  # bytes of the current request's earlier reads while its headers were incomplete
        self._chunk_len = 0
        self._body_bytes = 0
        self._body_started = 0.0
        self._probe_only = False
        self._discarded = 0

    # -- connection -----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._raw = transport
        self.transport = _GuardedTransport(transport, self)
        self.metrics.open_connections.inc()
        limits = self.limits
        admission = self._admission
        if len(self.connections) > limits.max_connections + limits.overflow_connections:  # open sockets
            self._reject(503, "overloaded", "the server has too many open connections; retry shortly",
                         "over_capacity", retry_after=True)
            return
        if admission.admitted >= limits.max_connections and not self._evict_oldest_idle():
            self._probe_only = True
            self._arm(_T_IDLE, PROBE_ONLY_HEADER_TIMEOUT_S)
            return
        admission.admitted += 1
        self._admitted = True
        admission.evictable[self] = self.loop.time()
        self._arm(_T_IDLE, limits.header_timeout_s)

    def connection_lost(self, exc) -> None:
        self._closing()
        self.metrics.open_connections.dec()
        super().connection_lost(exc)

    def close_connection(self) -> None:
        """Close now, or linger if the client may still be sending the request we answered."""
        if self._phase in (_HEADERS, _BODY):
            self._linger()
        else:
            self._closing()
            self._raw.close()

    def shutdown(self) -> None:
        cycle = self.cycle
        if self._phase == _CLOSING or (self._phase != _BODY and (cycle is None or cycle.response_complete)):
            # Nothing is being answered: a half-sent request (slowloris) must not delay the drain.
            self._closing()
            self._raw.close()
        else:
            super().shutdown()

    def _closing(self) -> None:
        """Enter CLOSING: no timer, no longer admitted or evictable."""
        self._phase = _CLOSING
        self._cancel_timer()
        if self._admitted:
            self._admitted = False
            self._admission.admitted -= 1
            self._admission.evictable.pop(self, None)

    def _evict_oldest_idle(self) -> bool:
        """Close the connection that has waited longest without a request in progress."""
        evictable = self._admission.evictable
        if not evictable:
            return False
        victim, since = next(iter(evictable.items()))
        if self.loop.time() - since < EVICT_MIN_WAIT_S:
            return False
        del evictable[victim]
        self.metrics.rejections.labels("evicted").inc()
        if victim._phase == _HEADERS:  # a request had begun: say why (no lingering: free the slot now)
            victim._raw.write(_error_response(503, "overloaded", "the server is at its connection limit; retry "
                                              "shortly", retry_after=True))
        victim._closing()
        victim._raw.close()
        return True

    # -- input ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._phase == _CLOSING:
            self._discarded += len(data)
            if self._discarded > LINGER_MAX_BYTES:
                self._raw.close()
            return
        self._unset_keepalive_if_required()
        self._chunk_len = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._phase != _CLOSING:  # normally answered from on_headers_complete already
                self._reject_upgrade()
            return
        except httptools.HttpParserError:
            if self._phase != _CLOSING:
                self.logger.warning("Invalid HTTP request received.")
                self._reject(400, "invalid_http", "the request is not valid HTTP/1.1", None)
            return
        phase = self._phase
        if phase == _HEADERS:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._reject_header_too_large()
            elif self._timer_kind != _T_HEADERS:
                self._arm(_T_HEADERS, PROBE_ONLY_HEADER_TIMEOUT_S if self._probe_only else self.limits.header_timeout_s)
        elif phase == _BODY:
            if self._timer_kind != _T_BODY:
                self._body_started = self.loop.time()
                self._arm(_T_BODY, self.limits.body_timeout_s)
        elif self._answering():
            if self._timer is not None:  # the whole request is in: no deadline while we answer it
                self._cancel_timer()
        elif self._timer_kind != _T_IDLE:
            # Bytes that start no request (stray CRLFs) must not keep a connection open forever.
            self._arm(_T_IDLE, self.limits.keep_alive_timeout_s)

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEADERS
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        limits = self.limits
        if self._header_bytes + self._chunk_len > limits.max_header_bytes and (
                len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers) > limits.max_header_bytes):
            self._reject_header_too_large()
            raise _Abort()
        if self.parser.should_upgrade():
            self._reject_upgrade()
            raise _Abort()
        if self._probe_only and httptools.parse_url(self.url).path not in PROBE_PATHS:
            self._reject(503, "overloaded", "the server has too many open connections; only /healthz, /readyz and "
                         "/metrics are answered on this one; retry shortly", "probe_only", retry_after=True)
            raise _Abort()
        if self._admitted:
            self._admission.evictable.pop(self, None)  # a request is in progress
        super().on_headers_complete()
        if self._probe_only:
            self.cycle.keep_alive = False
        self._phase = _BODY
        self._body_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._admitted and self._phase != _CLOSING and not self._answering():
            self._admission.evictable[self] = self.loop.time()  # idle between requests: the newest candidate

    # -- limits ---------------------------------------------------------------------------
    def _reject_header_too_large(self) -> None:
        self._reject(431, "header_too_large", f"the request line and headers exceed "
                     f"{self.limits.max_header_bytes} bytes", "header_too_large")

    def _reject_upgrade(self) -> None:
        self._reject(400, "upgrade_not_supported", "protocol upgrades (WebSocket, h2c) and CONNECT are not "
                     "supported; send plain HTTP/1.1 requests", "upgrade")

    def _on_timer(self) -> None:
        kind, self._timer, self._timer_kind = self._timer_kind, None, _T_NONE
        phase = self._phase
        if kind == _T_LINGER:
            self._raw.close()
        elif kind == _T_IDLE and phase == _IDLE and not self._answering():
            self.metrics.rejections.labels("idle_timeout").inc()
            self.close_connection()
        elif kind == _T_HEADERS and phase == _HEADERS:
            self._reject(408, "header_timeout", f"the request headers did not arrive within "
                         f"{self.limits.header_timeout_s:g}s", "header_timeout")
        elif kind == _T_BODY and phase == _BODY:
            self._check_body_rate()

    def _check_body_rate(self) -> None:
        limits = self.limits
        now = self.loop.time()
        if self.flow.read_paused:
            # We stopped reading (the app has not consumed what arrived): not the client's fault.
            self._body_started, self._body_bytes = now, 0
            self._arm(_T_BODY, limits.body_timeout_s)
            return
        elapsed = now - self._body_started
        if self._body_bytes >= limits.min_body_rate * elapsed:
            # Check again when the average would fall below the minimum if nothing more arrived.
            self._arm(_T_BODY, max(1.0, self._body_bytes / limits.min_body_rate - elapsed))
            return
        answered = self.cycle is not None and self.cycle.response_started
        self._reject(408, "body_timeout", f"the request body arrived slower than {limits.min_body_rate} bytes/s",
                     "body_timeout", write=not answered)

    def _reject(self, status: int, code: str, message: str, reason: str | None, *, retry_after: bool = False,
                write: bool = True) -> None:
        """Answer with a JSON error (unless ``write`` is False) and close, lingering."""
        if reason:
            self.metrics.rejections.labels(reason).inc()
        cycle = self.cycle
        if self._phase == _BODY and cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app now sees http.disconnect and cannot answer too
            cycle.message_event.set()
        if write:
            self._raw.write(_error_response(status, code, message, retry_after))
        self._linger()

    def _linger(self) -> None:
        self._closing()
        self._discarded = 0
        raw = self._raw
        if raw.is_closing():
            return
        if raw.can_write_eof():
            raw.write_eof()  # FIN after the answer; the client's EOF then closes us (eof_received)
        self.flow.resume_reading()
        self._arm(_T_LINGER, LINGER_S)

    def _arm(self, kind: int, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(delay, self._on_timer)
        self._timer_kind = kind

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_kind = _T_NONE
