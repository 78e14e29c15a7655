"""A tiny object store over a local directory or an S3 prefix.

Writes are atomic: a local file is written to a temp name and renamed; an S3 PUT
is atomic by nature. Readers never see half-written objects.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temp file name beside ``path``; on success it replaces ``path`` in one rename.

    A reader sees the old file or the complete new one, never a half-written one; on error the
    temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI has no bucket: {uri!r}")
    return bucket, key


def default_s3_client() -> Any:
    """A boto3 client configured from the environment (AWS_* variables, incl. AWS_ENDPOINT_URL)."""
    import boto3

    from mlplatform_assets.lib import config

    return boto3.client("s3", endpoint_url=config.read(config.ENV_S3_ENDPOINT))


class ObjectStore:
    """Relative keys under ``root`` (a local directory or ``s3://bucket/prefix``)."""

    def __init__(self, root: str, s3_client: Any | None = None):
        self.root = root.rstrip("/") if root.startswith("s3://") else str(Path(root))
        self.is_s3 = root.startswith("s3://")
        self._s3 = s3_client

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = default_s3_client()
        return self._s3

    def uri(self, key: str) -> str:
        return f"{self.root}/{key}" if self.is_s3 else str(Path(self.root) / key)

    def _bucket_key(self, key: str) -> tuple[str, str]:
        bucket, prefix = split_s3_uri(self.root)
        return bucket, f"{prefix}/{key}" if prefix else key

    def exists(self, key: str) -> bool:
        if not self.is_s3:
            return Path(self.uri(key)).exists()
        bucket, k = self._bucket_key(key)
        resp = self.s3.list_objects_v2(Bucket=bucket, Prefix=k, MaxKeys=1)
        return any(o["Key"] == k for o in resp.get("Contents", []))

    def read_bytes(self, key: str) -> bytes:
        if not self.is_s3:
            return Path(self.uri(key)).read_bytes()
        bucket, k = self._bucket_key(key)
        return self.s3.get_object(Bucket=bucket, Key=k)["Body"].read()

    def write_bytes(self, key: str, data: bytes) -> str:
        if self.is_s3:
            bucket, k = self._bucket_key(key)
            self.s3.put_object(Bucket=bucket, Key=k, Body=data)
            return self.uri(key)
        path = self.uri(key)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return path

    def delete(self, key: str) -> None:
        if self.is_s3:
            bucket, k = self._bucket_key(key)
            self.s3.delete_object(Bucket=bucket, Key=k)
        else:
            Path(self.uri(key)).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix/`` (locally, the directory itself too)."""
        if self.is_s3:
            for key in self.list(f"{prefix.rstrip('/')}/"):
                self.delete(key)
        else:
            import shutil

            shutil.rmtree(self.uri(prefix), ignore_errors=True)

    def list(self, prefix: str = "") -> list[str]:
        """Keys (relative to root) under ``prefix``, sorted."""
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Size in bytes of every object under ``prefix`` (keys relative to root): one listing, paginated on S3.
        Hidden local files (writes in progress) are not objects yet."""
        if not self.is_s3:
            base = Path(self.root)
            start = base / prefix if prefix else base
            if not start.exists():
                return {}
            found: dict[str, int] = {}
            for p in start.rglob("*"):
                if p.name.startswith("."):
                    continue
                try:
                    if p.is_file():
                        found[str(p.relative_to(base))] = p.stat().st_size
                except FileNotFoundError:  # deleted while listing (old run outputs are pruned concurrently)
                    continue
            return found
        bucket, k = self._bucket_key(prefix)
        _, root_prefix = split_s3_uri(self.root)
        strip = len(root_prefix) + 1 if root_prefix else 0
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=k):
            found.update((o["Key"][strip:], int(o["Size"])) for o in page.get("Contents", []))
        return found

    # --- frames ---------------------------------------------------------------
    def write_frame(self, key: str, df: pd.DataFrame) -> tuple[str, int]:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
        return self.write_bytes(key, data), len(data)

    def read_frame(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(self.read_bytes(key)))

    def iter_frames(self, key: str, batch_rows: int = 50_000):  # noqa: ANN201 - Iterator[pd.DataFrame]
        """A Parquet object in batches: memory holds one batch (plus, on S3, the compressed bytes)."""
        import pyarrow.parquet as pq

        source = io.BytesIO(self.read_bytes(key)) if self.is_s3 else self.uri(key)
        with pq.ParquetFile(source) as pf:
            for batch in pf.iter_batches(batch_size=batch_rows):
                yield batch.to_pandas()


