"""Data checks on one day's raw rows, and the cleaning that turns raw rows into validated rows."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from mlplatform_assets.lib.data.timestamps import parse_utc
from mlplatform_assets.lib.spec import ColumnRuleSpec, ModelSpec

CHECK_NAMES = ("non_empty", "required_columns", "dtypes", "target_domain", "null_share", "duplicate_share",
               "finite_values", "timestamps_in_partition")

CHECK_DESCRIPTIONS = {
    "non_empty": "The partition has at least validation.min_rows rows.",
    "required_columns": "The timestamp, target and every declared feature column are present.",
    "dtypes": "Numeric features and a regression target are numeric; the timestamp parses.",
    "target_domain": "The target is present and every label/value is inside its declared domain.",
    "null_share": "No feature or target column has a null share above validation.max_null_share "
                  "(columns with their own max_null_share rule are checked by that rule).",
    "duplicate_share": "The share of fully duplicated rows is at most validation.max_duplicate_share.",
    "finite_values": "No numeric feature (and no regression target) holds inf or -inf.",
    "timestamps_in_partition": "Every timestamp falls on the partition's day (UTC).",
}

# The per-column rules of validation.columns report under two asset checks: the block-severity ones under a
# blocking check, the warn-severity ones under a check that is never blocking.
COLUMN_RULES_CHECK = "column_rules"
COLUMN_RULES_WARN_CHECK = "column_rules_warn"
COLUMN_RULES_DESCRIPTIONS = {
    COLUMN_RULES_CHECK: "Every per-column rule of severity block (validation.columns) holds.",
    COLUMN_RULES_WARN_CHECK: "Every per-column rule of severity warn (validation.columns) holds; a failure is "
                             "reported and never blocks.",
}


def check_names(spec: ModelSpec) -> tuple[str, ...]:
    """The checks a day of ``spec`` goes through: the global ones, plus one per rule severity the spec uses."""
    severities = {e.severity for e in spec.validation.columns}
    return (*CHECK_NAMES, *([COLUMN_RULES_CHECK] if "block" in severities else []),
            *([COLUMN_RULES_WARN_CHECK] if "warn" in severities else []))


def check_description(name: str) -> str:
    return CHECK_DESCRIPTIONS.get(name) or COLUMN_RULES_DESCRIPTIONS[name]


@dataclass
class CheckOutcome:
    """One check's finding on one day. ``name`` is a global check name or ``<rule>:<column>`` for a per-column
    rule; a failed ``warn`` outcome is reported but never blocks or quarantines the day."""

    name: str
    passed: bool
    message: str
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: str = "block"

    @property
    def check(self) -> str:
        """The asset check this outcome reports under."""
        if self.name in CHECK_NAMES:
            return self.name
        return COLUMN_RULES_CHECK if self.severity == "block" else COLUMN_RULES_WARN_CHECK

    @property
    def blocks(self) -> bool:
        return not self.passed and self.severity == "block"


def declared_columns(spec: ModelSpec) -> tuple[list[str], list[str]]:
    return list(spec.features.numeric or []), list(spec.features.categorical or [])


def infer_feature_columns(spec: ModelSpec, df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numeric and categorical feature columns: declared ones, plus inferred ones when ``infer`` is on."""
    numeric, categorical = declared_columns(spec)
    if spec.features.infer:
        skip = {spec.target.column, spec.timestamp_column, *spec.features.exclude, *numeric, *categorical,
                *spec.evaluation.sensitive_columns}  # a sensitive slice attribute is never a feature
        for col in df.columns:
            if col in skip:
                continue
            if ptypes.is_bool_dtype(df[col]) or not ptypes.is_numeric_dtype(df[col]):
                categorical.append(col)
            else:
                numeric.append(col)
    return numeric, categorical


