"""Bad-input corpus: every case is a 4xx with a JSON error naming the field, never echoing values."""

from __future__ import annotations

import pytest

from .conftest import MODEL, good_record

SECRET = "S3CRET-PAYLOAD-VALUE"
COLS = ["age", "income", "score", "city", "plan"]


def rec(**over):
    r = good_record(city=SECRET)  # a payload value that must never come back
    r.update(over)
    return r


def drop(col):
    r = rec()
    del r[col]
    return r


def split(rows, columns=COLS):
    return {"dataframe_split": {"columns": columns, "data": rows}}


def row(**over):
    r = rec(**over)
    return [r[c] for c in COLS]


J = "application/json"
# (id, body (dict -> JSON, bytes -> raw), content type, expected status, expected field or None, message part)
CASES = [
    ("missing-column", {"dataframe_records": [drop("age")]}, J, 422, "age", "missing"),
    ("missing-column-split", split([row()[1:]], COLS[1:]), J, 422, "age", "missing"),
    ("missing-column-columnar", {"inputs": {c: [rec()[c]] for c in COLS if c != "plan"}}, J, 422, "plan", "missing"),
    ("unknown-column", {"dataframe_records": [rec(extra=1)]}, J, 422, "extra", "unknown column"),
    ("unknown-column-split", split([row() + [1]], COLS + ["zzz"]), J, 422, "zzz", "unknown column"),
    ("unknown-column-columnar", {"inputs": {**{c: [rec()[c]] for c in COLS}, "bogus": [1]}}, J, 422, "bogus", "unknown"),
    ("string-for-double", {"dataframe_records": [rec(income=SECRET)]}, J, 422, "income", "expected a number"),
    ("numeric-string-for-double", {"dataframe_records": [rec(score="0.5")]}, J, 422, "score", "expected a number"),
    ("bool-for-double", {"dataframe_records": [rec(score=True)]}, J, 422, "score", "got boolean"),
    ("list-for-double", {"dataframe_records": [rec(score=[1, 2])]}, J, 422, "score", "got array"),
    ("object-for-double", {"dataframe_records": [rec(score={"a": 1})]}, J, 422, "score", "got object"),
    ("string-for-long", {"dataframe_records": [rec(age="42")]}, J, 422, "age", "integer"),
    ("fraction-for-long", {"dataframe_records": [rec(age=42.5)]}, J, 422, "age", "integer"),
    ("huge-int-for-long", {"dataframe_records": [rec(age=2**64 - 1)]}, J, 422, "age", "range"),
    ("huge-int-for-double", b'{"dataframe_records":[{"age":1,"income":1' + b"0" * 400 + b',"score":1,"city":"a","plan":"b"}]}',
     J, 400, "body", "not valid JSON"),
    ("number-for-string", {"dataframe_records": [rec(plan=7)]}, J, 422, "plan", "expected a string"),
    ("bool-for-string", {"dataframe_records": [rec(plan=False)]}, J, 422, "plan", "expected a string"),
    ("null-required-double", {"dataframe_records": [rec(income=None)]}, J, 422, "income", "null"),
    ("null-required-long", split([row(age=None)]), J, 422, "age", "null"),
    ("null-required-string", {"dataframe_records": [rec(plan=None)]}, J, 422, "plan", "null"),
    ("nan-token", b'{"dataframe_records":[{"age":1,"income":NaN,"score":1,"city":"a","plan":"b"}]}', J, 400, "body", "NaN"),
    ("infinity-token", b'{"dataframe_records":[{"age":1,"income":Infinity,"score":1,"city":"a","plan":"b"}]}', J, 400,
     "body", "Infinity"),
    ("neg-infinity-token", b'{"inputs":{"age":1,"income":-Infinity,"score":1,"city":"a","plan":"b"}}', J, 400, "body", "JSON"),
    ("overflow-to-inf", b'{"inputs":{"age":1,"income":1e999,"score":1,"city":"a","plan":"b"}}', J, 400, "body", "JSON"),
    ("empty-records", {"dataframe_records": []}, J, 422, "dataframe_records", "no rows"),
    ("empty-split", split([]), J, 422, "dataframe_split.data", "no rows"),
    ("empty-columnar", {"inputs": {c: [] for c in COLS}}, J, 422, "inputs", "no rows"),
    ("too-many-rows", {"dataframe_records": [rec() for _ in range(51)]}, J, 413, "dataframe_records", "at most 50"),
    ("body-too-large", {"dataframe_records": [rec(city="x" * 70_000)]}, J, 413, "body", "limit"),
    ("invalid-json", b'{"dataframe_records": [', J, 400, "body", "not valid JSON"),
    ("not-utf8", b'{"inputs": "\xff\xfe"}', J, 400, "body", "JSON"),
    ("empty-body", b"", J, 400, "body", "JSON"),
    ("wrong-content-type", {"dataframe_records": [rec()]}, "text/csv", 415, "content-type", "application/json"),
    ("form-content-type", {"dataframe_records": [rec()]}, "application/x-www-form-urlencoded", 415, "content-type", "application/json"),
    ("no-content-type", {"dataframe_records": [rec()]}, None, 415, "content-type", "application/json"),
    ("body-is-list", [rec()], J, 400, None, "JSON object"),
    ("body-is-string", SECRET, J, 400, None, "JSON object"),
    ("no-known-key", {"data": [rec()]}, J, 400, "data", "unknown top-level key"),
    ("two-keys", {"dataframe_records": [rec()], "instances": [rec()]}, J, 400, None, "exactly one"),
    ("params-given", {"dataframe_records": [rec()], "params": {"k": SECRET}}, J, 400, "params", "no params"),
    ("records-not-list", {"dataframe_records": {"a": 1}}, J, 400, "dataframe_records", "list"),
    ("record-not-object", {"dataframe_records": [[1, 2]]}, J, 422, "dataframe_records[0]", "object"),
    ("split-not-object", {"dataframe_split": [1]}, J, 400, "dataframe_split", "object"),
    ("split-columns-not-strings", {"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}}, J, 400,
     "dataframe_split.columns", "column names"),
    ("split-ragged-row", split([row(), row()[:3]]), J, 422, "dataframe_split.data[1]", "row 1"),
    ("split-row-not-list", split([row(), {"a": 1}]), J, 422, "dataframe_split.data[1]", "row 1"),
    ("split-duplicate-column", split([row() + [1]], COLS + ["age"]), J, 422, "age", "more than once"),
    ("split-extra-key", {"dataframe_split": {"columns": COLS, "data": [row()], "dtypes": {}}}, J, 400,
     "dataframe_split.dtypes", "unknown key"),
    ("split-bad-index", {"dataframe_split": {"columns": COLS, "data": [row()], "index": [1, 2]}}, J, 422,
     "dataframe_split.index", "index"),
    ("columnar-ragged", {"inputs": {**{c: [rec()[c]] * 2 for c in COLS}, "plan": ["a"]}}, J, 422, "plan", "values"),
    ("instances-scalar", {"instances": 5}, J, 400, "instances", "list"),
    ("bad-value-in-later-row", {"dataframe_records": [rec(), rec(), rec(score=SECRET)]}, J, 422, "score", "row 2"),
    ("long-column-name", {"dataframe_records": [rec(**{"x" * 500: 1})]}, J, 422, "x" * 61 + "...", "unknown column"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("path", ["/invocations", f"/v1/models/{MODEL}/predict"])
def test_bad_input(client, case, path):
    import orjson

    _id, body, ctype, status, field, part = case
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": ctype} if ctype else {}
    r = client.post(path, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    err = orjson.loads(r.content)["error"]  # strict parser: a bare NaN/Infinity token would fail here
    assert set(err) == {"code", "message", "field"}
    assert err["field"] == field
    assert part in err["message"], err["message"]
    if field and field not in ("body", "content-type") and not field.startswith(("dataframe", "inputs", "instances")):
        assert repr(field) in err["message"]
    assert SECRET not in r.text and "x" * 100 not in r.text and "0" * 100 not in r.text
    assert client.get("/healthz").status_code == 200


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


def test_chunked_body_over_limit_is_413_without_reading_it_all(client):
    def gen():
        for _ in range(200):  # 200 x 1 KiB chunks, no Content-Length
            yield b" " * 1024

    r = client.post("/invocations", content=gen(), headers={"content-type": J})
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert client.get("/healthz").status_code == 200


def test_bad_content_length(client):
    import socket
    from urllib.parse import urlparse

    u = urlparse(str(client.base_url))
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 99999999999\r\n\r\n{}")
        data = s.recv(4096)
    assert data.startswith(b"HTTP/1.1 413")
