"""The service as a real process: SIGTERM during load, multi-worker metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from mlplatform_assets.lib.serving import free_port, read_prediction_log
from mlplatform_assets.lib.serving import testing as T
from .conftest import good_record, metric_value


def _spawn(config, name, *args, env_extra=None):
    port = free_port()
    env = dict(os.environ)
    env.update({"MLPLATFORM_HOME": config.state_dir, "MLFLOW_TRACKING_URI": config.mlflow_tracking_uri,
                "MLPLATFORM_PREDICTION_LOG_URI": config.prediction_log_uri, "PYTHONUNBUFFERED": "1"})
    env.pop("MLFLOW_REGISTRY_URI", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(env_extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "mlplatform_assets.lib.serving", "--model", name,
                             "--port", str(port), "--poll-interval", "0.5", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not become ready:\n" + proc.stdout.read().decode(errors="replace")[-3000:])


@pytest.fixture(scope="module")
def proc_store(tmp_path_factory):
    config = T.make_config(tmp_path_factory.mktemp("proc-store"))
    T.register_model(config, "proc-model", "hgb", n_rows=1000)
    return config


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_during_load_loses_nothing(proc_store):
    # Long flush interval: the rows can only reach the log through the shutdown flush.
    proc, url = _spawn(proc_store, "proc-model", env_extra={"MLPLATFORM_SERVING_LOG_FLUSH_INTERVAL_S": "600"})
    ok_ids: list[str] = []
    ok_rows = [0]
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(i):
        with httpx.Client(base_url=url, timeout=30) as c:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    r = c.post("/invocations", json={"inputs": [good_record(age=20 + n % 50)] * (1 + i % 2)})
                except httpx.HTTPError:
                    return  # the server closed: this request was never accepted
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 200:
                        ok_ids.append(r.json()["request_id"])
                        ok_rows[0] += len(r.json()["predictions"])

    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(60)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read().decode(errors="replace")
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown: exit by signal is expected.
    assert rc in (0, -signal.SIGTERM), out[-3000:]
    assert "Application shutdown complete" in out
    assert statuses and set(statuses) == {200}, set(statuses)
    log = read_prediction_log(proc_store, "proc-model")
    assert len(log) == ok_rows[0] > 0
    assert set(log["request_id"]) == set(ok_ids)
    assert (log["model_version"] == "1").all()
    assert "prediction log flushed" in out


@pytest.mark.slow
@pytest.mark.integration
def test_two_workers_aggregate_metrics(proc_store):
    proc, url = _spawn(proc_store, "proc-model", "--workers", "2", "--no-prediction-log")
    try:
        # readyz answered by one worker says nothing of the other: wait for a run of 200s.
        deadline, streak = time.monotonic() + 60, 0
        while streak < 20 and time.monotonic() < deadline:
            streak = streak + 1 if httpx.get(url + "/readyz").status_code == 200 else 0
            time.sleep(0.05)
        assert streak >= 20
        n = 60
        for _ in range(n):  # fresh connections spread over both workers
            assert httpx.post(url + "/invocations", json={"inputs": [good_record()]}).status_code == 200
        pids_seen = set()
        for _ in range(6):
            text = httpx.get(url + "/metrics").text
            assert metric_value(text, "mlplatform_serving_requests_total", route="/invocations", status="200") == n
            assert metric_value(text, "mlplatform_serving_pickle_deserialization_allowed") == 0
            pids_seen |= {line.split('pid="')[1].split('"')[0] for line in text.splitlines()
                          if line.startswith("mlplatform_serving_model_version{")}
        assert len(pids_seen) == 2  # each worker reports the version it serves
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