# --- append-only record logs (audit mirror, alerts) -----------------------------------------

def append_record(location: str | os.PathLike, record: dict[str, Any], s3_client: Any | None = None) -> None:
    """Append one JSON record to an append-only log that no writer can corrupt for another.

    ``location`` is a local ``.jsonl`` file (one line per record, written under an exclusive lock so
    concurrent writers never interleave) or an ``s3://bucket/prefix`` (one object per record, named by
    a nanosecond clock plus a random suffix: S3 has no append, and PUTs of distinct keys never race).
    On a cluster the log lives in the object store, so any pod may write it and any pod may be replaced.
    """
    data = json.dumps(record, sort_keys=True, default=str)
    location = str(location)
    if location.startswith("s3://"):
        store = ObjectStore(location, s3_client)
        store.write_bytes(f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json", data.encode())
        return
    p = Path(location)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (data + "\n").encode())
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_records(location: str | os.PathLike, s3_client: Any | None = None) -> list[dict[str, Any]]:
    """Every record of a log written by :func:`append_record`, oldest first."""
    location = str(location)
    if location.startswith("s3://"):
        store = ObjectStore(location, s3_client)
        return [json.loads(store.read_bytes(k)) for k in store.list() if k.endswith(".json")]
    p = Path(location)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


class RecordTail:
    """Follows a log written by :func:`append_record`: each :meth:`read_new` returns only the records appended
    since the previous call, oldest first, so a reader polling every few seconds (the exporter) costs what is
    new, not the whole history.

    * Local file: read from the byte offset after the last complete line; a line still being written waits
      for the next call. A file that shrank or was replaced (rotated, truncated) is read again from the start
      and :attr:`restarted` is set, so the caller can drop what it derived from the old file.
    * S3 (one object per record): the keys are listed (one request per 1,000) and only unseen ones fetched.
      Keys are not assumed to arrive in order: writers on other pods have their own clocks.
    """

    def __init__(self, location: str | os.PathLike, s3_client: Any | None = None):
        self.location = str(location)
        self._s3_client = s3_client
        self._offset = 0
        self._inode: int | None = None
        self._seen: set[str] = set()
        self.restarted = False

    def read_new(self) -> list[dict[str, Any]]:
        self.restarted = False
        if self.location.startswith("s3://"):
            store = ObjectStore(self.location, self._s3_client)
            keys = [k for k in store.list() if k.endswith(".json")]
            if self._seen.difference(keys):  # records deleted: the log was replaced
                self._seen.clear()
                self.restarted = True
            new = [k for k in keys if k not in self._seen]
            records = [json.loads(store.read_bytes(k)) for k in new]
            self._seen.update(new)
            return records
        try:
            fh = open(self.location, "rb")  # noqa: SIM115 - closed below; fstat of the same open file
        except FileNotFoundError:
            if self._offset or self._inode is not None:
                self.restarted = True
            self._offset, self._inode = 0, None
            return []
        with fh:
            stat = os.fstat(fh.fileno())
            if (self._inode is not None and stat.st_ino != self._inode) or stat.st_size < self._offset:
                self._offset, self.restarted = 0, True
            self._inode = stat.st_ino
            fh.seek(self._offset)
            data = fh.read()
        complete = data[:data.rfind(b"\n") + 1]
        records = [json.loads(line) for line in complete.decode().splitlines() if line.strip()]
        self._offset += len(complete)  # only once parsed: a bad line fails every read, it is not skipped
        return records
