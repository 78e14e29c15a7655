"""The reference side of drift, summarised once at training time: :class:`ReferenceProfile`.

Sorted non-null finite values (numerical) or category counts (categorical) per column: enough to run
every registered test exactly. Saved as one ``.npz`` (arrays + JSON header, no pickle).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from mlplatform_assets.lib.data.storage import atomic_path
from mlplatform_assets.lib.monitoring.drift.column_types import (
    CATEGORICAL,
    KINDS,
    NUMERICAL,
)

PROFILE_FORMAT_VERSION = 1
_JSON_SAFE_CATEGORY_TYPES = (str, bool, int, float)


def _to_python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class ColumnProfile:
    """Reference statistics of one column (enough to run every supported test exactly)."""

    name: str
    kind: str  # "numerical" | "categorical"
    role: str = "feature"  # "feature" | "prediction"
    n_rows: int = 0  # rows in the reference frame (incl. missing)
    n: int = 0  # non-null, finite values actually used by the tests
    n_unique: int = 0
    std: Optional[float] = None  # numerical: np.std(values, ddof=0) computed like Evidently
    values: Optional[np.ndarray] = None  # numerical: sorted float64 non-null finite values
    categories: Optional[List[Any]] = None  # categorical: distinct values (python scalars)
    counts: Optional[np.ndarray] = None  # categorical: int64 counts aligned with categories

    def category_counts(self) -> Tuple[List[Any], np.ndarray]:
        """Distinct values and their counts (also for numerical columns, from the sorted values)."""
        if self.kind == CATEGORICAL:
            assert self.categories is not None and self.counts is not None
            return list(self.categories), self.counts
        assert self.values is not None
        uniq, counts = _sorted_unique_counts(self.values)
        return uniq.tolist(), counts

    def __eq__(self, other: object) -> bool:  # arrays make the dataclass default unusable
        if not isinstance(other, ColumnProfile):
            return NotImplemented
        scalars = ("name", "kind", "role", "n_rows", "n", "n_unique", "categories")
        if any(getattr(self, a) != getattr(other, a) for a in scalars):
            return False
        if (self.std is None) != (other.std is None) or (
            self.std is not None and float(self.std).hex() != float(other.std).hex()
        ):
            return False
        for a in ("values", "counts"):
            x, y = getattr(self, a), getattr(other, a)
            if (x is None) != (y is None):
                return False
            if x is not None and (x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes()):
                return False
        return True


@dataclass
class ReferenceProfile:
    """Reference statistics for a set of columns, computed once from the reference data."""

    columns: Dict[str, ColumnProfile]
    n_rows: int
    format_version: int = PROFILE_FORMAT_VERSION
    metadata: Dict[str, Any] = field(default_factory=dict)

    @property
    def numerical_columns(self) -> List[str]:
        return [c.name for c in self.columns.values() if c.kind == NUMERICAL]

    @property
    def categorical_columns(self) -> List[str]:
        return [c.name for c in self.columns.values() if c.kind == CATEGORICAL]

    @property
    def prediction_column(self) -> Optional[str]:
        for c in self.columns.values():
            if c.role == "prediction":
                return c.name
        return None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReferenceProfile):
            return NotImplemented
        return (
            self.n_rows == other.n_rows
            and self.format_version == other.format_version
            and self.metadata == other.metadata
            and list(self.columns) == list(other.columns)
            and all(self.columns[k] == other.columns[k] for k in self.columns)
        )

    # -- persistence: one .npz, no pickle (JSON header stored as a uint8 array) -------------
    def save(self, path: str | os.PathLike) -> str:
        """Write the profile atomically to ``path`` (a ``.npz``; arrays + JSON header, no pickle)."""
        path = os.fspath(path)
        header: Dict[str, Any] = {
            "format": "mlplatform.drift.ReferenceProfile",
            "format_version": self.format_version,
            "n_rows": self.n_rows,
            "metadata": self.metadata,
            "columns": [],
        }
        arrays: Dict[str, np.ndarray] = {}
        for i, col in enumerate(self.columns.values()):
            entry: Dict[str, Any] = {
                "name": col.name,
                "kind": col.kind,
                "role": col.role,
                "n_rows": col.n_rows,
                "n": col.n,
                "n_unique": col.n_unique,
                # float.hex round-trips bit-exactly (JSON repr would too, but be explicit)
                "std": None if col.std is None else float(col.std).hex(),
            }
            if col.values is not None:
                arrays[f"values_{i}"] = np.ascontiguousarray(col.values, dtype=np.float64)
            if col.counts is not None:
                arrays[f"counts_{i}"] = np.ascontiguousarray(col.counts, dtype=np.int64)
            if col.categories is not None:
                cats = []
                for v in col.categories:
                    v = _to_python(v)
                    if not isinstance(v, _JSON_SAFE_CATEGORY_TYPES):
                        raise TypeError(
                            f"column '{col.name}': category {v!r} of type {type(v).__name__} cannot be saved; "
                            "only str, int, float and bool categories are supported"
                        )
                    if isinstance(v, float):
                        cats.append({"f": v.hex()})
                    elif isinstance(v, bool):
                        cats.append({"b": v})
                    elif isinstance(v, int):
                        cats.append({"i": str(v)})
                    else:
                        cats.append({"s": v})
                entry["categories"] = cats
            header["columns"].append(entry)
        arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)

        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ReferenceProfile":
        with np.load(os.fspath(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode("utf-8"))
            if header.get("format") != "mlplatform.drift.ReferenceProfile":
                raise ValueError(f"{path} is not a drift reference profile")
            if header.get("format_version") != PROFILE_FORMAT_VERSION:
                raise ValueError(f"unsupported profile format version {header.get('format_version')}")
            columns: Dict[str, ColumnProfile] = {}
            for i, e in enumerate(header["columns"]):
                cats = None
                if "categories" in e:
                    cats = []
                    for c in e["categories"]:
                        if "f" in c:
                            cats.append(float.fromhex(c["f"]))
                        elif "b" in c:
                            cats.append(bool(c["b"]))
                        elif "i" in c:
                            cats.append(int(c["i"]))
                        else:
                            cats.append(c["s"])
                values = data[f"values_{i}"] if f"values_{i}" in data.files else None
                counts = data[f"counts_{i}"] if f"counts_{i}" in data.files else None
                columns[e["name"]] = ColumnProfile(
                    name=e["name"],
                    kind=e["kind"],
                    role=e["role"],
                    n_rows=int(e["n_rows"]),
                    n=int(e["n"]),
                    n_unique=int(e["n_unique"]),
                    std=None if e["std"] is None else float.fromhex(e["std"]),
                    values=values,
                    categories=cats,
                    counts=counts,
                )
        return cls(
            columns=columns,
            n_rows=int(header["n_rows"]),
            format_version=int(header["format_version"]),
            metadata=header.get("metadata") or {},
        )


def _sorted_unique_counts(sorted_values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """np.unique(..., return_counts=True) for an already sorted array, in O(n)."""
    if sorted_values.size == 0:
        return sorted_values[:0], np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    counts = np.diff(np.append(starts, sorted_values.size)).astype(np.int64)
    return sorted_values[starts], counts


def _n_unique_sorted(sorted_values: np.ndarray) -> int:
    if sorted_values.size == 0:
        return 0
    return int(np.count_nonzero(sorted_values[1:] != sorted_values[:-1])) + 1


def _finite_float_values(series: pd.Series, column: str, where: str) -> Tuple[np.ndarray, bool]:
    """Non-null finite values as float64 (Evidently: replace([-inf, inf], nan).dropna()).

    Returns ``(values, owned)``; ``owned`` is False when ``values`` may share memory with ``series``.
    """
    if not pd.api.types.is_numeric_dtype(series.dtype):
        raise ValueError(f"Column '{column}' in {where} dataset should contain numerical values only.")
    arr = series.to_numpy(dtype=np.float64, na_value=np.nan)
    mask = np.isfinite(arr)
    if mask.all():
        return arr, False
    return arr[mask], True


def _category_counts_of(series: pd.Series) -> Tuple[List[Any], np.ndarray]:
    """Distinct non-null values and counts (Evidently: value_counts after dropping NaN/inf)."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(series.dtype, pd.CategoricalDtype):
        arr = series.to_numpy()
        if arr.dtype.kind == "f":
            arr = arr[np.isfinite(arr)]
        elif arr.dtype == object:
            arr = pd.Series(arr).replace([-np.inf, np.inf], np.nan).dropna().to_numpy()
        uniq, counts = np.unique(arr, return_counts=True)
        return uniq.tolist(), counts.astype(np.int64)
    vc = series.value_counts(dropna=True, sort=False)
    if isinstance(series.dtype, pd.CategoricalDtype):
        vc = vc[vc > 0]
    keys = [_to_python(k) for k in vc.index.tolist()]
    counts = vc.to_numpy(dtype=np.int64)
    # inf values inside an object/categorical column are dropped by Evidently as well
    keep = [not (isinstance(k, float) and math.isinf(k)) for k in keys]
    if not all(keep):
        keys = [k for k, ok in zip(keys, keep) if ok]
        counts = counts[np.asarray(keep, dtype=bool)]
    return keys, counts


