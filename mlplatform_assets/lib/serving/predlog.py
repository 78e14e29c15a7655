"""Append-only, daily-partitioned Parquet log of every prediction.

Layout: ``<root>/<model>/date=YYYY-MM-DD/part-<uuid>.parquet`` where root is
``config.prediction_log_uri``: a local directory or ``s3://bucket/prefix`` (boto3; endpoint from
``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3`` as boto3 reads them). Local part files are written
to a hidden temporary name and renamed into place, so readers never see a partial file; S3
``PutObject`` is atomic by itself.

One row per predicted input row. Columns: ``request_id``, ``row``, ``timestamp`` (UTC, when the
request arrived), ``model_name``, ``model_version``, one column per model input (its signature
name; a name colliding with a metadata column is prefixed ``input_``), ``prediction``, and for
classifiers with ``predict_proba``: ``probability`` (positive class, binary only, else null) and
``probabilities`` (list, in the order of the model's classes).
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
import time
import uuid
from datetime import date as _date

log = logging.getLogger("mlplatform.serving.predlog")

META_COLUMNS = ("request_id", "row", "timestamp", "model_name", "model_version",
                "prediction", "probability", "probabilities")
_US_PER_DAY = 86_400_000_000
_STOP = object()
_EPOCH_ORDINAL = _date(1970, 1, 1).toordinal()


def input_column_name(name: str) -> str:
    return f"input_{name}" if name in META_COLUMNS else name


def _arrow_type(kind: str):
    import pyarrow as pa

    return {"double": pa.float64(), "float": pa.float32(), "long": pa.int64(), "integer": pa.int32(),
            "boolean": pa.bool_(), "string": pa.string(), "binary": pa.string(),
            "datetime": pa.timestamp("ns")}.get(kind, pa.string())


def _split_uri(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def _s3_client():
    import boto3

    from mlplatform_assets.lib import config

    endpoint = config.read(config.ENV_S3_ENDPOINT_S3) or config.read(config.ENV_S3_ENDPOINT)
    return boto3.client("s3", endpoint_url=endpoint)


class LogChunk:
    """What the predict thread hands over for one batch group: plain lists/arrays, no Arrow yet."""

    __slots__ = ("columns", "kinds", "n", "meta")

    def __init__(self, columns: dict, kinds: dict, n: int, meta: dict):
        self.columns, self.kinds, self.n, self.meta = columns, kinds, n, meta

    def to_line(self) -> bytes:
        """One spool line (JSON). Numeric numpy arrays serialize natively; others as lists."""
        import orjson

        return orjson.dumps({"columns": self.columns, "kinds": self.kinds, "n": self.n, "meta": self.meta},
                            option=orjson.OPT_SERIALIZE_NUMPY, default=_json_default) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> "LogChunk":
        import numpy as np
        import orjson

        data = orjson.loads(line)
        meta = data["meta"]
        meta["prediction"] = np.asarray(meta["prediction"])
        if meta.get("probabilities") is not None:
            meta["probabilities"] = np.asarray(meta["probabilities"], dtype=np.float64)
        return cls(data["columns"], data["kinds"], int(data["n"]), meta)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(type(value).__name__)


class _Segment:
    """One spool file: JSON lines, one per LogChunk, held under an exclusive flock by its writer
    (a live writer's segments are never replayed by a sibling process) until it is deleted."""

    def __init__(self, path: str | None, fh):
        self.path = path  # None: the file could not be created; the rows are only in memory
        self.fh = fh
        self.id = os.path.basename(path)[len("segment-"):-len(".jsonl")] if path else uuid.uuid4().hex
        self.tables: list = []
        self.rows = 0
        self.broken = path is None

    @classmethod
    def create(cls, directory: str) -> "_Segment":
        import fcntl

        path = os.path.join(directory, f"segment-{uuid.uuid4().hex}.jsonl")
        tmp = path + ".new"  # locked before it gets the name a replaying process looks for
        fh = open(tmp, "ab")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        os.replace(tmp, path)
        return cls(path, fh)

    def remove(self) -> None:
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.release()

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # drops the lock: a later start may replay what is left
            self.fh = None


class PredictionLogWriter:
    """Writes logged predictions as Parquet parts from a background thread.

    Buffered (``spool_dir=None``): chunks are held in memory and written every ``flush_rows``
    rows or ``flush_interval_s``; SIGKILL loses what was not written yet (up to one interval).

    Spooled (``spool_dir`` set): each chunk is also appended to a local segment file, and a batch's
    ``on_logged`` callback (which sends its responses) runs only after the fsync of its lines, so a
    request that was answered is on local disk. Appends are group-committed: one fsync for every
    chunk queued meanwhile. At a flush the segment is closed and written as ``part-<segment id>``
    in each day it spans, then deleted; segments left by a killed process are replayed at the next
    start. Part names come from the segment, so a replay after a crash between writing and
    deleting rewrites the same objects instead of duplicating rows.
    """

    def __init__(self, root_uri: str, model_name: str, flush_rows: int = 50_000, flush_interval_s: float = 10.0,
                 metrics=None, spool_dir: str | None = None):
        self.root_uri = root_uri.rstrip("/")
        self.model_name = model_name
        self.flush_rows = max(1, flush_rows)
        self.flush_interval_s = flush_interval_s
        self.metrics = metrics
        self.spool_dir = os.path.join(spool_dir, model_name) if spool_dir else None
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: list = []  # buffered mode: Arrow tables not yet written
        self._pending_rows = 0
        self._segment: _Segment | None = None  # spooled mode: the segment being appended to
        self._sealed: list[_Segment] = []  # spooled mode: closed segments not yet written
        self._s3 = None
        self.rows_written = 0
        self.rows_replayed = 0

    @property
    def durable(self) -> bool:
        return self.spool_dir is not None

    def start(self) -> None:
        if self._thread is None:
            if self.spool_dir:
                from mlplatform_assets.lib.serving.errors import ServingConfigError

                try:
                    os.makedirs(self.spool_dir, exist_ok=True)
                except OSError as exc:
                    raise ServingConfigError(f"the prediction log spool {self.spool_dir} cannot be created "
                                             f"({exc.strerror})") from None
                if not os.access(self.spool_dir, os.W_OK | os.X_OK):
                    raise ServingConfigError(f"the prediction log spool {self.spool_dir} is not writable")
            self._thread = threading.Thread(target=self._run, name="mlplatform-predlog", daemon=True)
            self._thread.start()

    def submit(self, *chunks: LogChunk, on_logged=None) -> None:
        """Queue ``chunks``; ``on_logged()`` runs on the writer thread once they are spooled."""
        self._q.put((chunks, on_logged))

    def close(self, timeout: float = 60.0) -> None:
        """Drain everything submitted so far and write it. Safe to call twice."""
        if self._thread is None:
            return
        self._q.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("prediction log writer did not finish within %.0fs", timeout)
        self._thread = None

    # -- writer thread --------------------------------------------------------------------
    def _run(self) -> None:
        if self.spool_dir:
            self._replay()
        last_flush = time.monotonic()
        while True:
            timeout = max(0.05, self.flush_interval_s - (time.monotonic() - last_flush))
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            items = []
            stop = item is _STOP
            if item is not None and not stop:
                items.append(item)
                while True:  # everything queued meanwhile: one fsync for all of it
                    try:
                        more = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    items.append(more)
            if stop:
                while True:  # drain what arrived before the stop marker
                    try:
                        rest = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if rest is not _STOP:
                        items.append(rest)
            if items:
                self._accept(items)
            if stop:
                self._flush(final=True)
                return
            if self._pending_rows >= self.flush_rows or (
                    self._pending_rows and time.monotonic() - last_flush >= self.flush_interval_s):
                self._flush()
                last_flush = time.monotonic()
            elif not self._pending_rows:
                last_flush = time.monotonic()

    def _accept(self, items) -> None:
        if self.spool_dir:
            self._spool([chunk for chunks, _ in items for chunk in chunks])
        for _, on_logged in items:  # answers go out only now: their rows are on disk
            if on_logged is not None:
                on_logged()
        for chunks, _ in items:
            for chunk in chunks:
                self._add(chunk)
        segment = self._segment
        if segment is not None and segment.broken:  # later lines go to a new segment
            self._sealed.append(segment)
            self._segment = None

    def _spool(self, chunks) -> None:
        try:
            if self._segment is None:
                self._segment = _Segment.create(self.spool_dir)
            fh = self._segment.fh
            fh.write(b"".join(chunk.to_line() for chunk in chunks))
            fh.flush()
            os.fsync(fh.fileno())
        except Exception:  # noqa: BLE001 - answer anyway; the rows are still held in memory
            log.exception("prediction log: spooling %d rows failed; they are only held in memory",
                          sum(c.n for c in chunks))
            if self.metrics:
                self.metrics.log_spool_errors.inc()
            if self._segment is None:
                self._segment = _Segment(None, None)
            self._segment.broken = True

    def _add(self, chunk: LogChunk) -> None:
        try:
            table = self._to_table(chunk)
        except Exception:  # noqa: BLE001 - never let one bad chunk kill the writer
            log.exception("prediction log: could not convert %d rows", chunk.n)
            if self.metrics:
                self.metrics.log_dropped.inc(chunk.n)
            return
        if self.spool_dir:
            self._segment.tables.append(table)
            self._segment.rows += chunk.n
        else:
            self._pending.append(table)
        self._pending_rows += chunk.n

    def _replay(self) -> None:
        """Queue the segments that no live process holds (left by a killed one) for writing."""
        import fcntl

        for leaf in sorted(os.listdir(self.spool_dir)):
            if not leaf.startswith("segment-") or not leaf.endswith((".jsonl", ".jsonl.new")):
                continue
            path = os.path.join(self.spool_dir, leaf)
            try:
                fh = open(path, "rb")
            except FileNotFoundError:  # replayed by a sibling worker meanwhile
                continue
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer's segment
                fh.close()
                continue
            if leaf.endswith(".new"):  # killed before its first line
                os.unlink(path)
                fh.close()
                continue
            segment = _Segment(path, fh)
            bad = 0
            for line in fh.read().split(b"\n"):
                if not line:
                    continue
                try:
                    chunk = LogChunk.from_line(line)
                    segment.tables.append(self._to_table(chunk))
                except Exception:  # noqa: BLE001 - a line cut short by the kill
                    bad += 1
                    continue
                segment.rows += chunk.n
            if bad:
                log.warning("prediction log: %d unreadable line(s) in spool segment %s skipped", bad, leaf)
            log.info("prediction log: replaying %d spooled rows from %s", segment.rows, leaf)
            self.rows_replayed += segment.rows
            self._sealed.append(segment)
            self._pending_rows += segment.rows
        if self._sealed:
            self._flush()

    @staticmethod
    def _to_table(chunk: LogChunk):
        import numpy as np
        import pyarrow as pa

        meta = chunk.meta
        arrays = {
            "request_id": pa.array(meta["request_id"], pa.string()),
            "row": pa.array(meta["row"], pa.int32()),
            "timestamp": pa.array(np.asarray(meta["timestamp_us"], dtype="datetime64[us]"),
                                  pa.timestamp("us", tz="UTC")),
            "model_name": pa.array([meta["model_name"]] * chunk.n, pa.string()),
            "model_version": pa.array([meta["model_version"]] * chunk.n, pa.string()),
        }
        for name, vals in chunk.columns.items():
            kind = chunk.kinds[name]
            typ = _arrow_type(kind)
            if kind in ("double", "float"):
                arr = pa.array(np.asarray(vals, dtype=np.float64), pa.float64(), from_pandas=True).cast(typ)
            elif kind == "datetime":
                arr = pa.array(np.asarray(vals, dtype="datetime64[ns]"), typ, from_pandas=True)
            else:
                arr = pa.array(vals if not isinstance(vals, np.ndarray) else vals.tolist(), typ, from_pandas=True)
            arrays[input_column_name(name)] = arr
        preds = meta["prediction"]
        arrays["prediction"] = pa.array(preds, from_pandas=True)
        if meta.get("probabilities") is not None:
            proba = meta["probabilities"]
            arrays["probability"] = pa.array(proba[:, 1] if proba.shape[1] == 2 else
                                             np.full(chunk.n, np.nan), pa.float64(), from_pandas=True)
            arrays["probabilities"] = pa.FixedSizeListArray.from_arrays(
                pa.array(proba.ravel(), pa.float64()), proba.shape[1]).cast(pa.list_(pa.float64()))
        return pa.table(arrays)

    def _flush(self, final: bool = False) -> None:
        attempts = 3 if final else 1
        if self.spool_dir:
            if self._segment is not None:
                self._sealed.append(self._segment)
                self._segment = None
            for segment in list(self._sealed):
                # After a failure every day of the segment is written again: same names, no duplicates.
                if not self._write_tables(segment.tables, f"part-{segment.id}.parquet", attempts):
                    self._count_written(segment.rows)
                    self._pending_rows -= segment.rows
                    self._sealed.remove(segment)
                    segment.remove()
                elif final and segment.path:
                    log.error("prediction log: %d rows could not be written at shutdown; they stay in the spool "
                              "%s and are written at the next start", segment.rows, segment.path)
                elif final:
                    log.error("prediction log: %d rows (not spooled) could not be written at shutdown",
                              segment.rows)
                    if self.metrics:
                        self.metrics.log_dropped.inc(segment.rows)
            if final:
                for segment in self._sealed:
                    segment.release()
            return
        if not self._pending:
            return
        remaining = self._write_tables(self._pending, f"part-{uuid.uuid4().hex}.parquet", attempts)
        self._count_written(self._pending_rows - sum(t.num_rows for t in remaining))
        if remaining and not final:
            self._pending = remaining
            self._pending_rows = sum(t.num_rows for t in remaining)
            return
        if remaining:
            lost = sum(t.num_rows for t in remaining)
            log.error("prediction log: %d rows could not be written at shutdown", lost)
            if self.metrics:
                self.metrics.log_dropped.inc(lost)
        self._pending, self._pending_rows = [], 0

    def _count_written(self, rows: int) -> None:
        self.rows_written += rows
        if self.metrics and rows:
            self.metrics.log_rows.inc(rows)

    def _write_tables(self, tables, name: str, attempts: int) -> list:
        """Write ``tables`` as ``date=D/<name>`` per day; returns the day tables that failed."""
        import numpy as np
        import pyarrow as pa

        try:
            merged = [pa.concat_tables(tables, promote_options="permissive")]
        except Exception:  # noqa: BLE001
            log.exception("prediction log: incompatible chunks; writing them separately")
            merged = list(tables)
        failed = []
        for i, table in enumerate(merged):
            # Separately written incompatible tables need distinct names within a day.
            part_name = name if len(merged) == 1 else name.replace(".parquet", f"-{i}.parquet")
            days = (table.column("timestamp").cast(pa.int64()).to_numpy() // _US_PER_DAY)
            unique_days = np.unique(days)
            for day in unique_days:
                part = table.filter(pa.array(days == day)) if len(unique_days) > 1 else table
                date = _date.fromordinal(_EPOCH_ORDINAL + int(day)).isoformat()
                if not self._write(part, date, part_name, attempts):
                    failed.append(part)
        return failed

    def _write(self, table, date: str, name: str, attempts: int = 1) -> bool:
        import pyarrow.parquet as pq

        for attempt in range(attempts):
            try:
                if self.root_uri.startswith("s3://"):
                    bucket, prefix = _split_uri(self.root_uri)
                    key = "/".join(p for p in (prefix, self.model_name, f"date={date}", name) if p)
                    buf = io.BytesIO()
                    pq.write_table(table, buf)
                    if self._s3 is None:
                        self._s3 = _s3_client()
                    self._s3.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
                else:
                    directory = os.path.join(self.root_uri, self.model_name, f"date={date}")
                    os.makedirs(directory, exist_ok=True)
                    tmp = os.path.join(directory, f".{name}.tmp")
                    pq.write_table(table, tmp)
                    with open(tmp, "rb+") as fh:
                        os.fsync(fh.fileno())
                    os.replace(tmp, os.path.join(directory, name))
                return True
            except Exception:  # noqa: BLE001
                log.exception("prediction log: writing %d rows failed (attempt %d)", table.num_rows, attempt + 1)
                time.sleep(0.2 * (attempt + 1) if attempt + 1 < attempts else 0)
        return False


def _root_of(config_or_uri) -> str:
    if isinstance(config_or_uri, (str, os.PathLike)):
        return str(config_or_uri).rstrip("/")
    return str(config_or_uri.prediction_log_uri).rstrip("/")


def read_prediction_log(config_or_uri, model_name: str, date=None):
    """All logged predictions of ``model_name`` (one day if ``date`` is given), oldest first.

    ``config_or_uri``: a PlatformConfig or the log root (local path or ``s3://bucket/prefix``).
    ``date``: ``None``, a ``datetime.date`` or ``"YYYY-MM-DD"``. Returns an empty DataFrame when
    nothing was logged. Adds a ``date`` column (the partition).
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = _root_of(config_or_uri)
    want = None if date is None else (date.isoformat() if hasattr(date, "isoformat") else str(date))
    tables = []
    if root.startswith("s3://"):
        bucket, prefix = _split_uri(root)
        base = "/".join(p for p in (prefix, model_name) if p) + "/"
        if want:
            base += f"date={want}/"
        s3 = _s3_client()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                leaf = key.rsplit("/", 1)[-1]
                if not (leaf.startswith("part-") and leaf.endswith(".parquet")):
                    continue
                part_date = key.rsplit("/", 2)[-2].partition("=")[2]
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                t = pq.read_table(io.BytesIO(body))
                tables.append(t.append_column("date", pa.array([part_date] * t.num_rows, pa.string())))
    else:
        base = os.path.join(root, model_name)
        if not os.path.isdir(base):
            return pd.DataFrame()
        dirs = [f"date={want}"] if want else sorted(d for d in os.listdir(base) if d.startswith("date="))
        for d in dirs:
            path = os.path.join(base, d)
            if not os.path.isdir(path):
                continue
            for leaf in sorted(os.listdir(path)):
                if leaf.startswith("part-") and leaf.endswith(".parquet"):
                    t = pq.read_table(os.path.join(path, leaf))
                    tables.append(t.append_column("date", pa.array([d[5:]] * t.num_rows, pa.string())))
    if not tables:
        return pd.DataFrame()
    df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    return df.sort_values(["timestamp", "request_id", "row"], kind="stable").reset_index(drop=True)
