"""The Source port: reading a spec's source one day (partition) at a time.

A source kind implements :class:`Source` (list its days, read days, fingerprint days for the new-data
sensor) and registers a factory in ``SOURCE_KINDS``; :func:`source_for` picks the implementation from the
spec in this one place. ``FileSource`` (below) reads local paths or S3; ``sql_source.SqlSource`` reads a
database table or query through SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import pandas as pd

from mlplatform_assets.lib.data.storage import ObjectStore, split_s3_uri
from mlplatform_assets.lib.data.timestamps import parse_utc, unparsable
from mlplatform_assets.lib.spec import ModelSpec


class SourceError(Exception):
    """The source cannot be listed or read at all (unreachable database, bad query). The message never
    contains credentials."""


@dataclass
class DayData:
    """One day's raw rows, or why there are none."""

    day: dt.date
    frame: pd.DataFrame
    n_bytes: int
    location: str
    error: str | None = None  # e.g. "file not found", "unreadable: ..."


def _daily_regex(pattern: str) -> re.Pattern[str]:
    parts = pattern.split("{date}")
    return re.compile("^" + r"(\d{4}-\d{2}-\d{2})".join(re.escape(p) for p in parts) + "$")


def _source_store(spec: ModelSpec, s3_client: Any | None) -> ObjectStore:
    uri = spec.source.uri
    if spec.source.layout == "single_file":
        if uri.startswith("s3://"):
            bucket, key = split_s3_uri(uri)
            parent = key.rsplit("/", 1)[0] if "/" in key else ""
            return ObjectStore(f"s3://{bucket}/{parent}".rstrip("/"), s3_client)
        from pathlib import Path

        return ObjectStore(str(Path(uri).parent))
    return ObjectStore(uri, s3_client)


def _parse(data: bytes, fmt: str) -> pd.DataFrame:
    if not data:
        return pd.DataFrame()
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    try:
        return pd.read_csv(io.BytesIO(data))
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _day_of(series: pd.Series) -> pd.Series:
    return parse_utc(series).dt.tz_convert(None).dt.date


def _file_available_days(spec: ModelSpec, s3_client: Any | None) -> list[dt.date]:
    store = _source_store(spec, s3_client)
    if spec.source.layout == "daily_files":
        rx = _daily_regex(spec.source.file_pattern)
        days = set()
        for key in store.list():
            m = rx.match(key)
            if m:
                try:
                    days.add(dt.date.fromisoformat(m.group(1)))
                except ValueError:
                    continue
        return sorted(d for d in days if d >= spec.partition_start)
    name = spec.source.uri.rstrip("/").rsplit("/", 1)[-1]
    if not store.exists(name):
        return []
    df = _parse(store.read_bytes(name), spec.source.format or "csv")
    if spec.timestamp_column not in df.columns:
        return []
    return sorted(d for d in set(_day_of(df[spec.timestamp_column]).dropna()) if d >= spec.partition_start)


def _file_read_days(spec: ModelSpec, days: Iterable[dt.date], s3_client: Any | None) -> list[DayData]:
    days = list(days)
    store = _source_store(spec, s3_client)
    fmt = spec.source.format or "csv"
    out: list[DayData] = []
    if spec.source.layout == "daily_files":
        for day in days:
            key = spec.source.file_pattern.format(date=day.isoformat())
            location = store.uri(key)
            try:
                data = store.read_bytes(key)
            except FileNotFoundError:
                out.append(DayData(day, pd.DataFrame(), 0, location, "file not found"))
                continue
            except Exception as exc:  # S3 NoSuchKey and friends
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("NoSuchKey", "404"):
                    out.append(DayData(day, pd.DataFrame(), 0, location, "file not found"))
                    continue
                raise
            try:
                frame = _parse(data, fmt)
            except Exception as exc:  # corrupt file: report, do not crash the range
                out.append(DayData(day, pd.DataFrame(), len(data), location, f"unreadable {fmt} file: {exc}"))
                continue
            out.append(DayData(day, frame, len(data), location))
        return out
    name = spec.source.uri.rstrip("/").rsplit("/", 1)[-1]
    data = store.read_bytes(name)
    whole = _parse(data, fmt)
    if spec.timestamp_column not in whole.columns:
        return [DayData(d, whole.iloc[0:0], 0, spec.source.uri,
                        f"timestamp column {spec.timestamp_column!r} not in source") for d in days]
    parsed = parse_utc(whole[spec.timestamp_column])
    bad = unparsable(whole[spec.timestamp_column], parsed)
    if len(bad):
        # Such a row belongs to no day: it would silently drop out of every one. Refuse the read instead.
        why = (f"{len(bad)} row(s) of the source have a {spec.timestamp_column!r} that is not a timestamp "
               f"(e.g. {str(bad.iloc[0])[:60]!r}); fix or drop them")
        return [DayData(d, whole.iloc[0:0], 0, spec.source.uri, why) for d in days]
    day_col = parsed.dt.tz_convert(None).dt.date
    for day in days:
        part = whole[day_col == day].reset_index(drop=True)
        # Byte size of a slice of one file: its share of the file, proportional to rows.
        share = len(part) / max(len(whole), 1)
        out.append(DayData(day, part, int(len(data) * share), spec.source.uri))
    return out


# --- fingerprints (for the new-data sensor) ------------------------------------------------

Fingerprints = dict[str, dict[str, str]]  # {day ISO: {"fp": content fingerprint, "stat": cheap change marker}}


def sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def frame_fingerprint(df: pd.DataFrame) -> str:
    """Content fingerprint of one day's rows (values and column names)."""
    hashed = pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()
    return sha16(hashed + ",".join(map(str, df.columns)).encode())


def _list_objects(uri: str, s3_client: Any):  # noqa: ANN202 - iterator of (key, stat, reader)
    if uri.startswith("s3://"):
        bucket, prefix = split_s3_uri(uri)
        strip = len(prefix) + 1 if prefix else 0
        for page in s3_client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            for obj in page.get("Contents", []):
                etag = str(obj.get("ETag", "")).strip('"')
                yield obj["Key"][strip:], f"etag:{etag}:{obj.get('Size')}", None
        return
    base = Path(uri)
    if not base.is_dir():
        return
    for p in sorted(base.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            yield str(p.relative_to(base)), f"{st.st_size}:{st.st_mtime_ns}", p.read_bytes


# --- the port ---------------------------------------------------------------------------------

class Source(Protocol):
    def available_days(self) -> list[dt.date]:
        """Days on or after the spec's partition_start for which the source has data, sorted."""

    def read_days(self, days: Iterable[dt.date]) -> list[DayData]:
        """Read each requested day. A missing or unreadable day is returned with ``error`` set, not raised,
        so validation can report every bad day of a range at once."""

    def fingerprints(self, previous: Fingerprints) -> Fingerprints:
        """``{day: {"fp", "stat"}}`` for every source day. A day whose stat equals its ``previous`` stat keeps
        its previous fingerprint, so content is only re-read when the cheap marker changed."""

    def label(self) -> str:
        """Where the data comes from, safe to record and display (``${VAR}`` unexpanded, no credentials)."""


class FileSource:
    """One CSV/Parquet file holding every day, or one file per day; local paths or S3."""

    def __init__(self, spec: ModelSpec, s3_client: Any | None = None) -> None:
        self.spec = spec
        self.s3_client = s3_client

    def label(self) -> str:
        return str(self.spec.as_written("source", "uri"))

    def available_days(self) -> list[dt.date]:
        return _file_available_days(self.spec, self.s3_client)

    def read_days(self, days: Iterable[dt.date]) -> list[DayData]:
        return _file_read_days(self.spec, days, self.s3_client)

    def fingerprints(self, previous: Fingerprints) -> Fingerprints:
        """Local files are fingerprinted by content (SHA-256), S3 objects by ETag (the content MD5 for
        single-part uploads); days of a single file by their rows, re-read only when the file changed."""
        spec, src = self.spec, self.spec.source
        out: Fingerprints = {}
        if src.layout == "daily_files":
            rx = _daily_regex(src.file_pattern)
            for key, stat, read in _list_objects(src.uri, self.s3_client):
                m = rx.match(key)
                if not m:
                    continue
                try:
                    day = dt.date.fromisoformat(m.group(1))
                except ValueError:
                    continue
                if day < spec.partition_start:
                    continue
                d = day.isoformat()
                prev = previous.get(d)
                if prev and prev.get("stat") == stat:
                    out[d] = prev
                elif stat.startswith("etag:"):
                    out[d] = {"fp": stat[5:21], "stat": stat}
                else:
                    out[d] = {"fp": sha16(read()), "stat": stat}
            return out
        uri = src.uri.rstrip("/")
        parent, name = uri.rsplit("/", 1) if "/" in uri else (".", uri)
        listing = {k: (stat, read) for k, stat, read in _list_objects(parent, self.s3_client) if k == name}
        if name not in listing:
            return {}
        stat = listing[name][0]
        unchanged = {d: v for d, v in previous.items() if v.get("stat") == stat}
        if unchanged and len(unchanged) == len(previous):
            return dict(previous)
        for day_data in self.read_days(self.available_days()):
            out[day_data.day.isoformat()] = {"fp": frame_fingerprint(day_data.frame), "stat": stat}
        return out


def _file_source(spec: ModelSpec, s3_client: Any | None) -> Source:
    return FileSource(spec, s3_client)


def _sql_source(spec: ModelSpec, s3_client: Any | None) -> Source:
    from mlplatform_assets.lib.data.sql_source import (
        SqlSource,  # SQLAlchemy is only imported for specs that read a database
    )

    return SqlSource(spec)


# The one place a spec's source kind picks its implementation: adding a kind is one module plus one entry.
SOURCE_KINDS: dict[str, Callable[[ModelSpec, Any], Source]] = {"file": _file_source, "sql": _sql_source}


def source_kind(spec: ModelSpec) -> str:
    return "sql" if getattr(spec.source, "sql", None) is not None else "file"


def source_for(spec: ModelSpec, s3_client: Any | None = None) -> Source:
    """The Source implementation for ``spec`` (``s3_client`` is only used by S3 file sources)."""
    return SOURCE_KINDS[source_kind(spec)](spec, s3_client)


def source_label(spec: ModelSpec) -> str:
    """The spec's source as it may be recorded and displayed (no expanded variables, no credentials)."""
    return source_for(spec).label()


def available_days(spec: ModelSpec, s3_client: Any | None = None) -> list[dt.date]:
    """Days for which the spec's source has data, sorted."""
    return source_for(spec, s3_client).available_days()


def read_days(spec: ModelSpec, days: Iterable[dt.date], s3_client: Any | None = None) -> list[DayData]:
    """Read each requested day from the spec's source (see :meth:`Source.read_days`)."""
    return source_for(spec, s3_client).read_days(days)
