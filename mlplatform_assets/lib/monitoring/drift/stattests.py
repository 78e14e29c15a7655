"""The statistical tests, a registry: name -> :class:`StatTest` (implementation, default threshold,
applicable column kinds, drift rule, Evidently's display name).

Every test replicates ``evidently/legacy/calculations/stattests/<name>.py`` of Evidently 0.7.23
(same statistic, same threshold semantics), computed from a :class:`~.profile.ColumnProfile` on the
reference side and the current column's values. ``mlplatform_tests/lib/test_drift.py`` checks each
registry entry against Evidently's test of the same name, for every kind it applies to.

Adding a test is one :class:`StatTest` entry in :data:`STATTESTS` (its ``compute`` reads what it needs
from :class:`ColumnData`); the spec's ``drift.numerical_stattest`` / ``categorical_stattest`` choices
and the override validation follow from the registry.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.spatial import distance as _distance
from scipy.stats import chisquare as _chisquare
from scipy.stats import ks_2samp as _ks_2samp
from scipy.stats import norm as _norm

from mlplatform_assets.lib.monitoring.drift.column_types import CATEGORICAL, NUMERICAL
from mlplatform_assets.lib.monitoring.drift.profile import (
    ColumnProfile,
    _sorted_unique_counts,
)

# Evidently's default-test rule (registry.py::_get_default_stattest) and binning (utils.get_binned_data)
_SMALL_REFERENCE_ROWS = 1000  # registry.py: reference_data.shape[0] <= 1000
FEW_UNIQUE_NUMERIC = 5  # registry.py: n_values <= 5
_BINARY = 2  # registry.py: chi if n_values > 2 else z
_HISTOGRAM_MIN_UNIQUE = 20  # utils.get_binned_data: numerical and n_vals > 20 -> sturges histogram


# --------------------------------------------------------------------------------------
# Building blocks (linear-time versions of what Evidently computes with pandas/scipy)
# --------------------------------------------------------------------------------------
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


@dataclass
class ColumnData:
    """One column's reference profile and current values, as the tests consume them.

    ``current_sorted``: sorted non-null finite values (numerical columns). The current categories
    and counts are computed on first use (numerical columns derive them from the sorted values).
    """

    reference: ColumnProfile
    n_current: int
    current_sorted: Optional[np.ndarray] = None
    current_keys: Optional[List[Any]] = None
    current_counts: Optional[np.ndarray] = None

    def current_categories(self) -> Tuple[List[Any], np.ndarray]:
        if self.current_keys is None:
            assert self.current_sorted is not None
            uniq, counts = _sorted_unique_counts(self.current_sorted)
            self.current_keys, self.current_counts = uniq.tolist(), counts
        assert self.current_counts is not None
        return self.current_keys, self.current_counts

    def aligned_counts(self) -> Tuple[List[Any], np.ndarray, np.ndarray]:
        """Union of categories (reference first) with reference and current counts aligned."""
        ref_keys, ref_counts = self.reference.category_counts()
        cur_keys, cur_counts = self.current_categories()
        return _align_counts(ref_keys, ref_counts, cur_keys, cur_counts)

    def n_values(self) -> int:
        """Distinct values in reference and current together (what picks the default test)."""
        prof = self.reference
        if prof.kind == NUMERICAL and prof.n_unique > FEW_UNIQUE_NUMERIC:
            return prof.n_unique  # the union can only be larger: > 5 either way
        ref_keys, _ = prof.category_counts()
        cur_keys, _ = self.current_categories()
        return len(set(ref_keys).union(cur_keys))

    def binned_percents(self, feel_zeroes: bool) -> Tuple[np.ndarray, np.ndarray]:
        """evidently utils.get_binned_data: Sturges histogram (many-valued numerical) or category shares."""
        prof, n_cur = self.reference, self.n_current
        if prof.kind == NUMERICAL and prof.n_unique > _HISTOGRAM_MIN_UNIQUE:
            assert prof.values is not None and self.current_sorted is not None
            lo = min(prof.values[0], self.current_sorted[0])
            hi = max(prof.values[-1], self.current_sorted[-1])
            edges = _sturges_edges(float(lo), float(hi), prof.n + n_cur)
            ref_p = _hist_counts_sorted(prof.values, edges) / prof.n
            cur_p = _hist_counts_sorted(self.current_sorted, edges) / n_cur
        else:
            _, r, c = self.aligned_counts()
            ref_p = r / prof.n
            cur_p = c / n_cur
        if feel_zeroes:
            ref_p = _feel_zeroes(ref_p.astype(np.float64))
            cur_p = _feel_zeroes(cur_p.astype(np.float64))
        return ref_p, cur_p


# --------------------------------------------------------------------------------------
# The tests (each: evidently/legacy/calculations/stattests/<file>)
# --------------------------------------------------------------------------------------
def _ks(col: ColumnData) -> float:  # ks_stattest.py: two-sample K-S p-value
    assert col.reference.values is not None and col.current_sorted is not None
    return float(_ks_2samp(col.reference.values, col.current_sorted)[1])


def _chisquare_test(col: ColumnData) -> float:  # chisquare_stattest.py: p-value against scaled reference counts
    _, r, c = col.aligned_counts()
    return _chisquare_p(r, c, col.reference.n, col.n_current)


def _z_test(col: ColumnData) -> float:  # z_stattest.py: two-proportion Z-test p-value
    keys, r, c = col.aligned_counts()
    return _z_p(keys, r, c, col.reference.n, col.n_current)


def _wasserstein(col: ColumnData) -> float:  # wasserstein_distance_norm.py: W1 / max(std_ref, 0.001)
    prof = col.reference
    assert prof.values is not None and col.current_sorted is not None and prof.std is not None
    return _wasserstein_sorted(prof.values, col.current_sorted) / max(float(prof.std), 0.001)


def _jensenshannon(col: ColumnData) -> float:  # jensenshannon.py: JS distance of the binned shares
    ref_p, cur_p = col.binned_percents(feel_zeroes=False)
    return float(_distance.jensenshannon(ref_p, cur_p))


def _psi(col: ColumnData) -> float:  # psi.py: population stability index, empty bins filled
    ref_p, cur_p = col.binned_percents(feel_zeroes=True)
    return float(np.sum((ref_p - cur_p) * np.log(ref_p / cur_p)))


@dataclass(frozen=True)
class StatTest:
    """One registered test. ``kinds``: the column kinds it may be chosen for (spec, overrides; Evidently's
    ``allowed_feature_types``); ``drifted(statistic, threshold)``: the drift rule (p-values drift when small,
    distances when large); ``display_name``: Evidently's name for it (its report's ``method``)."""

    name: str
    display_name: str
    kinds: Tuple[str, ...]
    default_threshold: float
    drifted: Callable[[float, float], bool]
    compute: Callable[[ColumnData], float]

    def is_drift(self, statistic: float, threshold: float) -> bool:
        return bool(self.drifted(statistic, threshold))


STATTESTS: Dict[str, StatTest] = {t.name: t for t in (
    StatTest("ks", "K-S p_value", (NUMERICAL,), 0.05, operator.le, _ks),
    StatTest("chisquare", "chi-square p_value", (CATEGORICAL,), 0.05, operator.lt, _chisquare_test),
    StatTest("z", "Z-test p_value", (CATEGORICAL,), 0.05, operator.lt, _z_test),
    StatTest("wasserstein", "Wasserstein distance (normed)", (NUMERICAL,), 0.1, operator.ge, _wasserstein),
    StatTest("jensenshannon", "Jensen-Shannon distance", (CATEGORICAL, NUMERICAL), 0.1, operator.ge, _jensenshannon),
    StatTest("psi", "PSI", (CATEGORICAL, NUMERICAL), 0.1, operator.ge, _psi),
)}

# Evidently's display names (what snapshot.dict() shows as "method")
STATTEST_DISPLAY_NAMES = {name: t.display_name for name, t in STATTESTS.items()}


def stattest_names(kind: str) -> Tuple[str, ...]:
    """The tests that may be chosen for columns of ``kind``, in registry order."""
    return tuple(name for name, t in STATTESTS.items() if kind in t.kinds)


def select_default_stattest(kind: str, n_ref: int, n_values: int) -> str:
    """evidently/legacy/calculations/stattests/registry.py::_get_default_stattest.

    (The rule may pick ``chisquare``/``z`` for a numerical column with few values, although they are
    not selectable for numerical columns: Evidently does the same.)
    """
    if n_ref <= _SMALL_REFERENCE_ROWS:
        if kind == NUMERICAL:
            if n_values <= FEW_UNIQUE_NUMERIC:
                return "chisquare" if n_values > _BINARY else "z"
            return "ks"
        return "chisquare" if n_values > _BINARY else "z"
    if kind == NUMERICAL:
        return "jensenshannon" if n_values <= FEW_UNIQUE_NUMERIC else "wasserstein"
    return "jensenshannon"