def check_day(spec: ModelSpec, df: pd.DataFrame, day: dt.date, read_error: str | None = None) -> list[CheckOutcome]:
    """Run every check on the frame of partition ``day``. Each failing message names the column and the problem."""
    v = spec.validation
    numeric, categorical = infer_feature_columns(spec, df)
    target = spec.target.column
    out: list[CheckOutcome] = []

    n = len(df)
    if read_error:
        # A day without a (readable) file is non_empty's finding alone: the other checks have nothing to check,
        # and failing them too would bury the one cause under consequences.
        out.append(CheckOutcome("non_empty", False, f"no data: {read_error}", {"rows": 0}))
        out.extend(CheckOutcome(name, True, "no data to check") for name in CHECK_NAMES[1:])
        out.extend(CheckOutcome(f"{rule}:{e.column}", True, "no data to check", {}, e.severity)
                   for e in v.columns for rule in e.rules)
        return out
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
    # Parsed once, as clean_day stores it: naive timestamps are UTC.
    timestamps = parse_utc(df[spec.timestamp_column]) if spec.timestamp_column in df.columns and n else None
    if timestamps is not None:
        unparsable = int(timestamps.isna().sum() - df[spec.timestamp_column].isna().sum())
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
            arr = arr[np.isfinite(arr)]  # infinities are finite_values' finding
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
    # With delayed labels a missing target is expected, not a data-quality problem. Columns with their own
    # max_null_share rule are checked by that rule instead.
    null_checked = [*numeric, *categorical] if spec.target.labels_delayed else [target, *numeric, *categorical]
    null_checked = [c for c in null_checked if c not in v.own_null_share_columns()]
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
    out.append(_finite_values(spec, df, numeric))
    out.append(_timestamps_in_partition(spec, df, timestamps, day))
    for entry in v.columns:
        out.extend(_column_rule(entry, rule, threshold, df) for rule, threshold in entry.rules.items())
    return out


