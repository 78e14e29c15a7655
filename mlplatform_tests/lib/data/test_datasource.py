"""The file Source (lib/data/datasource.py) on real files: daily files and one file for all days, missing and
unreadable days, and the new-data fingerprints."""

import datetime as dt
import os

import pandas as pd
import pytest

from mlplatform_assets.lib.data import datasource
from mlplatform_assets.lib.spec import parse_spec
from mlplatform_tests.conftest import small_spec_yaml

D1, D2, D3 = dt.date(2026, 6, 1), dt.date(2026, 6, 2), dt.date(2026, 6, 3)


def spec_for(uri, pattern: str = "{date}.parquet"):
    text = small_spec_yaml(str(uri)).replace('file_pattern: "{date}.parquet"', f'file_pattern: "{pattern}"')
    return parse_spec(text, "m.yaml", variables={})


def rows(day: dt.date, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"event_time": [pd.Timestamp(day) + pd.Timedelta(hours=h) for h in range(n)],
                         "value": range(n)})


def test_daily_files_list_days_from_partition_start_matching_the_pattern(tmp_path):
    for day in (dt.date(2026, 5, 31), D1, D3):  # the first is before partition_start
        rows(day).to_csv(tmp_path / f"orders_{day}.csv", index=False)
    (tmp_path / "orders_2026-13-01.csv").write_text("x\n")  # not a date
    (tmp_path / "notes.txt").write_text("x")
    spec = spec_for(tmp_path, "orders_{date}.csv")
    assert spec.source.format == "csv" and spec.source.layout == "daily_files"
    assert datasource.available_days(spec) == [D1, D3]
    assert datasource.source_label(spec) == str(tmp_path)
    assert datasource.source_kind(spec) == "file" and isinstance(datasource.source_for(spec), datasource.FileSource)


def test_reading_days_reports_missing_and_unreadable_days_instead_of_raising(tmp_path):
    rows(D1).to_parquet(tmp_path / f"{D1}.parquet", index=False)
    (tmp_path / f"{D3}.parquet").write_bytes(b"not parquet at all")
    got = {d.day: d for d in datasource.read_days(spec_for(tmp_path), [D1, D2, D3])}
    assert got[D1].error is None and len(got[D1].frame) == 3
    assert got[D1].n_bytes == os.path.getsize(tmp_path / f"{D1}.parquet")
    assert got[D1].location == str(tmp_path / f"{D1}.parquet")
    assert got[D2].error == "file not found" and got[D2].frame.empty and got[D2].n_bytes == 0
    assert got[D3].error.startswith("unreadable parquet file: ") and got[D3].n_bytes == 18


def test_one_file_is_split_into_utc_days(tmp_path):
    # Mixed representations in one column (offset, naive = UTC, trailing Z) each parse on their own.
    frame = pd.DataFrame({"event_time": ["2026-06-01T23:30:00+00:00", "2026-06-02T00:30:00+01:00",  # 23:30Z
                                         "2026-06-02 08:00:00", "2026-05-20T08:00:00Z"],
                          "value": [1, 2, 3, 4]})
    path = tmp_path / "all.csv"
    frame.to_csv(path, index=False)
    spec = spec_for(path)
    assert spec.source.layout == "single_file" and spec.source.format == "csv"
    assert datasource.available_days(spec) == [D1, D2]
    got = {d.day: d for d in datasource.read_days(spec, [D1, D2, D3])}
    assert list(got[D1].frame["value"]) == [1, 2]
    assert list(got[D2].frame["value"]) == [3]
    assert got[D3].frame.empty and got[D3].error is None
    assert got[D1].n_bytes + got[D2].n_bytes < path.stat().st_size  # shares of the file by rows


def test_a_row_of_one_file_whose_timestamp_does_not_parse_is_an_error_per_day_not_a_lost_row(tmp_path):
    path = tmp_path / "all.csv"
    pd.DataFrame({"event_time": ["2026-06-01T10:00:00Z", "not a time", "2026-06-02 08:00:00"],
                  "value": [1, 2, 3]}).to_csv(path, index=False)
    got = datasource.read_days(spec_for(path), [D1, D2])
    assert [d.error for d in got] == ["1 row(s) of the source have a 'event_time' that is not a timestamp "
                                      "(e.g. 'not a time'); fix or drop them"] * 2
    assert all(d.frame.empty for d in got)


def test_one_file_without_the_timestamp_column_is_an_error_per_day(tmp_path):
    path = tmp_path / "all.csv"
    pd.DataFrame({"when": ["2026-06-01"], "value": [1]}).to_csv(path, index=False)
    spec = spec_for(path)
    assert datasource.available_days(spec) == []
    (day,) = datasource.read_days(spec, [D1])
    assert day.error == "timestamp column 'event_time' not in source"


def test_fingerprints_follow_content_and_reuse_unchanged_stats(tmp_path):
    spec = spec_for(tmp_path)
    rows(D1).to_parquet(tmp_path / f"{D1}.parquet", index=False)
    rows(D2).to_parquet(tmp_path / f"{D2}.parquet", index=False)
    source = datasource.source_for(spec)
    first = source.fingerprints({})
    assert set(first) == {str(D1), str(D2)} and first[str(D1)]["fp"] != first[str(D2)]["fp"]
    # An unchanged stat keeps the previous fingerprint without reading the file (a planted one proves it).
    planted = {**first, str(D1): {**first[str(D1)], "fp": "planted"}}
    assert source.fingerprints(planted)[str(D1)]["fp"] == "planted"
    rows(D1, n=4).to_parquet(tmp_path / f"{D1}.parquet", index=False)
    second = source.fingerprints(first)
    assert second[str(D1)]["fp"] != first[str(D1)]["fp"] and second[str(D2)] == first[str(D2)]


@pytest.mark.parametrize("frame_a, frame_b, same", [
    (rows(D1), rows(D1), True),
    (rows(D1), rows(D1).rename(columns={"value": "other"}), False),
    (rows(D1), rows(D1, n=2), False),
])
def test_frame_fingerprint_covers_values_and_column_names(frame_a, frame_b, same):
    assert (datasource.frame_fingerprint(frame_a) == datasource.frame_fingerprint(frame_b)) is same
