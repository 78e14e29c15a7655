from __future__ import annotations

import os
import threading
import time

import httpx
import pytest

from mlplatform_assets.lib.serving import read_prediction_log
from mlplatform_assets.lib.serving import testing as T

from .conftest import good_record, metric_value, start_server


def _wait(pred, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


@pytest.mark.slow
def test_hot_swap_under_load_and_failed_reload(store, restore_env):
    name = "swap-model"
    assert T.register_model(store, name, "hgb", n_rows=1000) == "1"
    srv = start_server(store, name, poll_interval_s=0.2, log_flush_interval_s=0.3)
    stop = threading.Event()
    results: list[list] = [[] for _ in range(4)]

    def load(i):
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            n = 0
            while not stop.is_set():
                n += 1
                r = c.post("/invocations", json={"inputs": [good_record(score=(n % 10) / 10)] * (1 + i % 3)})
                results[i].append((r.status_code, r.headers.get("x-model-version"), r.json().get("model_version"),
                                   len(r.json().get("predictions", []))))

    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert T.register_model(store, name, "logreg", n_rows=1000, seed=1) == "2"  # moves champion
        assert _wait(lambda: all(r and r[-1][1] == "2" for r in results), 30)
        time.sleep(0.3)

        # A broken version: the alias moves to it, loading fails, version 2 keeps serving.
        assert T.register_model(store, name, "hgb", n_rows=500, seed=2, alias=None) == "3"
        (T.model_artifact_dir(store, name, "3") / "model.skops").write_bytes(b"not a skops file")
        T.set_alias(store, name, "3")
        assert _wait(lambda: metric_value(httpx.get(srv.url + "/metrics").text,
                                          "mlplatform_serving_model_reload_failures_total", model=name) >= 1, 30)
        time.sleep(0.3)
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 200 and ready.json()["model_version"] == "2"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    metrics = httpx.get(srv.url + "/metrics").text
    srv.stop()

    total = 0
    per_version = {"1": 0, "2": 0}
    for res in results:
        assert res, "a load thread made no request"
        assert all(s == 200 for s, *_ in res), {s for s, *_ in res}
        versions = [h for _, h, _, _ in res]
        assert all(h == b for _, h, b, _ in res)
        assert versions[0] == "1" and versions[-1] == "2"
        switches = sum(1 for a, b in zip(versions, versions[1:]) if a != b)
        assert switches == 1, "the version must change exactly once, monotonically"
        for _, v, _, n in res:
            per_version[v] += n
            total += n
    assert metric_value(metrics, "mlplatform_serving_model_reloads_total", model=name) == 2
    assert metric_value(metrics, "mlplatform_serving_model_version", model=name) == 2

    log = read_prediction_log(store, name)
    assert len(log) == total
    assert log["model_version"].value_counts().to_dict() == {v: n for v, n in per_version.items() if n}
    assert {"age", "income", "score", "city", "plan", "prediction", "probability"} <= set(log.columns)


def test_pickle_models_are_refused_and_flag_is_off(store, restore_env):
    name = "pickled-model"
    T.register_model(store, name, "logreg", n_rows=300, serialization_format="cloudpickle")
    from mlplatform_assets.lib.serving import ThreadedServer, create_app

    app = create_app(name, store, poll_interval_s=0.2, prediction_log=False, allow_unauthenticated=True)
    srv = ThreadedServer(app).start()
    try:
        assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
        assert _wait(lambda: metric_value(httpx.get(srv.url + "/metrics").text,
                                          "mlplatform_serving_model_reload_failures_total", model=name) >= 1, 20)
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503 and "pickle" in r.json()["reason"]
        r = httpx.post(srv.url + "/invocations", json={"inputs": [good_record()]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
        assert httpx.get(srv.url + "/healthz").status_code == 200
        text = httpx.get(srv.url + "/metrics").text
        assert metric_value(text, "mlplatform_serving_pickle_deserialization_allowed") == 0
    finally:
        srv.stop()


def test_untrusted_skops_type_is_refused(store, restore_env, monkeypatch):
    from mlplatform_assets.lib.model import model_io
    from mlplatform_assets.lib.serving import model as model_mod

    predictor = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    allowed = dict(model_io._allowed_types_by_node_kind())
    allowed["ObjectNode"] = allowed["ObjectNode"] - {predictor}
    monkeypatch.setattr(model_io, "_allowed_types_by_node_kind", lambda: allowed)
    with pytest.raises(model_mod.ModelLoadError, match=f"allow-list: \\['{predictor}'\\]"):
        model_mod.load_version(store, "serving-demo", "1", 10)
    # but an operator can extend the allow-list explicitly
    handle = model_mod.load_version(store, "serving-demo", "1", 10, frozenset({predictor}))
    assert handle.version == "1"