def _plain(value: Any) -> Any:
    """A data value as plain JSON (numpy scalars unwrapped, anything else exotic as text)."""
    value = value.item() if isinstance(value, np.generic) else value
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _column_rule(entry: ColumnRuleSpec, rule: str, threshold: Any, df: pd.DataFrame) -> CheckOutcome:
    """One rule of ``validation.columns`` on one day: the failing row count and share, and an example value."""
    col, name = entry.column, f"{rule}:{entry.column}"

    def outcome(passed: bool, message: str, **metadata: Any) -> CheckOutcome:
        return CheckOutcome(name, passed, f"{col}: {message}", {"rule": rule, "column": col, **metadata},
                            entry.severity)

    n = len(df)
    if not n:  # a day without rows (or without a file) is non_empty's finding alone
        return outcome(True, "no rows to check", failing_rows=0)
    if col not in df.columns:
        return outcome(False, "column is missing")
    values = df[col]
    if rule == "max_null_share":
        nulls = int(values.isna().sum())
        share = nulls / n
        return outcome(share <= threshold, f"{nulls} of {n} rows null (share {share:.4f}"
                       + (f" > {threshold:g})" if share > threshold else f" <= {threshold:g})"),
                       failing_rows=nulls, share=share)
    present = values.dropna()
    if rule in ("min", "max"):
        if ptypes.is_bool_dtype(values) or not ptypes.is_numeric_dtype(values):
            return outcome(False, f"{rule} needs a numeric column, got {values.dtype}")
        bad = present < threshold if rule == "min" else present > threshold
        example = present[bad].min() if rule == "min" else present[bad].max()  # the worst offender
        relation = "below min" if rule == "min" else "above max"
    elif rule == "allowed":
        numbers = [a for a in threshold if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(numbers) == len(threshold) and ptypes.is_numeric_dtype(values) and not ptypes.is_bool_dtype(values):
            bad = ~present.isin(numbers)  # 1 and 1.0 are the same value
        else:
            bad = ~present.astype(str).isin({str(a) for a in threshold})
        unknown = list(dict.fromkeys(present[bad].tolist()))
        example = unknown[0] if unknown else None
        relation = f"outside allowed {list(threshold)} ({len(unknown)} distinct value(s))"
    else:  # unique: a row fails when its non-null value already appeared earlier in the day
        bad = present.duplicated()
        example = present[bad].iloc[0] if bad.any() else None
        relation = "repeating an earlier value"
    failing = int(bad.sum())
    if not failing:
        return outcome(True, f"every value passes {rule}", failing_rows=0, share=0.0)
    label = f"{threshold:g}" if rule in ("min", "max") else ""
    return outcome(False, f"{failing} of {n} rows {relation}{(' ' + label) if label else ''}, e.g. "
                          f"{_plain(example)!r}", failing_rows=failing, share=failing / n, example=_plain(example))


def _finite_values(spec: ModelSpec, df: pd.DataFrame, numeric: list[str]) -> CheckOutcome:
    # inf passes every other check but breaks imputation and fitting of any window that includes the day.
    columns = list(numeric)
    if spec.task == "regression":
        columns.append(spec.target.column)
    counts: dict[str, dict[str, int]] = {}
    for col in columns:
        if col not in df.columns or ptypes.is_bool_dtype(df[col]) or not ptypes.is_numeric_dtype(df[col]):
            continue  # missing or non-numeric columns are required_columns' and dtypes' findings
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        pos, neg = int(np.isposinf(values).sum()), int(np.isneginf(values).sum())
        if pos or neg:
            counts[col] = {"inf": pos, "-inf": neg}
    if not counts:
        return CheckOutcome("finite_values", True, "all numeric values finite", {"non_finite": {}})
    listed = ", ".join(f"{col}{' (target)' if col == spec.target.column else ''}: "
                       + " and ".join(f"{n} {kind}" for kind, n in c.items() if n) for col, c in counts.items())
    return CheckOutcome("finite_values", False, f"non-finite values in {listed}", {"non_finite": counts})


def _timestamps_in_partition(spec: ModelSpec, df: pd.DataFrame, timestamps: pd.Series | None,
                             day: dt.date) -> CheckOutcome:
    # Daily partitions are UTC days (defs.lifecycle.daily_partitions). Unparsable timestamps are the
    # dtypes check's finding; rows of other days would otherwise be trained on as if from this one.
    col = spec.timestamp_column
    if timestamps is None:
        return CheckOutcome("timestamps_in_partition", True, "no timestamps to check", {"off_day_rows": 0})
    start = pd.Timestamp(day, tz="UTC")
    off_day = timestamps.notna() & ((timestamps < start) | (timestamps >= start + pd.Timedelta(days=1)))
    n_off = int(off_day.sum())
    if not n_off:
        return CheckOutcome("timestamps_in_partition", True, f"every {col} is on {day}", {"off_day_rows": 0})
    example = str(df[col][off_day].iloc[0])
    return CheckOutcome("timestamps_in_partition", False,
                        f"{n_off} of {len(df)} rows have {col} outside {day} (UTC), e.g. {example}",
                        {"off_day_rows": n_off, "example": example})


def clean_day(spec: ModelSpec, df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    """Validated rows: typed columns, rows without a timestamp dropped, exact duplicates dropped.

    Rows without a label are kept (they are scored and monitored); training drops them."""
    cols = [spec.timestamp_column, *numeric, *categorical, spec.target.column]
    # Slice columns that are no feature (e.g. a sensitive attribute) are kept for evaluation only.
    cols += [s.column for s in spec.evaluation.slices if s.column not in cols and s.column in df.columns]
    out = df[cols].copy()
    out[spec.timestamp_column] = parse_utc(out[spec.timestamp_column]).dt.tz_convert(None)
    for c in numeric:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    for c in categorical:
        # Categories are strings; missing stays missing (None) so imputation can treat it explicitly.
        out[c] = out[c].astype(object).where(out[c].notna(), None).map(lambda x: x if x is None else str(x))
    out = out.dropna(subset=[spec.timestamp_column])
    out = out.drop_duplicates().sort_values(spec.timestamp_column, kind="stable").reset_index(drop=True)
    return out