def _profile_column(series: pd.Series, name: str, kind: str, role: str) -> ColumnProfile:
    if kind == NUMERICAL:
        vals, _ = _finite_float_values(series, name, "reference")
        # Evidently: norm = max(float(np.std(reference_data)), 0.001) on the pandas Series in
        # original row order (pandas nanops, ddof=0): compute it the same way, before sorting.
        std = float(np.std(pd.Series(vals, copy=False))) if vals.size else None
        sorted_vals = np.sort(vals)
        return ColumnProfile(
            name=name,
            kind=NUMERICAL,
            role=role,
            n_rows=int(len(series)),
            n=int(sorted_vals.size),
            n_unique=_n_unique_sorted(sorted_vals),
            std=std,
            values=sorted_vals,
        )
    if kind == CATEGORICAL:
        cats, counts = _category_counts_of(series)
        return ColumnProfile(
            name=name,
            kind=CATEGORICAL,
            role=role,
            n_rows=int(len(series)),
            n=int(counts.sum()),
            n_unique=len(cats),
            categories=cats,
            counts=counts,
        )
    raise ValueError(f"unknown column kind {kind!r} for column '{name}' (expected one of {KINDS})")


def build_reference_profile(
    df: pd.DataFrame,
    numerical_columns: Sequence[str] = (),
    categorical_columns: Sequence[str] = (),
    prediction_column: Optional[str] = None,
    prediction_kind: str = NUMERICAL,
    metadata: Optional[Mapping[str, Any]] = None,
) -> ReferenceProfile:
    """Compute the reference statistics once (training time).

    ``prediction_column`` (the model's reference predictions, e.g. a column added to ``df``)
    is profiled like any other column, with ``role="prediction"`` and kind ``prediction_kind``,
    so prediction drift goes through exactly the same code path.
    """
    wanted: List[Tuple[str, str, str]] = [(c, NUMERICAL, "feature") for c in numerical_columns]
    wanted += [(c, CATEGORICAL, "feature") for c in categorical_columns]
    if prediction_column is not None:
        if prediction_kind not in KINDS:
            raise ValueError(f"prediction_kind must be one of {KINDS}, got {prediction_kind!r}")
        wanted.append((prediction_column, prediction_kind, "prediction"))
    seen = set()
    for name, _, _ in wanted:
        if name in seen:
            raise ValueError(f"column '{name}' is listed more than once")
        seen.add(name)
    missing = [name for name, _, _ in wanted if name not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not found in the reference data")
    columns = {name: _profile_column(df[name], name, kind, role) for name, kind, role in wanted}
    return ReferenceProfile(columns=columns, n_rows=int(len(df)), metadata=dict(metadata or {}))
