"""The server under hostile clients: raw sockets against a real server on 127.0.0.1 (protocol.py)."""

from __future__ import annotations

import select
import socket
import time

import httpx
import orjson
import pytest

from .conftest import good_record, metric_value, start_server

HEADER_TIMEOUT = 0.5
MAX_HEADER = 4096
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def limited(store, restore_env):
    srv = start_server(store, prediction_log=False, header_timeout_s=HEADER_TIMEOUT, body_timeout_s=1.0,
                       min_body_rate=4096, max_header_bytes=MAX_HEADER, max_body_bytes=MAX_BODY,
                       body_budget_bytes=MAX_BODY + 1024)
    yield srv
    srv.stop()


def _connect(srv, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((srv.host, srv.port), timeout=timeout)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (raises on a reset or a timeout)."""
    out = b""
    while True:
        data = sock.recv(65536)
        if not data:
            return out
        out += data


def _status_and_error(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head[9:12]), orjson.loads(body)["error"], head.lower()


def _request(path: str, body: bytes = b"", *, method: str = "POST", extra: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


def _metrics(srv) -> str:
    return httpx.get(srv.url + "/metrics").text


def test_oversized_header_is_431_and_closed(limited):
    # Sent in pieces and never finished: refused once the limit is passed, not buffered forever.
    with _connect(limited) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: ")
        for _ in range(8):
            s.sendall(b"a" * 1024)
        status, err, head = _status_and_error(_read_until_closed(s))
    assert status == 431 and err["code"] == "header_too_large" and b"connection: close" in head
    # complete but too large, in one write
    with _connect(limited) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (MAX_HEADER + 10) + b"\r\n\r\n")
        assert _status_and_error(_read_until_closed(s))[0] == 431
    # just under the limit is fine
    assert httpx.get(limited.url + "/healthz", headers={"X-Pad": "a" * (MAX_HEADER - 200)}).status_code == 200
    assert metric_value(_metrics(limited), "mlplatform_serving_rejections_total", reason="header_too_large") == 2


def test_slowloris_connections_are_closed_and_probes_keep_working(limited):
    socks = [_connect(limited) for _ in range(40)]
    try:
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        for s in socks:  # one more header line every 0.2 s would keep uvicorn waiting forever
            s.sendall(b"X-A: 1\r\n")
        assert httpx.get(limited.url + "/healthz", timeout=2).status_code == 200
        answers = [_read_until_closed(s) for s in socks]
        elapsed = time.monotonic() - started
    finally:
        for s in socks:
            s.close()
    assert all(_status_and_error(a)[:2][0] == 408 for a in answers)
    assert _status_and_error(answers[0])[1]["code"] == "header_timeout"
    assert elapsed < HEADER_TIMEOUT + 2.0
    assert metric_value(_metrics(limited), "mlplatform_serving_rejections_total", reason="header_timeout") >= 40


def test_idle_connection_that_never_sends_is_closed(limited):
    with _connect(limited) as s:
        started = time.monotonic()
        assert _read_until_closed(s) == b""  # closed without an answer: no request was made
        assert time.monotonic() - started < HEADER_TIMEOUT + 2.0
    # stray CRLFs start no request and do not keep the connection open either
    with _connect(limited) as s:
        started = time.monotonic()
        for _ in range(3):
            s.sendall(b"\r\n")
            time.sleep(0.2)
        assert _read_until_closed(s) == b""
        assert time.monotonic() - started < HEADER_TIMEOUT + 2.5
    assert metric_value(_metrics(limited), "mlplatform_serving_rejections_total", reason="idle_timeout") >= 2


def test_slow_body_is_408(limited):
    body = orjson.dumps({"inputs": [good_record()]})
    with _connect(limited) as s:
        s.sendall(_request("/invocations", body)[:-len(body)] + body[:5])  # then nothing
        status, err, _ = _status_and_error(_read_until_closed(s))
    assert status == 408 and err["code"] == "body_timeout"
    # a body trickling in below the minimum rate is cut too, even though bytes keep coming
    with _connect(limited) as s:
        s.sendall(_request("/invocations", b" " * 8000)[:-8000])
        for _ in range(30):
            s.sendall(b" " * 50)
            if select.select([s], [], [], 0.1)[0]:
                break
        status, err, _ = _status_and_error(_read_until_closed(s))
    assert status == 408 and err["code"] == "body_timeout"
    # the server is fine afterwards
    assert httpx.post(limited.url + "/invocations", json={"inputs": [good_record()]}).status_code == 200


def test_oversize_body_gets_a_readable_413(limited):
    body = b" " * (MAX_BODY * 4)
    with _connect(limited) as s:
        s.sendall(_request("/invocations", body)[:-len(body)])
        s.sendall(body)  # the whole body: the server must not reset the connection under us
        status, err, head = _status_and_error(_read_until_closed(s))
    assert status == 413 and err["code"] == "body_too_large" and b"connection: close" in head


def test_body_budget_is_503_with_retry_after_and_released(limited):
    client = httpx.Client(base_url=limited.url)
    held = _connect(limited)
    try:  # declares 64 000 of the 66 560 budget bytes, sends a little, keeps them (< body timeout)
        held.sendall(_request("/invocations", b" " * 64_000)[:-64_000] + b"{")
        time.sleep(0.05)
        assert metric_value(client.get("/metrics").text, "mlplatform_serving_request_body_bytes_held") == 64_000
        r = client.post("/invocations", content=orjson.dumps({"inputs": [good_record()] * 100}),
                        headers={"content-type": "application/json"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        # chunked bodies are counted as they arrive
        r = client.post("/invocations", content=iter([b" " * 2000, b" " * 2000]),
                        headers={"content-type": "application/json"})
        assert r.status_code == 503
    finally:
        held.close()
        client.close()
    deadline = time.monotonic() + 5
    while metric_value(_metrics(limited), "mlplatform_serving_request_body_bytes_held") != 0:
        assert time.monotonic() < deadline, "the body budget was not released"
        time.sleep(0.05)
    r = httpx.post(limited.url + "/invocations", json={"inputs": [good_record()] * 100})
    assert r.status_code == 200
    assert metric_value(_metrics(limited), "mlplatform_serving_rejections_total", reason="body_budget") == 2


@pytest.mark.parametrize("request_bytes", [
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"POST /invocations HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
], ids=["websocket", "h2c", "connect"])
def test_upgrades_are_400_not_500(limited, request_bytes):
    with _connect(limited) as s:
        s.sendall(request_bytes)
        status, err, _ = _status_and_error(_read_until_closed(s))
    assert status == 400 and err["code"] == "upgrade_not_supported"


def test_websocket_scope_is_refused_by_the_app(store, restore_env):
    # Under another ASGI server the app itself may see a websocket scope: it closes the handshake.
    import asyncio

    from mlplatform_assets.lib.serving import create_app

    app = create_app("serving-demo", store, allow_unauthenticated=True, prediction_log=False)
    sent = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(msg):
        sent.append(msg)

    asyncio.run(app({"type": "websocket", "path": "/healthz", "headers": []}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate", "identity, gzip"])
def test_content_encoding_is_415(limited, encoding):
    r = httpx.post(limited.url + "/invocations", content=orjson.dumps({"inputs": [good_record()]}),
                   headers={"content-type": "application/json", "content-encoding": encoding})
    assert r.status_code == 415
    assert r.json()["error"] == {"code": "unsupported_content_encoding", "field": "content-encoding",
                                 "message": "Content-Encoding is not supported; send the JSON body uncompressed"}
    ok = httpx.post(limited.url + "/invocations", content=orjson.dumps({"inputs": [good_record()]}),
                    headers={"content-type": "application/json", "content-encoding": "identity"})
    assert ok.status_code == 200


def test_connection_cap_keeps_probes_working(store, restore_env):
    cap = 6
    srv = start_server(store, prediction_log=False, max_connections=cap, body_timeout_s=30)
    overflow = srv.app.settings.overflow_connections
    held = []
    try:
        for _ in range(cap):  # every admitted connection is busy: a request whose body is still arriving
            s = _connect(srv)
            s.sendall(_request("/invocations", b" " * 1000)[:-1000] + b"{")
            held.append(s)
        time.sleep(0.2)
        # kubelet opens a new connection per probe: over the cap probes are still answered, then closed
        for path in ("/healthz", "/readyz", "/metrics"):
            with _connect(srv) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                answer = _read_until_closed(s)
            assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" in answer.lower(), answer[:200]
        # anything else over the cap: a fast 503, then close
        with _connect(srv) as s:
            started = time.monotonic()
            s.sendall(_request("/invocations", orjson.dumps({"inputs": [good_record()]})))
            status, err, head = _status_and_error(_read_until_closed(s))
        assert status == 503 and err["code"] == "overloaded" and b"retry-after: 1" in head
        assert time.monotonic() - started < 1.0
        # beyond cap + overflow open sockets: 503 at once, before any request
        for _ in range(overflow):
            held.append(_connect(srv))
        time.sleep(0.2)
        with _connect(srv) as s:
            status, err, _ = _status_and_error(_read_until_closed(s))
        assert status == 503
    finally:
        for s in held:
            s.close()
    try:
        # the held connections are gone: the server serves everything again
        deadline = time.monotonic() + 5
        while True:
            r = httpx.post(srv.url + "/invocations", json={"inputs": [good_record()]})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code == 200
        text = _metrics(srv)
        assert metric_value(text, "mlplatform_serving_rejections_total", reason="probe_only") == 1
        assert metric_value(text, "mlplatform_serving_rejections_total", reason="over_capacity") >= 1
    finally:
        srv.stop()


def test_waiting_connections_make_room_at_the_cap(store, restore_env):
    """At the cap a new client takes the place of the connection that has waited longest."""
    cap = 4
    srv = start_server(store, prediction_log=False, max_connections=cap, keep_alive_timeout_s=30,
                       header_timeout_s=30)
    try:
        slowloris = _connect(srv)
        slowloris.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # oldest: mid-headers
        idle = []
        for _ in range(cap - 1):  # then keep-alive clients idle between requests
            s = _connect(srv)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            idle.append(s)
        time.sleep(0.7)  # older than the eviction grace (a connection just accepted is never the victim)
        clients = [httpx.Client(base_url=srv.url) for _ in range(2)]
        for c in clients:  # two new clients that stay connected: full service, not probe-only
            assert c.post("/invocations", json={"inputs": [good_record()]}).status_code == 200
        status, err, _ = _status_and_error(_read_until_closed(slowloris))
        assert status == 503 and err["code"] == "overloaded"
        assert _read_until_closed(idle[0]) == b""  # the longest-idle keep-alive connection was closed
        idle[1].sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # the others still work
        assert idle[1].recv(4096).startswith(b"HTTP/1.1 200")
        assert metric_value(_metrics(srv), "mlplatform_serving_rejections_total", reason="evicted") >= 2
        for s in [slowloris, *idle]:
            s.close()
        for c in clients:
            c.close()
    finally:
        srv.stop()
