"""Data checks on one day's raw rows, and the cleaning that turns raw rows into validated rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from .spec import ModelSpec

CHECK_NAMES = ("non_empty", "required_columns", "dtypes", "target_domain", "null_share", "duplicate_share")

CHECK_DESCRIPTIONS = {
    "non_empty": "The partition has at least validation.min_rows rows.",
    "required_columns": "The timestamp, target and every declared feature column are present.",
    "dtypes": "Numeric features and a regression target are numeric; the timestamp parses.",
    "target_domain": "The target is present and every label/value is inside its declared domain.",
    "null_share": "No feature or target column has a null share above validation.max_null_share.",
    "duplicate_share": "The share of fully duplicated rows is at most validation.max_duplicate_share.",
}


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)


def declared_columns(spec: ModelSpec) -> tuple[list[str], list[str]]:
    return list(spec.features.numeric or []), list(spec.features.categorical or [])


def infer_feature_columns(spec: ModelSpec, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns: declared ones, plus inferred ones when ``infer`` is on."""
    numeric, categorical = declared_columns(spec)
    if spec.features.infer:
        skip = {spec.target.column, spec.timestamp_column, *spec.features.exclude, *numeric, *categorical}
        for col in df.columns:
            if col in skip:
                continue
            if ptypes.is_bool_dtype(df[col]) or not ptypes.is_numeric_dtype(df[col]):
                categorical.append(col)
            else:
                numeric.append(col)
    return numeric, categorical


def check_day(spec: ModelSpec, df: pd.DataFrame, read_error: str | None = None) -> list[CheckOutcome]:
    """Run every check on one day's frame. Each failing message names the column and the problem."""
    v = spec.validation
    numeric, categorical = infer_feature_columns(spec, df)
    target = spec.target.column
    out: list[CheckOutcome] = []

    n = len(df)
    if read_error:
        out.append(CheckOutcome("non_empty", False, f"no data: {read_error}", {"rows": 0}))
    else:
        out.append(CheckOutcome("non_empty", n >= v.min_rows,
                                f"{n} rows" + ("" if n >= v.min_rows else f" (< min_rows {v.min_rows})"), {"rows": n}))

    required = [spec.timestamp_column, target, *numeric, *categorical]
    missing = [c for c in required if c not in df.columns]
    out.append(CheckOutcome("required_columns", not missing,
                            f"missing columns: {missing}" if missing else "all required columns present",
                            {"missing": missing}))

    bad_types: list[str] = []
    for col in numeric:
        if col in df.columns and not (ptypes.is_numeric_dtype(df[col]) and not ptypes.is_bool_dtype(df[col])):
            if not df[col].isna().all():
                bad_types.append(f"{col} is {df[col].dtype}, expected numeric")
    if spec.task == "regression" and target in df.columns and not ptypes.is_numeric_dtype(df[target]):
        if not df[target].isna().all():
            bad_types.append(f"{target} (target) is {df[target].dtype}, expected numeric")
    if spec.timestamp_column in df.columns and n:
        ts = pd.to_datetime(df[spec.timestamp_column], errors="coerce", utc=True)
        unparsable = int(ts.isna().sum() - df[spec.timestamp_column].isna().sum())
        if unparsable:
            bad_types.append(f"{spec.timestamp_column} has {unparsable} values that are not timestamps")
    out.append(CheckOutcome("dtypes", not bad_types, "; ".join(bad_types) or "dtypes as expected",
                            {"problems": bad_types}))

    domain_problems: list[str] = []
    if target in df.columns and n:
        y = df[target].dropna()
        if y.empty:
            if not spec.target.labels_delayed:
                domain_problems.append(f"target {target} is null in every row")
        elif spec.task == "classification":
            if spec.target.classes is not None:
                allowed = {str(c) for c in spec.target.classes}
                unknown = sorted({str(x) for x in y.unique()} - allowed)
                if unknown:
                    domain_problems.append(f"target {target} has labels outside {sorted(allowed)}: {unknown[:10]}")
        elif ptypes.is_numeric_dtype(y):
            arr = y.to_numpy(dtype=float)
            if not np.isfinite(arr).all():
                domain_problems.append(f"target {target} has infinite values")
            if spec.target.min_value is not None and (arr < spec.target.min_value).any():
                domain_problems.append(f"target {target} has values below min_value {spec.target.min_value}")
            if spec.target.max_value is not None and (arr > spec.target.max_value).any():
                domain_problems.append(f"target {target} has values above max_value {spec.target.max_value}")
    elif target not in df.columns:
        domain_problems.append(f"target {target} is missing")
    out.append(CheckOutcome("target_domain", not domain_problems and n > 0,
                            "; ".join(domain_problems) or ("target in domain" if n else "no rows to check"),
                            {"problems": domain_problems}))

    shares = {}
    # With delayed labels a missing target is expected, not a data-quality problem.
    null_checked = [*numeric, *categorical] if spec.target.labels_delayed else [target, *numeric, *categorical]
    for col in null_checked:
        if col in df.columns and n:
            shares[col] = float(df[col].isna().mean())
    too_null = {c: round(s, 4) for c, s in shares.items() if s > v.max_null_share}
    out.append(CheckOutcome("null_share", not too_null and n > 0,
                            (f"null share above {v.max_null_share}: {too_null}" if too_null
                             else f"max null share {max(shares.values(), default=0.0):.4f}"),
                            {"max_null_share": max(shares.values(), default=0.0), "over_limit": too_null}))

    dup_share = float(df.duplicated().mean()) if n and len(df.columns) else 0.0
    out.append(CheckOutcome("duplicate_share", dup_share <= v.max_duplicate_share,
                            f"duplicate share {dup_share:.4f}" + (
                                f" above limit {v.max_duplicate_share}" if dup_share > v.max_duplicate_share else ""),
                            {"duplicate_share": dup_share}))
    return out


def clean_day(spec: ModelSpec, df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Validated rows: typed columns, rows without a timestamp dropped, exact duplicates dropped.

    Rows without a label are kept (they are scored and monitored); training drops them."""
    cols = [spec.timestamp_column, *numeric, *categorical, spec.target.column]
    out = df[cols].copy()
    out[spec.timestamp_column] = pd.to_datetime(out[spec.timestamp_column], errors="coerce", utc=True).dt.tz_convert(None)
    for c in numeric:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    for c in categorical:
        # Categories are strings; missing stays missing (None) so imputation can treat it explicitly.
        out[c] = out[c].astype(object).where(out[c].notna(), None).map(lambda x: x if x is None else str(x))
    out = out.dropna(subset=[spec.timestamp_column])
    out = out.drop_duplicates().sort_values(spec.timestamp_column, kind="stable").reset_index(drop=True)
    return out
