"""The endpoint prober talks plain HTTP(S) to base URLs only: no other schemes, no redirects, routes joined
under the base path (a real HTTP server on 127.0.0.1 records what was requested)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlplatform_assets.lib.serving.endpoints import (
    check_endpoint_url,
    endpoint_route,
    probe,
    wait_for_version,
)


class _Recorder(BaseHTTPRequestHandler):
    requested: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.requested.append(self.path)
        if self.path.startswith("/moved/"):
            self.send_response(302)
            self.send_header("Location", "/svc/" + self.path.rsplit("/", 1)[-1])
            self.end_headers()
            return
        routes = {"/svc/healthz": {"status": "ok"}, "/svc/readyz": {"model_version": 3}}
        body = json.dumps(routes.get(self.path, {})).encode()
        self.send_response(200 if self.path in routes else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # noqa: ANN002 - keep test output clean
        pass


@pytest.fixture()
def server():
    requested: list[str] = []
    handler = type("Handler", (_Recorder,), {"requested": requested})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", requested
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_routes_are_joined_under_the_base_path(server):
    base, requested = server
    status = probe(f"{base}/svc/")
    assert (status.healthy, status.ready, status.model_version, status.error) == (True, True, "3", None)
    assert requested == ["/svc/healthz", "/svc/readyz"]
    assert endpoint_route("https://h:8443/a/b", "readyz") == "https://h:8443/a/b/readyz"


def test_a_url_with_a_query_is_refused_not_requested(server):
    base, requested = server
    status = probe(f"{base}/?next=/svc")
    assert not status.healthy and status.model_version is None
    assert status.error == ("refused: must not have a query string or fragment "
                            "(the health routes are appended to the path)")
    assert requested == []


def test_file_urls_are_never_read(tmp_path):
    (tmp_path / "healthz").write_text("{}")
    (tmp_path / "readyz").write_text('{"model_version": "9"}')
    status = probe(tmp_path.as_uri())
    assert status.model_version is None and not status.healthy
    assert status.error == "refused: must be an http:// or https:// URL, not file://"


def test_redirects_are_not_followed(server):
    base, requested = server
    status = probe(f"{base}/moved")
    assert not status.healthy and not status.ready and status.model_version is None
    assert requested == ["/moved/healthz", "/moved/readyz"]  # never the redirect target


def test_waiting_on_a_refused_url_returns_at_once():
    started = time.monotonic()
    status = wait_for_version("ftp://models.internal/", "1", timeout_s=30)
    assert status.error.startswith("refused:") and time.monotonic() - started < 1


def test_credentials_in_a_url_are_refused_without_echoing_them():
    with pytest.raises(ValueError) as err:
        check_endpoint_url("https://ops:hunter2@models.internal")
    assert "user:password@" in str(err.value) and "hunter2" not in str(err.value)


@pytest.fixture()
def swapping_server():
    """A server whose readiness and served version the test changes while a prober polls it."""
    state = {"ready": False, "version": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            ready = self.path == "/readyz" and state["ready"]
            code = 200 if self.path == "/healthz" or ready else 503
            body = json.dumps({"model_version": state["version"]} if self.path == "/readyz" else {}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_live_but_not_ready_endpoint_reports_both(swapping_server):
    url, state = swapping_server
    status = probe(url)
    assert (status.healthy, status.ready, status.model_version, status.error) == (True, False, None, None)
    state.update(ready=True, version=4)
    assert probe(url).as_dict() == {"url": url, "healthy": True, "ready": True, "model_version": "4", "error": None}


def test_waiting_returns_once_the_endpoint_hot_swaps_to_the_version(swapping_server):
    url, state = swapping_server
    state.update(ready=True, version=1)
    timer = threading.Timer(0.5, lambda: state.update(version=2))
    timer.start()
    started = time.monotonic()
    status = wait_for_version(url, "2", timeout_s=10, interval_s=0.05)
    assert status.model_version == "2" and 0.4 < time.monotonic() - started < 5


def test_waiting_times_out_with_the_last_status(swapping_server):
    url, state = swapping_server
    state.update(ready=True, version=1)
    started = time.monotonic()
    status = wait_for_version(url, "2", timeout_s=0.5, interval_s=0.05)
    assert status.model_version == "1" and status.healthy and 0.5 <= time.monotonic() - started < 3


def test_an_unreachable_endpoint_is_reported_not_raised():
    from mlplatform_tests.conftest import free_port

    status = probe(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert not status.healthy and not status.ready and status.model_version is None
    assert status.error.startswith("unreachable: ")
