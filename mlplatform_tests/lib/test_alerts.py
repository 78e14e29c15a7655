"""Alerts: the JSONL log, webhook delivery to a real local HTTP server, and failures that never raise."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlplatform_assets.lib.alerts import ENV_WEBHOOK_TIMEOUT, ENV_WEBHOOK_URL, Alert, read_alerts, redact_url, send_alert
from mlplatform_tests.conftest import free_port


class _Server:
    """A tiny webhook receiver on 127.0.0.1 that records every POST (path and JSON body)."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        self.received: list[tuple[str, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if delay:
                    time.sleep(delay)
                outer.received.append((self.path, json.loads(body)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_log_append_and_filtered_read(tmp_path):
    log = tmp_path / "audit" / "alerts.jsonl"
    send_alert(Alert(kind="drift", model="a", message="drift share 0.6 >= 0.5", asset="a/drift_report",
                     partition="2026-06-11", details={"drift_share": 0.6}), log, webhook_url="")
    send_alert(Alert(kind="run_failure", model="b", message="step failed"), log, webhook_url="")
    send_alert(Alert(kind="drift", model="b", message="drift"), log, webhook_url="")
    everything = read_alerts(log)
    assert [(a["kind"], a["model"]) for a in everything] == [("drift", "a"), ("run_failure", "b"), ("drift", "b")]
    first = everything[0]
    assert first["partition"] == "2026-06-11" and first["asset"] == "a/drift_report"
    assert first["details"] == {"drift_share": 0.6} and first["delivery"] == "log only" and first["time"]
    assert [a["kind"] for a in read_alerts(log, model="b")] == ["run_failure", "drift"]
    assert [a["model"] for a in read_alerts(log, kind="drift")] == ["a", "b"]
    assert read_alerts(log, model="b", kind="drift")[0]["message"] == "drift"
    assert read_alerts(tmp_path / "missing.jsonl") == []


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown alert kind"):
        Alert(kind="oops", model="a", message="x")


def test_webhook_from_env_receives_the_json_and_secret_stays_out_of_logs(tmp_path, monkeypatch, caplog):
    with _Server() as server:
        url = f"http://127.0.0.1:{server.port}/hooks/T000/SECRET-PATH?token=SECRET-QUERY"
        monkeypatch.setenv(ENV_WEBHOOK_URL, url)
        log = tmp_path / "alerts.jsonl"
        with caplog.at_level(logging.DEBUG):
            record = send_alert(Alert(kind="rollback", model="m", message="rolled back v3 -> v2",
                                      details={"from_version": "3", "to_version": "2"}), log)
    assert record["delivery"] == "delivered (HTTP 200)"
    assert len(server.received) == 1
    path, body = server.received[0]
    assert path == "/hooks/T000/SECRET-PATH?token=SECRET-QUERY"
    assert body["kind"] == "rollback" and body["model"] == "m" and body["details"]["to_version"] == "2"
    text = log.read_text()
    assert read_alerts(log)[0]["delivery"] == "delivered (HTTP 200)"
    for secret in ("SECRET-PATH", "SECRET-QUERY", "T000"):
        assert secret not in text and secret not in caplog.text


def test_unreachable_or_failing_webhook_never_raises_and_is_recorded(tmp_path, caplog, monkeypatch):
    log = tmp_path / "alerts.jsonl"
    dead = f"http://127.0.0.1:{free_port()}/hook?key=SECRET"
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        record = send_alert(Alert(kind="quality_floor", model="m", message="below floor"), log, webhook_url=dead)
    assert time.monotonic() - started < 5
    assert record["delivery"].startswith("failed:")
    assert read_alerts(log, kind="quality_floor")[0]["delivery"].startswith("failed:")
    assert "not delivered" in caplog.text and "SECRET" not in caplog.text and "SECRET" not in log.read_text()

    with _Server(status=500) as server:
        record = send_alert(Alert(kind="drift", model="m", message="x"), log,
                            webhook_url=f"http://127.0.0.1:{server.port}/h")
    assert record["delivery"] == "failed: HTTP 500" and len(server.received) == 1

    # A receiver slower than the timeout: the alert is still logged, promptly.
    monkeypatch.setenv(ENV_WEBHOOK_TIMEOUT, "0.5")
    with _Server(delay=2.0) as server:
        started = time.monotonic()
        record = send_alert(Alert(kind="drift", model="m", message="slow"), log,
                            webhook_url=f"http://127.0.0.1:{server.port}/h?token=SECRET")
        elapsed = time.monotonic() - started
    assert record["delivery"] == "failed: TimeoutError", record
    assert elapsed < 1.5
    assert [a["message"] for a in read_alerts(log)][-1] == "slow"


def test_redact_url_keeps_only_scheme_host_port():
    assert redact_url("https://user:pw@hooks.example.com:8443/services/A/B?x=1#f") == "https://hooks.example.com:8443/..."
    assert redact_url("http://127.0.0.1/hook") == "http://127.0.0.1/..."
