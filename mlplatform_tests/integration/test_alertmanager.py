"""Alerts delivered to a REAL Prometheus Alertmanager (Debian ``prometheus-alertmanager``) on 127.0.0.1.

Each test starts its own Alertmanager (null receiver, clustering off, storage in tmp): it starts in
well under a second. Without the binary the tests are skipped locally and fail under ``CI``
(``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from mlplatform_assets.lib.monitoring.alerting.http import RetryPolicy
from mlplatform_assets.lib.monitoring.alerting.sinks.alertmanager import (
    ENV_RESOLVE_AFTER,
    AlertmanagerSink,
)
from mlplatform_assets.lib.monitoring.alerts import Alert, read_alerts, send_alert
from mlplatform_tests.conftest import free_port, stop_process_group, wait_for_http

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = 'route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n'


@pytest.fixture(autouse=True)
def _need_alertmanager():
    if BINARY is None:
        message = "prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def alertmanager(workdir: Path, port: int | None = None):
    """A throwaway Alertmanager on 127.0.0.1; yields its base URL."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(CONFIG)
    with open(workdir / "alertmanager.log", "wb") as log:
        proc = subprocess.Popen(
            [BINARY, f"--config.file={workdir / 'alertmanager.yml'}", f"--storage.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/-/ready", timeout=30, proc=proc)
        yield base
    finally:
        stop_process_group(proc, term_timeout=10)


def listed_alerts(base: str, **matchers: str) -> list[dict]:
    """``GET /api/v2/alerts`` filtered by label matchers (active alerts only: resolved ones are not listed)."""
    query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in matchers.items()])
    with urllib.request.urlopen(f"{base}/api/v2/alerts?{query}", timeout=5) as resp:  # noqa: S310 - 127.0.0.1
        return json.load(resp)


def test_alert_reaches_alertmanager_with_labels_annotations_and_resolve_time(tmp_path, monkeypatch):
    with alertmanager(tmp_path / "am") as base:
        monkeypatch.setenv("MLPLATFORM_ALERTMANAGER_URL", base)
        monkeypatch.setenv(ENV_RESOLVE_AFTER, "1800")
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        alert = Alert(kind="drift", model="churn", message="drift share 0.75 >= 0.5", asset="churn/drift_report",
                      partition="2026-06-11", details={"drift_share": 0.75},
                      time=now.isoformat(), link="http://dagster.example:3000/runs/abc")
        record = send_alert(alert, tmp_path / "alerts.jsonl")
        assert record["delivery"]["alertmanager"]["status"] == "delivered"
        assert record["delivery"]["alertmanager"]["http_status"] == 200
        assert read_alerts(tmp_path / "alerts.jsonl")[0]["delivery"] == record["delivery"]

        # An old alert whose resolve time has passed: accepted, but already resolved (not listed).
        old = Alert(kind="quality_floor", model="churn", message="realized accuracy 0.61 < 0.7",
                    partition="2026-06-01", time=(now - dt.timedelta(hours=2)).isoformat())
        assert send_alert(old, tmp_path / "alerts.jsonl")["delivery"]["alertmanager"]["status"] == "delivered"

        listed = listed_alerts(base, model="churn")
    assert len(listed) == 1, listed
    (got,) = listed
    assert got["labels"] == {"alertname": "MlplatformDrift", "kind": "drift", "severity": "warning",
                             "model": "churn", "partition": "2026-06-11"}
    assert got["annotations"] == {
        "summary": "drift for model churn on 2026-06-11",
        "description": 'drift share 0.75 >= 0.5\nasset: churn/drift_report\ndetails: {"drift_share": 0.75}'}
    assert got["generatorURL"] == "http://dagster.example:3000/runs/abc"
    assert got["status"]["state"] == "active"
    starts = dt.datetime.fromisoformat(got["startsAt"].replace("Z", "+00:00"))
    ends = dt.datetime.fromisoformat(got["endsAt"].replace("Z", "+00:00"))
    assert starts == now and ends - starts == dt.timedelta(seconds=1800)


def test_alertmanager_not_up_yet_is_retried_until_it_accepts(tmp_path):
    port = free_port()
    policy = RetryPolicy(timeout_s=1.0, max_attempts=8, backoff_s=0.2, budget_s=15.0)
    sink = AlertmanagerSink(f"http://127.0.0.1:{port}", policy)
    records: list[dict] = []
    sender = threading.Thread(target=lambda: records.append(send_alert(
        Alert(kind="rollback", model="m", message="rolled back v3 -> v2"), tmp_path / "a.jsonl", sinks=[sink])))
    sender.start()
    time.sleep(0.5)  # the first attempts are refused: nothing listens on the port yet
    with alertmanager(tmp_path / "am", port=port) as base:
        sender.join(timeout=20)
        listed = listed_alerts(base, alertname="MlplatformRollback")
    outcome = records[0]["delivery"]["alertmanager"]
    assert outcome["status"] == "delivered" and outcome["attempts"] >= 2, outcome
    assert [a["labels"]["severity"] for a in listed] == ["critical"]


def test_alertmanager_gone_gives_up_within_the_bound(tmp_path):
    policy = RetryPolicy(timeout_s=0.5, max_attempts=3, backoff_s=0.1, budget_s=2.0)
    with alertmanager(tmp_path / "am") as base:
        pass  # started and stopped: its port now refuses connections
    started = time.monotonic()
    record = send_alert(Alert(kind="drift", model="m", message="x"), tmp_path / "a.jsonl",
                        sinks=[AlertmanagerSink(base, policy)])
    assert time.monotonic() - started < 2.0
    outcome = record["delivery"]["alertmanager"]
    assert (outcome["status"], outcome["attempts"], outcome["error"]) == ("failed", 3, "ConnectionRefusedError")
