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

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


class LogChunk:
    """What the predict thread hands over for one batch group: plain lists/arrays, no Arrow yet."""

    __slots__ = ("columns", "kinds", "n", "meta")

    def __init__(self, columns: dict, kinds: dict, n: int, meta: dict):
        self.columns, self.kinds, self.n, self.meta = columns, kinds, n, meta


class PredictionLogWriter:
    def __init__(self, root_uri: str, model_name: str, flush_rows: int = 50_000, flush_interval_s: float = 10.0,
                 metrics=None):
        self.root_uri = root_uri.rstrip("/")
        self.model_name = model_name
        self.flush_rows = max(1, flush_rows)
        self.flush_interval_s = flush_interval_s
        self.metrics = metrics
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending: list = []  # Arrow tables not yet written
        self._pending_rows = 0
        self._s3 = None
        self.rows_written = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mlplatform-predlog", daemon=True)
            self._thread.start()

    def submit(self, chunk: LogChunk) -> None:
        self._q.put(chunk)

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
        last_flush = time.monotonic()
        while True:
            timeout = max(0.05, self.flush_interval_s - (time.monotonic() - last_flush))
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                while True:  # drain what arrived before the stop marker
                    try:
                        rest = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if rest is not _STOP:
                        self._add(rest)
                self._flush(final=True)
                return
            if item is not None:
                self._add(item)
            if self._pending_rows >= self.flush_rows or (
                    self._pending_rows and time.monotonic() - last_flush >= self.flush_interval_s):
                self._flush()
                last_flush = time.monotonic()
            elif not self._pending_rows:
                last_flush = time.monotonic()

    def _add(self, chunk: LogChunk) -> None:
        try:
            self._pending.append(self._to_table(chunk))
            self._pending_rows += chunk.n
        except Exception:  # noqa: BLE001 - never let one bad chunk kill the writer
            log.exception("prediction log: could not convert %d rows", chunk.n)
            if self.metrics:
                self.metrics.log_dropped.inc(chunk.n)

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
        if not self._pending:
            return
        import numpy as np
        import pyarrow as pa

        try:
            table = pa.concat_tables(self._pending, promote_options="permissive")
        except Exception:  # noqa: BLE001
            log.exception("prediction log: incompatible chunks; writing them separately")
            tables = list(self._pending)
        else:
            tables = [table]
        remaining = []
        for table in tables:
            days = (table.column("timestamp").cast(pa.int64()).to_numpy() // _US_PER_DAY)
            for day in np.unique(days):
                part = table.filter(pa.array(days == day)) if len(np.unique(days)) > 1 else table
                date = _date.fromordinal(_EPOCH_ORDINAL + int(day)).isoformat()
                if not self._write(part, date, attempts=3 if final else 1):
                    remaining.append(part)
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

    def _write(self, table, date: str, attempts: int = 1) -> bool:
        import pyarrow.parquet as pq

        name = f"part-{uuid.uuid4().hex}.parquet"
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
                self.rows_written += table.num_rows
                if self.metrics:
                    self.metrics.log_rows.inc(table.num_rows)
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
