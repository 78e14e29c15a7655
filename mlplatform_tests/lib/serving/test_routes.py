from __future__ import annotations

import math

import httpx
import pytest

from mlplatform_assets.lib.serving import testing as T

from .conftest import MODEL, good_record, metric_value, start_server

COLUMNS = ["age", "income", "score", "city", "plan"]


def _rows(n=2):
    return [good_record(score=i / max(n, 1)) for i in range(n)]


@pytest.mark.parametrize("body", [
    {"dataframe_records": _rows()},
    {"dataframe_split": {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in _rows()]}},
    {"dataframe_split": {"columns": COLUMNS, "data": [[r[c] for c in COLUMNS] for r in _rows()], "index": [5, 6]}},
    {"instances": _rows()},
    {"inputs": _rows()},
    {"inputs": {c: [r[c] for r in _rows()] for c in COLUMNS}},
], ids=["records", "split", "split-index", "instances", "inputs-records", "inputs-columns"])
@pytest.mark.parametrize("path", ["/invocations", f"/v1/models/{MODEL}/predict"])
def test_prediction_bodies(client, path, body):
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert r.headers["x-model-version"] == "1" == out["model_version"]
    assert out["model_name"] == MODEL
    assert len(out["predictions"]) == 2 and set(out["predictions"]) <= {0, 1}
    assert out["classes"] == [0, 1] and out["positive_class"] == 1
    assert len(out["positive_probability"]) == 2
    for p, row in zip(out["positive_probability"], out["probabilities"]):
        assert 0 <= p <= 1 and math.isclose(row[1], p) and math.isclose(sum(row), 1)
    assert r.headers["x-request-id"] == out["request_id"]


def test_single_row_columnar_scalars_and_optional_column(client):
    rec = good_record()
    del rec["city"]  # optional in the signature (it had missing values in training)
    r = client.post("/invocations", json={"inputs": rec})
    assert r.status_code == 200, r.text
    r = client.post("/invocations", json={"dataframe_records": [good_record(city=None)]})
    assert r.status_code == 200, r.text


def test_predictions_match_in_process_model(client, store):
    from mlplatform_assets.lib.serving.model import load_version

    handle = load_version(store, MODEL, "1", 100)
    rows = [good_record(score=s, age=a) for s, a in [(0.1, 20), (0.5, 40), (0.95, 80)]]
    frame = handle.build_frame({c: [r[c] for r in rows] for c in COLUMNS})
    expected = handle.model.predict_proba(frame)[:, 1]
    out = client.post("/invocations", json={"dataframe_records": rows}).json()
    assert out["positive_probability"] == pytest.approx(expected.tolist())
    assert out["predictions"] == handle.model.predict(frame).tolist()


def test_client_request_id_is_echoed(client):
    r = client.post("/invocations", json={"inputs": [good_record()]}, headers={"X-Request-Id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" == r.json()["request_id"]


def test_health_ready_metadata(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["model_version"] == "1"
    meta = client.get(f"/v1/models/{MODEL}").json()
    assert [c["name"] for c in meta["inputs"]] == COLUMNS
    assert {c["name"]: c["required"] for c in meta["inputs"]}["city"] is False
    assert client.get("/v1/models/other").status_code == 404


def test_metrics(client):
    client.post("/invocations", json={"inputs": [good_record()]})
    client.post("/invocations", json={"inputs": [good_record(age="x")]})
    text = client.get("/metrics").text
    assert metric_value(text, "mlplatform_serving_requests_total", route="/invocations", status="200") >= 1
    assert metric_value(text, "mlplatform_serving_requests_total", route="/invocations", status="422") >= 1
    assert metric_value(text, "mlplatform_serving_request_duration_seconds_count", route="/invocations") >= 2
    assert metric_value(text, "mlplatform_serving_model_version", model=MODEL) == 1
    assert metric_value(text, "mlplatform_serving_model_reloads_total", model=MODEL) == 1
    assert metric_value(text, "mlplatform_serving_model_reload_failures_total", model=MODEL) == 0
    assert metric_value(text, "mlplatform_serving_in_flight_requests") >= 1  # this very request
    assert metric_value(text, "mlplatform_serving_prediction_probability_count", model=MODEL) >= 1
    assert metric_value(text, "mlplatform_serving_batch_rows_count") >= 1
    assert metric_value(text, "mlplatform_serving_pickle_deserialization_allowed") == 0


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/invocations", 405), ("PUT", f"/v1/models/{MODEL}/predict", 405), ("POST", "/healthz", 405),
    ("DELETE", "/readyz", 405), ("POST", "/metrics", 405), ("GET", "/nope", 404), ("POST", "/v1/models", 404),
    ("POST", "/v1/models/other-model/predict", 404), ("POST", "/v1/models/a/b/predict", 404),
])
def test_method_and_route_errors(client, method, path, status):
    r = client.request(method, path, json={"inputs": [good_record()]})
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] and err["message"]
    if status == 405:
        assert "allow" in r.headers


def test_concurrent_requests_are_batched(server):
    import concurrent.futures as cf

    def call(i):
        with httpx.Client(base_url=server.url) as c:
            return [c.post("/invocations", json={"inputs": [good_record(score=i / 100)]}).status_code
                    for _ in range(20)]

    with cf.ThreadPoolExecutor(8) as pool:
        codes = [s for lst in pool.map(call, range(8)) for s in lst]
    assert codes == [200] * 160


@pytest.mark.parametrize("kind", ["hgb_multiclass", "hgb_regressor", "rf"])
def test_other_model_kinds(store, restore_env, kind):
    name = f"kind-{kind}"
    T.register_model(store, name, kind, n_rows=500)
    srv = start_server(store, name, prediction_log=False)
    try:
        out = httpx.post(f"{srv.url}/invocations", json={"inputs": [good_record(), good_record(age=85)]}).json()
        if kind == "hgb_multiclass":
            assert set(out["predictions"]) <= {"low", "mid", "high"}
            assert sorted(out["classes"]) == ["high", "low", "mid"] and len(out["probabilities"][0]) == 3
            assert "positive_probability" not in out
        elif kind == "hgb_regressor":
            assert all(isinstance(p, float) for p in out["predictions"]) and "probabilities" not in out
            text = httpx.get(f"{srv.url}/metrics").text
            assert metric_value(text, "mlplatform_serving_prediction_value_count", model=name) == 2
        else:
            assert len(out["positive_probability"]) == 2
    finally:
        srv.stop()
