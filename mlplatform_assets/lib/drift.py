"""Fast data/prediction drift engine with Evidently 0.7.23 ``DataDriftPreset`` semantics.

The reference side is summarised ONCE (at training time) into a :class:`ReferenceProfile`
(sorted non-null numeric values, category counts, std, ...).  At monitoring time
:func:`detect_drift` only has to look at the current data, column by column, straight
from NumPy arrays.  The statistical tests, thresholds and the rule that picks a test for a
column are replicated from Evidently's source (``evidently/legacy/calculations/stattests``):

=====================  ==============================  ===================  ===========================
reference rows*        column kind / unique values**   test                 drift when
=====================  ==============================  ===================  ===========================
<= 1000                numerical, n_unique > 5         ``ks`` (K-S p)       p_value <= 0.05
<= 1000                numerical, 3..5 unique          ``chisquare``        p_value <  0.05
<= 1000                numerical, <= 2 unique          ``z`` (Z-test p)     p_value <  0.05
<= 1000                categorical, > 2 unique         ``chisquare``        p_value <  0.05
<= 1000                categorical, <= 2 unique        ``z``                p_value <  0.05
> 1000                 numerical, n_unique > 5         ``wasserstein``      W1 / max(std_ref, .001) >= 0.1
> 1000                 numerical, <= 5 unique          ``jensenshannon``    JS distance >= 0.1
> 1000                 categorical                     ``jensenshannon``    JS distance >= 0.1
=====================  ==============================  ===================  ===========================

\* reference rows = non-null, finite values of the column in the reference data.
\** number of unique non-null values in reference and current together.

``psi`` (PSI >= 0.1 by default) is available as an explicit override.  Dataset drift:
``n_drifted / n_columns >= drift_share`` (default 0.5).

Differences from Evidently (documented on purpose):

* Evidently raises ``ValueError`` (and produces no report at all) when a current column has no
  non-null value.  Here such a column gets ``stattest="empty_current"`` and, with the default
  ``empty_column="drift"``, is reported as drifted (a feature that stopped arriving is a
  problem); ``empty_column="raise"`` reproduces Evidently's behaviour.
* An empty current partition (0 rows) raises ``ValueError("current data is empty ...")``, which is
  what Evidently effectively does (it raises for the first column).

This module never imports Dagster; Evidently is imported lazily by the report helpers only.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy.spatial import distance as _distance
from scipy.stats import chisquare as _chisquare
from scipy.stats import ks_2samp as _ks_2samp
from scipy.stats import norm as _norm

from .storage import atomic_path

__all__ = [
    "NUMERICAL",
    "CATEGORICAL",
    "STATTESTS",
    "ColumnProfile",
    "ReferenceProfile",
    "ColumnDrift",
    "DriftResult",
    "build_reference_profile",
    "detect_drift",
    "infer_column_type",
    "infer_column_types",
    "evidently_report_html",
    "evidently_column_results",
    "evidently_column_verdicts",
]

NUMERICAL = "numerical"
CATEGORICAL = "categorical"
_KINDS = (NUMERICAL, CATEGORICAL)

PROFILE_FORMAT_VERSION = 1

# name -> (allowed kinds, default threshold, comparison) -- from evidently/legacy/calculations/stattests/*.py
STATTESTS: Dict[str, Tuple[Tuple[str, ...], float, str]] = {
    "ks": ((NUMERICAL,), 0.05, "p<="),  # ks_stattest.py: p_value <= threshold
    "chisquare": ((CATEGORICAL,), 0.05, "p<"),  # chisquare_stattest.py: p_value < threshold
    "z": ((CATEGORICAL,), 0.05, "p<"),  # z_stattest.py: p_value < threshold
    "wasserstein": ((NUMERICAL,), 0.1, ">="),  # wasserstein_distance_norm.py: value >= threshold
    "jensenshannon": ((CATEGORICAL, NUMERICAL), 0.1, ">="),  # jensenshannon.py
    "psi": ((CATEGORICAL, NUMERICAL), 0.1, ">="),  # psi.py
}

# Evidently's display names (what snapshot.dict() shows as "method")
STATTEST_DISPLAY_NAMES = {
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
    "psi": "PSI",
}

_SMALL_REFERENCE_ROWS = 1000  # registry.py: reference_data.shape[0] <= 1000
_FEW_UNIQUE_NUMERIC = 5  # registry.py: n_values <= 5
_BINARY = 2  # registry.py: chi if n_values > 2 else z
_HISTOGRAM_MIN_UNIQUE = 20  # utils.get_binned_data: numerical and n_vals > 20 -> sturges histogram
_JSON_SAFE_CATEGORY_TYPES = (str, bool, int, float)


# --------------------------------------------------------------------------------------
# Column type inference (evidently/core/datasets.py: infer_column_type)
# --------------------------------------------------------------------------------------
INTEGER_CARDINALITY_LIMIT = 10  # evidently/core/datasets.py


def infer_column_type(column: pd.Series) -> str:
    """Column type exactly as Evidently 0.7 infers it without a DataDefinition.

    Returns one of ``numerical``, ``categorical``, ``text``, ``datetime``, ``list``, ``unknown``.
    (float -> numerical; int -> categorical when <= 10 unique values else numerical;
    string/object of str -> text when unique > 50% of non-null values else categorical;
    bool/category -> categorical; datetime -> datetime.)
    """
    name = column.dtype.name
    if name.startswith("float"):
        return NUMERICAL
    if name.startswith("int"):
        return CATEGORICAL if column.nunique() <= INTEGER_CARDINALITY_LIMIT else NUMERICAL
    if name in ("string", "str"):
        return "text" if column.nunique() > column.count() * 0.5 else CATEGORICAL
    if name == "object":
        without_na = column.dropna()
        if without_na.count() == 0:
            return "unknown"
        first, last = without_na.iloc[0], without_na.iloc[-1]
        if isinstance(first, str) and isinstance(last, str):
            return "text" if column.nunique() > column.count() * 0.5 else CATEGORICAL
        if isinstance(first, (list, tuple)) and isinstance(last, (list, tuple)):
            return "list"
        return "unknown"
    if name in ("bool", "category"):
        return CATEGORICAL
    if name.startswith("datetime"):
        return "datetime"
    return "unknown"


def infer_column_types(df: pd.DataFrame, exclude: Iterable[str] = ()) -> Tuple[List[str], List[str]]:
    """``(numerical_columns, categorical_columns)`` as Evidently would infer them from ``df``.

    Text, datetime, list and unknown columns are left out (the preset does not test them
    with the numeric/categorical tests; text drift is out of scope here).
    """
    excluded = set(exclude)
    numerical: List[str] = []
    categorical: List[str] = []
    for col in df.columns:
        if col in excluded:
            continue
        kind = infer_column_type(df[col])
        if kind == NUMERICAL:
            numerical.append(col)
        elif kind == CATEGORICAL:
            categorical.append(col)
    return numerical, categorical


# --------------------------------------------------------------------------------------
# Reference profile
# --------------------------------------------------------------------------------------
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
    raise ValueError(f"unknown column kind {kind!r} for column '{name}' (expected one of {_KINDS})")


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
        if prediction_kind not in _KINDS:
            raise ValueError(f"prediction_kind must be one of {_KINDS}, got {prediction_kind!r}")
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
# Statistical tests (replicating evidently/legacy/calculations/stattests/*.py)
# --------------------------------------------------------------------------------------
def _is_drift(stattest: str, value: float, threshold: float) -> bool:
    op = STATTESTS[stattest][2]
    if op == "p<=":
        return bool(value <= threshold)
    if op == "p<":
        return bool(value < threshold)
    return bool(value >= threshold)


def _wasserstein_sorted(ref: np.ndarray, cur: np.ndarray) -> float:
    """``scipy.stats.wasserstein_distance(ref, cur)`` for two SORTED arrays, in linear time.

    Uses the quantile form W1 = int_0^1 |Q_ref(t) - Q_cur(t)| dt.  Both quantile functions are
    step functions with breakpoints j/n and i/m; scaled by lcm(n, m) the breakpoints are the
    integers j*a and i*b (a = m/g, b = n/g, g = gcd(n, m)), so their merged order is computed
    arithmetically -- no search and no sort of the data.  Equal to scipy's CDF-form sum up to
    floating-point rounding (~1e-15 relative).
    """
    n, m = int(ref.size), int(cur.size)
    g = math.gcd(n, m)
    a, b = m // g, n // g  # ref breakpoint j -> j*a, cur breakpoint i -> i*b, total n*a == m*b
    bounds = np.empty(n + m, dtype=np.int64)
    j = np.arange(1, n + 1, dtype=np.int64)
    val = j * a
    pos = (val - 1) // b  # current breakpoints strictly before
    pos += j - 1
    bounds[pos] = val
    del j, val, pos
    i = np.arange(1, m + 1, dtype=np.int64)
    val = i * b
    pos = val // a  # reference breakpoints at or before (ties: reference first)
    pos += i - 1
    bounds[pos] = val
    del i, val, pos
    prev = np.empty_like(bounds)
    prev[0] = 0
    prev[1:] = bounds[:-1]
    bounds -= prev  # interval lengths (0 for tied breakpoints)
    idx = prev // a
    np.minimum(idx, n - 1, out=idx)  # only zero-length trailing intervals can point past the end
    diff = ref[idx]
    np.floor_divide(prev, b, out=idx)
    np.minimum(idx, m - 1, out=idx)
    diff -= cur[idx]
    del idx, prev
    np.abs(diff, out=diff)
    return float(np.dot(diff, bounds)) / float(n * a)


def _align_counts(
    ref_keys: Sequence[Any], ref_counts: np.ndarray, cur_keys: Sequence[Any], cur_counts: np.ndarray
) -> Tuple[List[Any], np.ndarray, np.ndarray]:
    """Union of categories (reference order first, then unseen current ones) with aligned counts."""
    index = {k: i for i, k in enumerate(ref_keys)}
    keys = list(ref_keys)
    cur_aligned = np.zeros(len(keys), dtype=np.int64)
    extra: List[int] = []
    for k, c in zip(cur_keys, cur_counts):
        i = index.get(k)
        if i is None:
            index[k] = len(keys)
            keys.append(k)
            extra.append(int(c))
        else:
            cur_aligned[i] += int(c)
    if extra:
        cur_aligned = np.concatenate([cur_aligned, np.asarray(extra, dtype=np.int64)])
        ref_aligned = np.concatenate([np.asarray(ref_counts, dtype=np.int64), np.zeros(len(extra), dtype=np.int64)])
    else:
        ref_aligned = np.asarray(ref_counts, dtype=np.int64)
    return keys, ref_aligned, cur_aligned


def _chisquare_p(ref_counts: np.ndarray, cur_counts: np.ndarray, n_ref: int, n_cur: int) -> float:
    k_norm = n_cur / n_ref
    f_exp = [float(c) * k_norm for c in ref_counts]
    f_obs = [int(c) for c in cur_counts]
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(_chisquare(f_obs, f_exp)[1])


def _z_p(keys: List[Any], ref_counts: np.ndarray, cur_counts: np.ndarray, n_ref: int, n_cur: int) -> float:
    ref_present = ref_counts > 0
    cur_present = cur_counts > 0
    if ref_present.sum() == 1 and cur_present.sum() == 1 and np.array_equal(ref_present, cur_present):
        return 1.0
    first = sorted(keys)[0]
    i0 = keys.index(first)
    # proportion of values different from the (sorted) first key, as in proportions_diff_z_stat_ind
    n1, n2 = n_ref, n_cur
    p1 = float(n_ref - int(ref_counts[i0])) / n1
    p2 = float(n_cur - int(cur_counts[i0])) / n2
    big_p = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(big_p * (1 - big_p) * (1.0 / n1 + 1.0 / n2))
        return float(2 * (1 - _norm.cdf(np.abs(z))))


def _feel_zeroes(p: np.ndarray) -> np.ndarray:
    nz = p[p != 0]
    m = nz.min()
    np.place(p, p == 0, m / 10**6 if m <= 0.0001 else 0.0001)
    return p


def _sturges_edges(lo: float, hi: float, size: int) -> np.ndarray:
    """np.histogram_bin_edges(x, bins='sturges') from min, max and size of x."""
    first, last = lo, hi
    if first == last:
        first, last = first - 0.5, last + 0.5
    width = (hi - lo) / (np.log2(size) + 1.0)
    n_bins = int(np.ceil((last - first) / width)) if width else 1
    return np.linspace(first, last, n_bins + 1, endpoint=True, dtype=np.result_type(first, last, np.float64))


def _hist_counts_sorted(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """np.histogram(values, edges)[0] for sorted values (last bin closed on the right)."""
    left = np.searchsorted(sorted_values, edges[:-1], side="left")
    right = np.searchsorted(sorted_values, edges[1:], side="left")
    right[-1] = np.searchsorted(sorted_values, edges[-1], side="right")
    return (right - left).astype(np.int64)


def _binned_percents(
    prof: ColumnProfile,
    cur_sorted: Optional[np.ndarray],
    cur_keys: Optional[List[Any]],
    cur_counts: Optional[np.ndarray],
    n_cur: int,
    feel_zeroes: bool,
) -> Tuple[np.ndarray, np.ndarray]:
    """evidently utils.get_binned_data."""
    if prof.kind == NUMERICAL and prof.n_unique > _HISTOGRAM_MIN_UNIQUE:
        assert prof.values is not None and cur_sorted is not None
        lo = min(prof.values[0], cur_sorted[0])
        hi = max(prof.values[-1], cur_sorted[-1])
        edges = _sturges_edges(float(lo), float(hi), prof.n + n_cur)
        ref_p = _hist_counts_sorted(prof.values, edges) / prof.n
        cur_p = _hist_counts_sorted(cur_sorted, edges) / n_cur
    else:
        ref_keys, ref_counts = prof.category_counts()
        assert cur_keys is not None and cur_counts is not None
        _, r, c = _align_counts(ref_keys, ref_counts, cur_keys, cur_counts)
        ref_p = r / prof.n
        cur_p = c / n_cur
    if feel_zeroes:
        ref_p = _feel_zeroes(ref_p.astype(np.float64))
        cur_p = _feel_zeroes(cur_p.astype(np.float64))
    return ref_p, cur_p


def _select_default_stattest(kind: str, n_ref: int, n_values: int) -> str:
    """evidently/legacy/calculations/stattests/registry.py::_get_default_stattest."""
    if n_ref <= _SMALL_REFERENCE_ROWS:
        if kind == NUMERICAL:
            if n_values <= _FEW_UNIQUE_NUMERIC:
                return "chisquare" if n_values > _BINARY else "z"
            return "ks"
        return "chisquare" if n_values > _BINARY else "z"
    if kind == NUMERICAL:
        return "jensenshannon" if n_values <= _FEW_UNIQUE_NUMERIC else "wasserstein"
    return "jensenshannon"


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
        if kind not in STATTESTS[st][0]:
            raise ValueError(
                f"stattest {st!r} isn't applicable to {kind} column '{column}' "
                f"(allowed: {list(STATTESTS[st][0])})"
            )
    return st, (None if thr is None else float(thr))


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

    cur_sorted: Optional[np.ndarray] = None
    cur_keys: Optional[List[Any]] = None
    cur_counts: Optional[np.ndarray] = None
    if kind == NUMERICAL:
        vals, owned = _finite_float_values(series, name, "current")
        if owned:
            vals.sort()
            cur_sorted = vals
        else:
            cur_sorted = np.sort(vals)
        n_cur = int(cur_sorted.size)
    else:
        cur_keys, cur_counts = _category_counts_of(series)
        n_cur = int(cur_counts.sum())

    if n_cur == 0:
        if empty_column == "raise":
            raise ValueError(f"An empty column '{name}' was provided for drift calculation in the current dataset.")
        drifted = empty_column == "drift"
        thr = threshold if threshold is not None else (STATTESTS[stattest][1] if stattest else float("nan"))
        return ColumnDrift(name, kind, "empty_current", None, thr, drifted, 0, prof.n, prof.role)

    def cur_categories() -> Tuple[List[Any], np.ndarray]:
        nonlocal cur_keys, cur_counts
        if cur_keys is None:
            assert cur_sorted is not None
            u, c = _sorted_unique_counts(cur_sorted)
            cur_keys, cur_counts = u.tolist(), c
        assert cur_counts is not None
        return cur_keys, cur_counts

    if stattest is None:
        if kind == NUMERICAL and prof.n_unique > _FEW_UNIQUE_NUMERIC:
            n_values = prof.n_unique  # union can only be larger: > 5 either way
        else:
            ref_keys, _ = prof.category_counts()
            ck, _ = cur_categories()
            n_values = len(set(ref_keys).union(ck))
        stattest = _select_default_stattest(kind, prof.n, n_values)
    if threshold is None:
        threshold = STATTESTS[stattest][1]

    if stattest == "wasserstein":
        assert prof.values is not None and cur_sorted is not None and prof.std is not None
        norm = max(float(prof.std), 0.001)
        value = _wasserstein_sorted(prof.values, cur_sorted) / norm
    elif stattest == "ks":
        assert prof.values is not None and cur_sorted is not None
        value = float(_ks_2samp(prof.values, cur_sorted)[1])
    elif stattest in ("chisquare", "z"):
        ref_keys, ref_counts = prof.category_counts()
        ck, cc = cur_categories()
        keys, r, c = _align_counts(ref_keys, ref_counts, ck, cc)
        if stattest == "chisquare":
            value = _chisquare_p(r, c, prof.n, n_cur)
        else:
            value = _z_p(keys, r, c, prof.n, n_cur)
    elif stattest in ("jensenshannon", "psi"):
        if not (kind == NUMERICAL and prof.n_unique > _HISTOGRAM_MIN_UNIQUE):
            cur_categories()
        ref_p, cur_p = _binned_percents(prof, cur_sorted, cur_keys, cur_counts, n_cur, stattest == "psi")
        if stattest == "jensenshannon":
            value = float(_distance.jensenshannon(ref_p, cur_p))
        else:
            value = float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))
    else:  # pragma: no cover - guarded by _resolve_override
        raise ValueError(f"unsupported stattest {stattest!r}")

    drifted = _is_drift(stattest, value, threshold)
    return ColumnDrift(name, kind, stattest, value, float(threshold), drifted, n_cur, prof.n, prof.role)


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


# --------------------------------------------------------------------------------------
# Real Evidently (lazy import): HTML report for people, and ground-truth verdicts
# --------------------------------------------------------------------------------------
def _evidently_snapshot(
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    numerical_columns: Sequence[str],
    categorical_columns: Sequence[str],
    include_tests: bool = True,
):
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    cols = list(numerical_columns) + list(categorical_columns)
    definition = DataDefinition(numerical_columns=list(numerical_columns), categorical_columns=list(categorical_columns))
    report = Report([DataDriftPreset()], include_tests=include_tests)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with np.errstate(all="ignore"):
            # avoid an extra copy when the frames already hold exactly these columns
            cur = current_df if list(current_df.columns) == cols else current_df[cols]
            ref = reference_df if list(reference_df.columns) == cols else reference_df[cols]
            return report.run(
                Dataset.from_pandas(cur, data_definition=definition),
                Dataset.from_pandas(ref, data_definition=definition),
            )


def evidently_report_html(
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    numerical_columns: Sequence[str],
    categorical_columns: Sequence[str],
    path: str | os.PathLike,
    sample_rows: int = 50_000,
    seed: int = 0,
) -> str:
    """Evidently 0.7 DataDriftPreset HTML report for humans (frames sampled to ``sample_rows``).

    Verdicts in the HTML come from the sample; the authoritative verdicts are :func:`detect_drift`'s.
    Written atomically (temp file + ``os.replace``). Returns the path.
    """
    ref = reference_df.sample(n=sample_rows, random_state=seed) if len(reference_df) > sample_rows else reference_df
    cur = current_df.sample(n=sample_rows, random_state=seed) if len(current_df) > sample_rows else current_df
    snapshot = _evidently_snapshot(ref, cur, numerical_columns, categorical_columns)
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        snapshot.save_html(tmp)
    return path


def evidently_column_results(
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    numerical_columns: Sequence[str],
    categorical_columns: Sequence[str],
) -> Dict[str, Dict[str, Any]]:
    """Run real Evidently on the FULL data; per column: drifted, score, method, threshold."""
    snap = _evidently_snapshot(reference_df, current_df, numerical_columns, categorical_columns)
    d = snap.dict()
    by_id: Dict[str, Dict[str, Any]] = {}
    for m in d["metrics"]:
        cfg = m.get("config") or {}
        if str(cfg.get("type", "")).endswith("ValueDrift"):
            by_id[m["id"]] = {
                "column": cfg["column"],
                "method": cfg.get("method"),
                "threshold": cfg.get("threshold"),
                "score": float(m["value"]),
                "drifted": None,
            }
    for t in d.get("tests", []):
        mid = (t.get("metric_config") or {}).get("metric_id")
        if mid in by_id:
            status = t["status"]
            status = getattr(status, "value", status)
            by_id[mid]["drifted"] = str(status).upper() == "FAIL"
    out = {v["column"]: v for v in by_id.values()}
    for v in out.values():
        if v["drifted"] is None:
            raise RuntimeError(f"no Evidently drift test result found for column '{v['column']}'")
    return out


def evidently_column_verdicts(
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    numerical_columns: Sequence[str],
    categorical_columns: Sequence[str],
) -> Dict[str, bool]:
    """Evidently's own per-column drift verdicts on the full data (ground truth for tests/benchmarks)."""
    res = evidently_column_results(reference_df, current_df, numerical_columns, categorical_columns)
    return {k: bool(v["drifted"]) for k, v in res.items()}
