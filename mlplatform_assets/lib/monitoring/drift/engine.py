"""The fast engine: per-column tests of Evidently's ``DataDriftPreset`` against a reference profile."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from mlplatform_assets.lib.monitoring.drift.column_types import NUMERICAL
from mlplatform_assets.lib.monitoring.drift.profile import (
    ColumnProfile,
    ReferenceProfile,
    _category_counts_of,
    _finite_float_values,
)
from mlplatform_assets.lib.monitoring.drift.stattests import (
    STATTESTS,
    ColumnData,
    select_default_stattest,
)


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------
def _json_float(x: Optional[float]) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class ColumnDrift:
    column: str
    kind: str
    stattest: str
    statistic: Optional[float]  # p-value for ks/chisquare/z, distance for the others
    threshold: float
    drifted: bool
    n_current: int  # non-null finite values of the current column used by the test
    n_reference: int
    role: str = "feature"

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["statistic"] = _json_float(self.statistic)
        d["threshold"] = _json_float(self.threshold)
        d["drifted"] = bool(self.drifted)
        return d


@dataclass
class DriftResult:
    columns: Dict[str, ColumnDrift]
    n_columns: int
    n_drifted: int
    drift_share: float  # share of drifted columns
    drift_share_threshold: float
    dataset_drift: bool
    n_current_rows: int

    @property
    def verdicts(self) -> Dict[str, bool]:
        return {k: v.drifted for k, v in self.columns.items()}

    @property
    def prediction_drift(self) -> Optional[ColumnDrift]:
        for c in self.columns.values():
            if c.role == "prediction":
                return c
        return None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "dataset_drift": bool(self.dataset_drift),
            "drift_share": _json_float(self.drift_share),
            "drift_share_threshold": _json_float(self.drift_share_threshold),
            "n_drifted": int(self.n_drifted),
            "n_columns": int(self.n_columns),
            "n_current_rows": int(self.n_current_rows),
            "columns": [c.to_dict() for c in self.columns.values()],
        }


# --------------------------------------------------------------------------------------
# Per-column test
# --------------------------------------------------------------------------------------
def _resolve_override(
    column: str,
    kind: str,
    stattest: Optional[str],
    threshold: Optional[float],
    per_column_overrides: Optional[Mapping[str, Any]],
) -> Tuple[Optional[str], Optional[float]]:
    st, thr = stattest, threshold
    if per_column_overrides and column in per_column_overrides:
        ov = per_column_overrides[column]
        if isinstance(ov, str):
            st = ov
        elif isinstance(ov, (tuple, list)):
            st, thr = ov[0], (ov[1] if len(ov) > 1 else thr)
        elif isinstance(ov, Mapping):
            st = ov.get("stattest", ov.get("method", st))
            thr = ov.get("threshold", thr)
        else:
            raise TypeError(f"override for column '{column}' must be a str, (stattest, threshold) or a mapping")
    if st is not None:
        if st not in STATTESTS:
            raise ValueError(f"unknown stattest {st!r} for column '{column}'; supported: {sorted(STATTESTS)}")
        if kind not in STATTESTS[st].kinds:
            raise ValueError(
                f"stattest {st!r} isn't applicable to {kind} column '{column}' "
                f"(allowed: {list(STATTESTS[st].kinds)})"
            )
    return st, (None if thr is None else float(thr))


def _current_data(prof: ColumnProfile, series: pd.Series) -> ColumnData:
    """The current column in the form the tests consume (sorted finite values, or category counts)."""
    if prof.kind == NUMERICAL:
        vals, owned = _finite_float_values(series, prof.name, "current")
        if owned:
            vals.sort()
        else:
            vals = np.sort(vals)
        return ColumnData(prof, int(vals.size), current_sorted=vals)
    keys, counts = _category_counts_of(series)
    return ColumnData(prof, int(counts.sum()), current_keys=keys, current_counts=counts)


def _column_drift(
    prof: ColumnProfile,
    series: pd.Series,
    stattest: Optional[str],
    threshold: Optional[float],
    empty_column: str,
) -> ColumnDrift:
    name, kind = prof.name, prof.kind
    if prof.n == 0:
        raise ValueError(f"An empty column '{name}' was provided for drift calculation in the reference dataset.")
    data = _current_data(prof, series)
    if data.n_current == 0:
        if empty_column == "raise":
            raise ValueError(f"An empty column '{name}' was provided for drift calculation in the current dataset.")
        thr = threshold if threshold is not None else (
            STATTESTS[stattest].default_threshold if stattest else float("nan"))
        return ColumnDrift(name, kind, "empty_current", None, thr, empty_column == "drift", 0, prof.n, prof.role)

    test = STATTESTS[stattest or select_default_stattest(kind, prof.n, data.n_values())]
    threshold = test.default_threshold if threshold is None else threshold
    value = test.compute(data)
    return ColumnDrift(name, kind, test.name, value, float(threshold), test.is_drift(value, threshold),
                       data.n_current, prof.n, prof.role)


def detect_drift(
    profile: ReferenceProfile,
    current_df: pd.DataFrame,
    drift_share_threshold: float = 0.5,
    per_column_overrides: Optional[Mapping[str, Any]] = None,
    *,
    stattest: Optional[str] = None,
    threshold: Optional[float] = None,
    columns: Optional[Sequence[str]] = None,
    empty_column: str = "drift",
) -> DriftResult:
    """Run the per-column drift tests of Evidently's ``DataDriftPreset`` against ``profile``.

    * ``stattest`` / ``threshold``: global policy override (e.g. ``stattest="psi", threshold=0.2``);
      a threshold alone keeps the automatically selected test.
    * ``per_column_overrides``: ``{column: {"stattest": "psi", "threshold": 0.2}}`` (or a
      ``(stattest, threshold)`` tuple, or just the stattest name); wins over the global one.
    * ``columns``: restrict to a subset of the profiled columns (default: all of them).
    * ``empty_column``: what to do with a current column that has no non-null value:
      ``"drift"`` (default, drifted=True), ``"skip"`` (drifted=False, still counted) or
      ``"raise"`` (Evidently's behaviour: ValueError).

    Raises ``ValueError`` if the current data has no rows or lacks a profiled column.
    """
    if empty_column not in ("drift", "skip", "raise"):
        raise ValueError("empty_column must be 'drift', 'skip' or 'raise'")
    names = list(profile.columns) if columns is None else list(columns)
    unknown = [c for c in names if c not in profile.columns]
    if unknown:
        raise ValueError(f"column(s) {unknown} are not in the reference profile")
    if len(current_df) == 0:
        raise ValueError(
            "current data is empty (0 rows): drift cannot be computed "
            "(Evidently raises 'An empty column ... was provided for drift calculation in the current dataset')"
        )
    missing = [c for c in names if c not in current_df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} of the reference profile are missing from the current data")
    if per_column_overrides:
        stray = [c for c in per_column_overrides if c not in profile.columns]
        if stray:
            raise ValueError(f"per_column_overrides name column(s) {stray} that are not in the reference profile")

    results: Dict[str, ColumnDrift] = {}
    for name in names:
        prof = profile.columns[name]
        st, thr = _resolve_override(name, prof.kind, stattest, threshold, per_column_overrides)
        results[name] = _column_drift(prof, current_df[name], st, thr, empty_column)

    n_columns = len(results)
    n_drifted = sum(1 for r in results.values() if r.drifted)
    share = n_drifted / n_columns if n_columns else 0.0
    return DriftResult(
        columns=results,
        n_columns=n_columns,
        n_drifted=n_drifted,
        drift_share=share,
        drift_share_threshold=float(drift_share_threshold),
        dataset_drift=bool(n_columns > 0 and share >= drift_share_threshold),
        n_current_rows=int(len(current_df)),
    )
