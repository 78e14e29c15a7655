"""Alerts: the log, the sink registry and configuration, retries, and the webhook and Slack payloads
against real HTTP receivers on 127.0.0.1. Alertmanager: mlplatform_tests/integration/test_alertmanager.py."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mlplatform_assets.lib.monitoring.alerting.http import RetryPolicy
from mlplatform_assets.lib.monitoring.alerting.sink import (
    ENV_ALERT_BUDGET,
    ENV_ALERT_MAX_ATTEMPTS,
    ENV_ALERT_TIMEOUT,
    sink_types,
)
from mlplatform_assets.lib.monitoring.alerting.sinks.slack import SlackSink
from mlplatform_assets.lib.monitoring.alerting.sinks.webhook import WebhookSink
from mlplatform_assets.lib.monitoring.alerts import (
    Alert,
    AlertConfigError,
    load_alert_sinks,
    read_alerts,
    redact_url,
    send_alert,
)
from mlplatform_tests.conftest import free_port

FAST = RetryPolicy(timeout_s=1.0, max_attempts=3, backoff_s=0.05, budget_s=3.0)
WEBHOOK_ENV = "MLPLATFORM_ALERT_WEBHOOK_URL"
SLACK_ENV = "MLPLATFORM_ALERT_SLACK_WEBHOOK_URL"
ALERTMANAGER_ENV = "MLPLATFORM_ALERTMANAGER_URL"


class Receiver:
    """A tiny HTTP receiver on 127.0.0.1 recording every POST (path, JSON body). It answers the
    statuses in ``statuses`` in turn, then ``statuses[-1]`` forever; ``delay`` seconds before each answer."""

    def __init__(self, *statuses: int, delay: float = 0.0):
        self.received: list[tuple[str, object]] = []
        statuses = statuses or (200,)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append((self.path, json.loads(body)))
                if delay:
                    time.sleep(delay)
                self.send_response(statuses[min(len(outer.received), len(statuses)) - 1])
                self.end_headers()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
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
                     partition="2026-06-11", details={"drift_share": 0.6}), log, sinks=[])
    send_alert(Alert(kind="run_failure", model="b", message="step failed"), log, sinks=[])
    send_alert(Alert(kind="drift", model="b", message="drift"), log, sinks=[])
    everything = read_alerts(log)
    assert [(a["kind"], a["model"]) for a in everything] == [("drift", "a"), ("run_failure", "b"), ("drift", "b")]
    first = everything[0]
    assert first["partition"] == "2026-06-11" and first["asset"] == "a/drift_report"
    assert first["details"] == {"drift_share": 0.6} and first["delivery"] == {} and first["time"]
    assert [a["kind"] for a in read_alerts(log, model="b")] == ["run_failure", "drift"]
    assert [a["model"] for a in read_alerts(log, kind="drift")] == ["a", "b"]
    assert read_alerts(log, model="b", kind="drift")[0]["message"] == "drift"
    assert read_alerts(tmp_path / "missing.jsonl") == []


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown alert kind"):
        Alert(kind="oops", model="a", message="x")


# --- registry and configuration -------------------------------------------------------------

def test_registry_has_every_sink_module_once_each_with_its_own_variable():
    types = sink_types()
    assert set(types) == {"webhook", "slack", "alertmanager"}
    assert {t.url_variable for t in types.values()} == {WEBHOOK_ENV, SLACK_ENV, ALERTMANAGER_ENV}


def test_sinks_enabled_by_their_variables_in_any_combination():
    assert load_alert_sinks({}) == []
    only_slack = load_alert_sinks({SLACK_ENV: "https://hooks.slack.com/services/T/B/X"})
    assert [s.name for s in only_slack] == ["slack"]
    every = load_alert_sinks({WEBHOOK_ENV: "https://example.com/h", SLACK_ENV: "https://hooks.slack.com/s",
                              ALERTMANAGER_ENV: "http://alertmanager:9093", ENV_ALERT_MAX_ATTEMPTS: "5",
                              ENV_ALERT_TIMEOUT: "0.25", ENV_ALERT_BUDGET: "7"})
    assert sorted(s.name for s in every) == ["alertmanager", "slack", "webhook"]
    assert {(s.policy.max_attempts, s.policy.timeout_s, s.policy.budget_s) for s in every} == {(5, 0.25, 7.0)}
    assert [s.endpoint() for s in every if s.name == "alertmanager"] == ["http://alertmanager:9093/api/v2/alerts"]


@pytest.mark.parametrize(("variable", "value", "expected"), [
    (WEBHOOK_ENV, "hooks.example.com/services/SECRET", f"{WEBHOOK_ENV} must be an absolute http"),
    (SLACK_ENV, "ftp://hooks.example.com/SECRET", f"{SLACK_ENV} must be an absolute http"),
    (ALERTMANAGER_ENV, "http://alertmanager:99999/SECRET", f"{ALERTMANAGER_ENV} is not a valid URL"),
    (WEBHOOK_ENV, "https://hooks.example.com/SECRET path", f"{WEBHOOK_ENV} must be an absolute http"),
    (ENV_ALERT_MAX_ATTEMPTS, "0", f"{ENV_ALERT_MAX_ATTEMPTS}='0' is invalid: expected an integer >= 1"),
    (ENV_ALERT_TIMEOUT, "soon", f"{ENV_ALERT_TIMEOUT}='soon' is invalid: expected a number >= 0.01"),
    ("MLPLATFORM_ALERTMANAGER_RESOLVE_AFTER_S", "nan", "MLPLATFORM_ALERTMANAGER_RESOLVE_AFTER_S='nan' is invalid: expected a number >= 1"),
])
def test_malformed_settings_fail_loudly_naming_the_variable_not_the_secret(variable, value, expected):
    env = {ALERTMANAGER_ENV: "http://127.0.0.1:9093", variable: value}
    with pytest.raises(AlertConfigError) as info:
        load_alert_sinks(env)
    assert str(info.value).startswith(expected)
    assert "SECRET" not in str(info.value)


def test_misconfigured_sink_at_send_time_is_recorded_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv(WEBHOOK_ENV, "not-a-url/SECRET")
    record = send_alert(Alert(kind="rollback", model="m", message="x"), tmp_path / "a.jsonl")
    assert record["delivery"]["config"]["status"] == "failed"
    assert WEBHOOK_ENV in record["delivery"]["config"]["error"]
    assert "SECRET" not in (tmp_path / "a.jsonl").read_text()
    assert read_alerts(tmp_path / "a.jsonl")[0]["message"] == "x"


# --- delivery: webhook payload, secrets, retries, bounds ------------------------------------

def test_webhook_from_env_receives_the_json_and_secret_stays_out_of_logs(tmp_path, monkeypatch, caplog):
    with Receiver() as server:
        monkeypatch.setenv(WEBHOOK_ENV, f"{server.base}/hooks/T000/SECRET-PATH?token=SECRET-QUERY")
        log = tmp_path / "alerts.jsonl"
        with caplog.at_level(logging.DEBUG):
            record = send_alert(Alert(kind="rollback", model="m", message="rolled back v3 -> v2",
                                      details={"from_version": "3", "to_version": "2"}), log)
    assert record["delivery"]["webhook"] == {"status": "delivered", "attempts": 1, "http_status": 200,
                                             "elapsed_s": record["delivery"]["webhook"]["elapsed_s"]}
    path, body = server.received[0]
    assert len(server.received) == 1 and path == "/hooks/T000/SECRET-PATH?token=SECRET-QUERY"
    assert body["kind"] == "rollback" and body["model"] == "m" and body["details"]["to_version"] == "2"
    assert body["severity"] == "critical"
    text = log.read_text()
    assert read_alerts(log)[0]["delivery"]["webhook"]["status"] == "delivered"
    for secret in ("SECRET-PATH", "SECRET-QUERY", "T000"):
        assert secret not in text and secret not in caplog.text


def test_retries_with_backoff_until_delivered(tmp_path):
    with Receiver(503, 503, 200) as server:
        started = time.monotonic()
        record = send_alert(Alert(kind="drift", model="m", message="x"), tmp_path / "a.jsonl",
                            sinks=[WebhookSink(f"{server.base}/h", FAST)])
        elapsed = time.monotonic() - started
    outcome = record["delivery"]["webhook"]
    assert (outcome["status"], outcome["attempts"], outcome["http_status"]) == ("delivered", 3, 200)
    assert len(server.received) == 3
    assert elapsed >= 0.05 + 0.1  # two pauses, the second twice the first
    assert read_alerts(tmp_path / "a.jsonl")[0]["delivery"]["webhook"]["attempts"] == 3


def test_refused_connection_is_retried_then_given_up_and_recorded(tmp_path, caplog):
    dead = f"http://127.0.0.1:{free_port()}/hook?key=SECRET"
    with caplog.at_level(logging.WARNING):
        record = send_alert(Alert(kind="quality_floor", model="m", message="below floor"), tmp_path / "a.jsonl",
                            sinks=[WebhookSink(dead, FAST)])
    outcome = record["delivery"]["webhook"]
    assert (outcome["status"], outcome["attempts"], outcome["error"]) == ("failed", 3, "ConnectionRefusedError")
    assert "http_status" not in outcome
    assert read_alerts(tmp_path / "a.jsonl", kind="quality_floor")[0]["delivery"]["webhook"]["status"] == "failed"
    assert "not delivered after 3 attempt(s)" in caplog.text
    assert "SECRET" not in caplog.text and "SECRET" not in (tmp_path / "a.jsonl").read_text()


def test_client_error_is_not_retried(tmp_path):
    with Receiver(400) as server:
        record = send_alert(Alert(kind="drift", model="m", message="x"), tmp_path / "a.jsonl",
                            sinks=[WebhookSink(f"{server.base}/h", FAST)])
    assert record["delivery"]["webhook"]["error"] == "HTTP 400"
    assert record["delivery"]["webhook"]["attempts"] == 1 and len(server.received) == 1


def test_a_hanging_receiver_is_given_up_within_the_budget(tmp_path):
    # Each attempt times out (0.3 s); the budget (0.8 s) stops the retries before max_attempts (10).
    policy = RetryPolicy(timeout_s=0.3, max_attempts=10, backoff_s=0.05, budget_s=0.8)
    with Receiver(200, delay=2.0) as server:
        started = time.monotonic()
        record = send_alert(Alert(kind="drift", model="m", message="slow"), tmp_path / "a.jsonl",
                            sinks=[WebhookSink(f"{server.base}/h?token=SECRET", policy)])
        elapsed = time.monotonic() - started
    outcome = record["delivery"]["webhook"]
    assert (outcome["status"], outcome["error"]) == ("failed", "TimeoutError")
    assert 2 <= outcome["attempts"] < 10 and elapsed < 0.8 + 0.3 + 1.0  # without the budget: 10 x 0.3 s
    assert read_alerts(tmp_path / "a.jsonl")[-1]["message"] == "slow"


def test_sinks_are_independent_one_failing_does_not_stop_the_other(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/h"
    with Receiver() as server:
        record = send_alert(Alert(kind="run_failure", model=None, message="job failed"), tmp_path / "a.jsonl",
                            sinks=[WebhookSink(dead, FAST), SlackSink(f"{server.base}/slack", FAST)])
    assert record["delivery"]["webhook"]["status"] == "failed"
    assert record["delivery"]["slack"]["status"] == "delivered" and len(server.received) == 1


def test_slack_payload_is_a_readable_message(tmp_path):
    alert = Alert(kind="drift", model="churn", message="drift share 0.75 >= 0.5 <on 3 of 4 columns>",
                  asset="churn/drift_report", partition="2026-06-11", details={"drift_share": 0.75},
                  link="http://dagster.example/runs/abc")
    with Receiver() as server:
        record = send_alert(alert, tmp_path / "a.jsonl", sinks=[SlackSink(f"{server.base}/services/T/B/X", FAST)])
    assert record["delivery"]["slack"]["status"] == "delivered"
    path, body = server.received[0]
    assert path == "/services/T/B/X"
    assert body["text"] == ("[warning] mlplatform drift alert for churn on 2026-06-11: "
                            "drift share 0.75 >= 0.5 <on 3 of 4 columns>")
    header, fields, message, link = body["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "text": "mlplatform: drift (churn)"}}
    assert [f["text"] for f in fields["fields"]] == ["*Kind*\ndrift", "*Severity*\nwarning", "*Model*\nchurn",
                                                     "*Day*\n2026-06-11", "*Asset*\nchurn/drift_report"]
    assert message["text"] == {"type": "mrkdwn", "text": "drift share 0.75 &gt;= 0.5 &lt;on 3 of 4 columns&gt;"}
    assert link["text"]["text"] == "<http://dagster.example/runs/abc|Open>"


def test_slack_payload_without_model_partition_or_link():
    body = SlackSink("https://hooks.example.com/x", FAST).payload(
        Alert(kind="run_failure", model=None, message="m" * 5000))
    assert body["text"].startswith("[warning] mlplatform run_failure alert for platform: mmm")
    assert len(body["blocks"]) == 3 and len(body["blocks"][2]["text"]["text"]) == 3000
    assert [f["text"] for f in body["blocks"][1]["fields"]][-1] == "*Day*\n-"


def test_redact_url_keeps_only_scheme_host_port():
    assert redact_url("https://user:pw@hooks.example.com:8443/services/A/B?x=1#f") == "https://hooks.example.com:8443/..."
    assert redact_url("http://127.0.0.1/hook") == "http://127.0.0.1/..."
    assert repr(WebhookSink("https://hooks.example.com/SECRET", FAST)) == "WebhookSink(https://hooks.example.com/...)"
