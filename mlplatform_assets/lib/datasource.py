"""Reading a spec's source one day (partition) at a time, from local paths or S3."""

from __future__ import annotations

import datetime as dt
import io
import re
from dataclasses import dataclass
from typing import Any, Iterable

import pandas as pd

from .spec import ModelSpec
from .storage import ObjectStore, split_s3_uri


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
    ts = pd.to_datetime(series, errors="coerce", utc=True)
    return ts.dt.tz_convert(None).dt.date


def available_days(spec: ModelSpec, s3_client: Any | None = None) -> list[dt.date]:
    """Days for which the source has data, sorted."""
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


def read_days(spec: ModelSpec, days: Iterable[dt.date], s3_client: Any | None = None) -> list[DayData]:
    """Read each requested day. A missing or unreadable day is returned with ``error`` set, not raised,
    so validation can report every bad day of a range at once."""
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
    day_col = _day_of(whole[spec.timestamp_column])
    for day in days:
        part = whole[day_col == day].reset_index(drop=True)
        # Byte size of a slice of one file: its share of the file, proportional to rows.
        share = len(part) / max(len(whole), 1)
        out.append(DayData(day, part, int(len(data) * share), spec.source.uri))
    return out
