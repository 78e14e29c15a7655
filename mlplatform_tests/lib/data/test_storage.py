"""ObjectStore and the append-only record logs, on a local directory and on S3 (moto's HTTP server on
127.0.0.1): the same behaviour on both."""

import os
from pathlib import Path

import boto3
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from mlplatform_assets.lib.data.storage import (
    ObjectStore,
    RecordTail,
    append_record,
    atomic_path,
    read_records,
    split_s3_uri,
)
from mlplatform_tests.conftest import free_port

BUCKET = "store-test"


@pytest.fixture(scope="module")
def s3_client():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return ObjectStore(str(tmp_path / "root"))
    client = request.getfixturevalue("s3_client")
    return ObjectStore(f"s3://{BUCKET}/{tmp_path.name}/root", client)  # a fresh prefix per test


def test_bytes_round_trip_exists_delete_and_missing_keys(store):
    assert not store.exists("a/b.bin")
    uri = store.write_bytes("a/b.bin", b"one")
    assert uri == store.uri("a/b.bin") and store.exists("a/b.bin")
    store.write_bytes("a/b.bin", b"two")  # overwrite
    assert store.read_bytes("a/b.bin") == b"two"
    assert not store.exists("a/b")  # a prefix of a key is not the key
    store.delete("a/b.bin")
    store.delete("a/b.bin")  # deleting a missing key is fine
    assert not store.exists("a/b.bin")
    with pytest.raises((FileNotFoundError, ClientError)):  # NoSuchKey on S3
        store.read_bytes("a/b.bin")


def test_list_is_sorted_relative_and_prefix_scoped_and_delete_prefix_removes_a_subtree(store):
    for key in ("m/runs/2/x.json", "m/runs/1/x.json", "m/runs/1/y.json", "m/other.json", "n/z.json"):
        store.write_bytes(key, b"{}")
    assert store.list("m/runs/") == ["m/runs/1/x.json", "m/runs/1/y.json", "m/runs/2/x.json"]
    assert store.list() == ["m/other.json", "m/runs/1/x.json", "m/runs/1/y.json", "m/runs/2/x.json", "n/z.json"]
    assert store.list("nothing/") == []
    store.delete_prefix("m/runs/1")
    assert store.list("m/") == ["m/other.json", "m/runs/2/x.json"]


def test_frames_round_trip_and_stream_in_batches(store):
    frame = pd.DataFrame({"a": range(10), "b": [f"v{i}" for i in range(10)],
                          "t": pd.date_range("2026-06-01", periods=10, freq="h")})
    uri, n_bytes = store.write_frame("f/data.parquet", frame)
    assert n_bytes == len(store.read_bytes("f/data.parquet")) > 0
    pd.testing.assert_frame_equal(store.read_frame("f/data.parquet"), frame)
    batches = list(store.iter_frames("f/data.parquet", batch_rows=4))
    assert [len(b) for b in batches] == [4, 4, 2]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), frame)


def test_local_hidden_files_are_writes_in_progress_not_objects(tmp_path):
    store = ObjectStore(str(tmp_path))
    store.write_bytes("d/real.json", b"1")
    (tmp_path / "d" / ".real.json.123.tmp").write_bytes(b"half")
    assert store.list("d/") == ["d/real.json"]


def test_atomic_path_leaves_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    with atomic_path(target) as tmp:
        Path(tmp).write_text("good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "good"
    assert os.listdir(target.parent) == ["file.txt"]  # no temp file left behind


def test_split_s3_uri():
    assert split_s3_uri("s3://bucket/a/b") == ("bucket", "a/b")
    assert split_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="not an s3:// URI"):
        split_s3_uri("/local/path")
    with pytest.raises(ValueError, match="has no bucket"):
        split_s3_uri("s3:///key")


def _log_location(where: str, tmp_path: Path, request) -> tuple[str, object]:
    """A record log's location (and the S3 client it needs) on the local disk or on moto's S3."""
    if where == "local":
        return str(tmp_path / "log" / "alerts.jsonl"), None
    return f"s3://{BUCKET}/{tmp_path.name}/alerts", request.getfixturevalue("s3_client")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_record_log_appends_in_order_and_reads_back(where, tmp_path, request):
    location, client = _log_location(where, tmp_path, request)
    assert read_records(location, client) == []
    for i in range(3):
        append_record(location, {"i": i, "when": pd.Timestamp("2026-06-01")}, client)
    records = read_records(location, client)
    assert [r["i"] for r in records] == [0, 1, 2]
    assert records[0]["when"] == "2026-06-01 00:00:00"  # non-JSON values are written as text


@pytest.mark.parametrize("where", ["local", "s3"])
def test_record_tail_returns_only_what_was_appended_since_the_last_read(where, tmp_path, request):
    location, client = _log_location(where, tmp_path, request)
    tail = RecordTail(location, client)
    assert tail.read_new() == [] and not tail.restarted  # no log yet
    for i in range(3):
        append_record(location, {"i": i}, client)
    assert [r["i"] for r in tail.read_new()] == [0, 1, 2]
    assert tail.read_new() == []
    append_record(location, {"i": 3}, client)
    assert [r["i"] for r in tail.read_new()] == [3] and not tail.restarted
    # Another reader starting now sees the whole history once.
    assert [r["i"] for r in RecordTail(location, client).read_new()] == [0, 1, 2, 3]


def test_record_tail_leaves_a_line_being_written_for_the_next_read(tmp_path):
    log = tmp_path / "alerts.jsonl"
    append_record(log, {"i": 0})
    tail = RecordTail(log)
    with open(log, "ab") as fh:
        fh.write(b'{"i": 1')  # a writer mid-line
    assert [r["i"] for r in tail.read_new()] == [0]
    with open(log, "ab") as fh:
        fh.write(b'}\n')
    assert [r["i"] for r in tail.read_new()] == [1]


def test_record_tail_rereads_a_replaced_or_truncated_log_and_says_so(tmp_path):
    log = tmp_path / "alerts.jsonl"
    for i in range(3):
        append_record(log, {"i": i})
    tail = RecordTail(log)
    assert len(tail.read_new()) == 3
    rotated = tmp_path / "alerts.jsonl.1"
    log.rename(rotated)  # logrotate: a new file under the old name
    append_record(log, {"i": 10})
    assert [r["i"] for r in tail.read_new()] == [10] and tail.restarted
    log.write_text("")  # truncated in place
    assert tail.read_new() == [] and tail.restarted
    log.unlink()
    assert tail.read_new() == [] and tail.restarted
    assert tail.read_new() == [] and not tail.restarted


def test_record_tail_a_bad_line_fails_every_read_until_it_is_fixed(tmp_path):
    log = tmp_path / "alerts.jsonl"
    log.write_text('{"i": 0}\nnot json\n')
    tail = RecordTail(log)
    for _ in range(2):  # never skipped silently: the exporter keeps reporting the source down
        with pytest.raises(ValueError):
            tail.read_new()
    log.write_text('{"i": 0}\n{"i": 1}\n')
    assert [r["i"] for r in tail.read_new()] == [0, 1]


def test_record_tail_on_s3_restarts_when_records_are_deleted(tmp_path, s3_client):
    location = f"s3://{BUCKET}/{tmp_path.name}/alerts"
    for i in range(2):
        append_record(location, {"i": i}, s3_client)
    tail = RecordTail(location, s3_client)
    assert len(tail.read_new()) == 2
    store = ObjectStore(location, s3_client)
    for key in store.list():
        store.delete(key)
    append_record(location, {"i": 5}, s3_client)
    assert [r["i"] for r in tail.read_new()] == [5] and tail.restarted
