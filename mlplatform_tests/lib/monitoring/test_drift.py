"""The fast drift engine must reach exactly Evidently 0.7.23's per-column verdicts.

Every comparison runs REAL Evidently (DataDriftPreset, no mocks) on the full data.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.lib.monitoring import drift
from mlplatform_assets.lib.monitoring.drift import (
    CATEGORICAL,
    NUMERICAL,
    STATTESTS,
    ReferenceProfile,
    build_reference_profile,
    detect_drift,
    evidently_column_results,
    infer_column_types,
)
from mlplatform_assets.lib.monitoring.drift.stattests import _wasserstein_sorted

SMALL = 600  # reference <= 1000 rows: K-S / chi-squared / Z-test
LARGE = 6000  # reference > 1000 rows: Wasserstein / Jensen-Shannon


def _close(ours: float, theirs: float) -> bool:
    if math.isnan(theirs):
        return ours is None or math.isnan(ours)
    if math.isinf(theirs):
        return ours == theirs
    return math.isclose(ours, theirs, rel_tol=1e-6, abs_tol=1e-9)


def assert_matches_evidently(ref: pd.DataFrame, cur: pd.DataFrame, num, cat, expect=None):
    """Our verdicts == Evidently's, same test, same threshold, statistic close. Returns our result."""
    profile = build_reference_profile(ref, num, cat)
    ours = detect_drift(profile, cur)
    theirs = evidently_column_results(ref, cur, num, cat)
    assert set(theirs) == set(ours.columns)
    for col, ev in theirs.items():
        r = ours.columns[col]
        assert STATTESTS[r.stattest].display_name == ev["method"], (col, r.stattest, ev["method"])
        assert r.threshold == pytest.approx(ev["threshold"]), col
        assert r.drifted == ev["drifted"], (col, r, ev)
        assert _close(r.statistic, ev["score"]), (col, r.statistic, ev["score"])
    if expect:
        for col, (stattest, drifted) in expect.items():
            assert ours.columns[col].stattest == stattest, (col, ours.columns[col])
            if drifted is not None:  # None: random sample, only Evidently-equality is asserted
                assert ours.columns[col].drifted is drifted, (col, ours.columns[col])
    return ours


@pytest.fixture
def rng():
    return np.random.default_rng(42)


# ---------------------------------------------------------------------------------------------
# numeric, small reference (K-S; chi-squared / Z-test when <= 5 unique values)
# ---------------------------------------------------------------------------------------------
def test_small_numeric_regimes(rng):
    n = SMALL
    ref = pd.DataFrame(
        {
            "same": rng.normal(size=n),
            "shift": rng.normal(size=n),
            "three": rng.integers(0, 3, n).astype(float),
            "three_shift": rng.choice([0.0, 1.0, 2.0], n, p=[0.6, 0.3, 0.1]),
            "binary": rng.integers(0, 2, n),
            "binary_shift": rng.choice([0, 1], n, p=[0.8, 0.2]),
            "with_nan": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "const": np.full(n, 3.0),
        }
    )
    cur = pd.DataFrame(
        {
            "same": rng.normal(size=800),
            "shift": rng.normal(0.4, 1.0, 800),
            "three": rng.integers(0, 3, 800).astype(float),
            "three_shift": rng.choice([0.0, 1.0, 2.0], 800, p=[0.2, 0.3, 0.5]),
            "binary": rng.integers(0, 2, 800),
            "binary_shift": rng.choice([0, 1], 800, p=[0.5, 0.5]),
            "with_nan": np.where(rng.random(800) < 0.5, np.nan, rng.normal(size=800)),
            "const": np.full(800, 3.0),
        }
    )
    assert_matches_evidently(
        ref,
        cur,
        list(ref.columns),
        [],
        expect={
            "same": ("ks", False),
            "shift": ("ks", True),
            "three": ("chisquare", False),
            "three_shift": ("chisquare", True),
            "binary": ("z", False),
            "binary_shift": ("z", True),
            "with_nan": ("ks", False),
            "const": ("z", False),
        },
    )


def test_small_reference_counts_non_null_rows_and_large_current(rng):
    # 1400 rows but only ~700 non-null -> Evidently's "small reference" branch (K-S), and a
    # 20k-row current side (K-S switches to the asymptotic p-value inside scipy).
    ref = pd.DataFrame({"x": np.where(rng.random(1400) < 0.5, np.nan, rng.normal(size=1400))})
    cur = pd.DataFrame({"x": rng.normal(0.05, 1.0, 20_000)})
    ref.loc[3, "x"] = np.inf  # infinities are dropped like NaN
    ours = assert_matches_evidently(ref, cur, ["x"], [])
    assert ours.columns["x"].stattest == "ks"
    assert ours.columns["x"].n_reference < 1000


def test_small_numeric_constant_vs_changed_constant(rng):
    ref = pd.DataFrame({"k": np.ones(300), "k2": np.ones(300)})
    cur = pd.DataFrame({"k": np.full(300, 2.0), "k2": np.ones(300)})
    assert_matches_evidently(ref, cur, ["k", "k2"], [], expect={"k": ("z", True), "k2": ("z", False)})


# ---------------------------------------------------------------------------------------------
# categorical, small reference (Z-test for binary, chi-squared for more categories)
# ---------------------------------------------------------------------------------------------
def test_small_categorical_regimes(rng):
    n = SMALL
    cats = [f"c{i}" for i in range(12)]
    ref = pd.DataFrame(
        {
            "many": rng.choice(cats, n),
            "many_shift": rng.choice(cats, n),
            "many_unseen": rng.choice(cats[:6], n),
            "bin": rng.choice(["yes", "no"], n),
            "bin_shift": rng.choice(["yes", "no"], n, p=[0.85, 0.15]),
            "bin_const": np.array(["a"] * n, dtype=object),
            "with_none": np.where(rng.random(n) < 0.3, None, rng.choice(["p", "q", "r"], n)),
            "int_cat": rng.integers(0, 4, n),
        }
    )
    p_shift = np.r_[np.full(6, 0.14), np.full(6, 0.02)]
    cur = pd.DataFrame(
        {
            "many": rng.choice(cats, 700),
            "many_shift": rng.choice(cats, 700, p=p_shift / p_shift.sum()),
            "many_unseen": rng.choice(cats[:6] + ["NEW"], 700),  # unseen category -> chi2 = inf
            "bin": rng.choice(["yes", "no"], 700),
            "bin_shift": rng.choice(["yes", "no"], 700, p=[0.5, 0.5]),
            "bin_const": np.array(["a"] * 700, dtype=object),
            "with_none": np.where(rng.random(700) < 0.3, None, rng.choice(["p", "q", "r"], 700)),
            "int_cat": rng.integers(0, 4, 700),
        }
    )
    assert_matches_evidently(
        ref,
        cur,
        [],
        list(ref.columns),
        expect={
            "many": ("chisquare", None),
            "many_shift": ("chisquare", True),
            "many_unseen": ("chisquare", True),
            "bin": ("z", False),
            "bin_shift": ("z", True),
            "bin_const": ("z", False),
            "with_none": ("chisquare", False),
            "int_cat": ("chisquare", False),
        },
    )


# ---------------------------------------------------------------------------------------------
# large reference (normed Wasserstein / Jensen-Shannon)
# ---------------------------------------------------------------------------------------------
def test_large_numeric_regimes(rng):
    n = LARGE
    ref = pd.DataFrame(
        {
            "same": rng.normal(size=n),
            "shift": rng.normal(size=n),
            "scale": rng.lognormal(size=n),
            "nan_inf": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "ints": rng.integers(0, 100, n),
            "few": rng.integers(0, 4, n).astype(float),
            "few_shift": rng.choice([1.0, 2.0, 3.0], n, p=[0.7, 0.2, 0.1]),
            "const": np.full(n, 7.0),
            "const_then_varied": np.full(n, 7.0),
        }
    )
    m = 9000
    nan_inf = rng.normal(size=m)
    nan_inf[rng.random(m) < 0.3] = np.nan
    nan_inf[:10] = np.inf
    cur = pd.DataFrame(
        {
            "same": rng.normal(size=m),
            "shift": rng.normal(0.3, 1.0, m),
            "scale": rng.lognormal(0.0, 1.5, m),
            "nan_inf": nan_inf,
            "ints": rng.integers(0, 100, m),
            "few": rng.integers(0, 4, m).astype(float),
            "few_shift": rng.choice([1.0, 2.0, 3.0], m, p=[0.3, 0.3, 0.4]),
            "const": np.full(m, 7.0),
            "const_then_varied": rng.normal(7.0, 0.01, m),  # std_ref = 0 -> norm floor 0.001
        }
    )
    assert_matches_evidently(
        ref,
        cur,
        list(ref.columns),
        [],
        expect={
            "same": ("wasserstein", False),
            "shift": ("wasserstein", True),
            "scale": ("wasserstein", True),
            "nan_inf": ("wasserstein", False),
            "ints": ("wasserstein", False),
            "few": ("jensenshannon", False),
            "few_shift": ("jensenshannon", True),
            "const": ("jensenshannon", False),
            "const_then_varied": ("wasserstein", True),
        },
    )


def test_large_categorical_regimes(rng):
    n = LARGE
    cats = [f"k{i}" for i in range(40)]
    ref = pd.DataFrame(
        {
            "same": rng.choice(cats, n),
            "shift": rng.choice(cats[:10], n),
            "unseen": rng.choice(cats[:5], n),
            "binary": rng.choice([True, False], n),
            "category_dtype": pd.Categorical(rng.choice(["a", "b", "c"], n), categories=["a", "b", "c", "z"]),
            "nan": np.where(rng.random(n) < 0.2, None, rng.choice(["u", "v"], n)),
        }
    )
    m = 7000
    cur = pd.DataFrame(
        {
            "same": rng.choice(cats, m),
            "shift": rng.choice(cats[:10], m, p=np.r_[np.full(5, 0.17), np.full(5, 0.03)]),
            "unseen": rng.choice(cats[:5] + ["brand-new"], m),
            "binary": rng.choice([True, False], m),
            "category_dtype": pd.Categorical(rng.choice(["a", "b", "c"], m), categories=["a", "b", "c", "z"]),
            "nan": np.where(rng.random(m) < 0.6, None, rng.choice(["u", "v"], m)),
        }
    )
    assert_matches_evidently(
        ref,
        cur,
        [],
        list(ref.columns),
        expect={
            "same": ("jensenshannon", False),
            "shift": ("jensenshannon", True),
            "unseen": ("jensenshannon", True),
            "binary": ("jensenshannon", False),
            "category_dtype": ("jensenshannon", False),
            "nan": ("jensenshannon", False),
        },
    )


def test_mixed_table_and_dataset_drift(rng):
    n, m = 5000, 5000
    ref = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "income": rng.lognormal(10, 1, n),
            "score": rng.random(n),
            "city": rng.choice(["paris", "lyon", "nice", "lille"], n),
            "plan": rng.choice(["free", "pro"], n),
        }
    )
    cur = pd.DataFrame(
        {
            "age": rng.normal(48, 10, m),
            "income": rng.lognormal(10, 1, m),
            "score": rng.random(m) ** 2,
            "city": rng.choice(["paris", "lyon", "nice", "lille"], m, p=[0.7, 0.1, 0.1, 0.1]),
            "plan": rng.choice(["free", "pro"], m),
        }
    )
    ours = assert_matches_evidently(ref, cur, ["age", "income", "score"], ["city", "plan"])
    assert ours.n_columns == 5
    assert ours.n_drifted == sum(ours.verdicts.values()) == 3
    assert ours.drift_share == pytest.approx(0.6)
    assert ours.dataset_drift is True  # 0.6 >= 0.5 (Evidently: share >= drift_share)
    out = ours.to_dict()
    json.dumps(out, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# empty data, missing columns
# ---------------------------------------------------------------------------------------------
def test_empty_current_partition_raises_like_evidently(rng):
    ref = pd.DataFrame({"x": rng.normal(size=200), "c": rng.choice(["a", "b"], 200)})
    profile = build_reference_profile(ref, ["x"], ["c"])
    with pytest.raises(ValueError, match="current data is empty"):
        detect_drift(profile, ref.iloc[:0])
    with pytest.raises(ValueError, match="empty column"):
        evidently_column_results(ref, ref.iloc[:0], ["x"], ["c"])


def test_all_nan_current_column(rng):
    ref = pd.DataFrame({"x": rng.normal(size=300), "y": rng.normal(size=300)})
    cur = pd.DataFrame({"x": np.full(300, np.nan), "y": rng.normal(size=300)})
    profile = build_reference_profile(ref, ["x", "y"], [])
    res = detect_drift(profile, cur)
    assert res.columns["x"].stattest == "empty_current"
    assert res.columns["x"].drifted is True and res.columns["x"].statistic is None
    assert res.columns["x"].n_current == 0
    json.dumps(res.to_dict(), allow_nan=False)
    assert detect_drift(profile, cur, empty_column="skip").columns["x"].drifted is False
    # Evidently itself refuses the whole report; empty_column="raise" reproduces that
    with pytest.raises(ValueError, match="An empty column 'x'"):
        detect_drift(profile, cur, empty_column="raise")
    with pytest.raises(ValueError, match="An empty column 'x'"):
        evidently_column_results(ref, cur, ["x", "y"], [])


def test_missing_column_clear_error(rng):
    ref = pd.DataFrame({"x": rng.normal(size=50), "amount": rng.normal(size=50)})
    profile = build_reference_profile(ref, ["x", "amount"], [])
    with pytest.raises(ValueError, match="amount"):
        detect_drift(profile, ref[["x"]])
    with pytest.raises(ValueError, match="nope"):
        build_reference_profile(ref, ["nope"], [])


def test_non_numeric_current_for_numeric_column(rng):
    ref = pd.DataFrame({"x": rng.normal(size=50)})
    profile = build_reference_profile(ref, ["x"], [])
    with pytest.raises(ValueError, match="numerical values only"):
        detect_drift(profile, pd.DataFrame({"x": ["a"] * 50}))


# ---------------------------------------------------------------------------------------------
# overrides (spec says e.g. ``stattest: psi, threshold: 0.2``) against Evidently's stattests
# ---------------------------------------------------------------------------------------------
# Every registry entry, for every kind it applies to, at its default threshold and at a strict and a
# lax one, against Evidently's registered test of the same name. A new entry is covered automatically.
REGISTRY_CASES = [(name, kind) for name, test in STATTESTS.items() for kind in test.kinds]


@pytest.fixture(scope="module")
def override_data():
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"x": rng.normal(size=4000), "c": rng.choice(list("abcd"), 4000)})
    cur = pd.DataFrame({"x": rng.normal(0.1, 1.1, 3000), "c": rng.choice(list("abcde"), 3000)})
    # A binary categorical column too: the Z-test is what Evidently picks for two categories.
    ref["b"] = rng.choice(["yes", "no"], 4000, p=[0.3, 0.7])
    cur["b"] = rng.choice(["yes", "no"], 3000, p=[0.34, 0.66])
    return ref, cur, build_reference_profile(ref, ["x"], ["c", "b"])


@pytest.mark.parametrize(("name", "kind"), REGISTRY_CASES, ids=[f"{n}-{k}" for n, k in REGISTRY_CASES])
def test_registry_entry_matches_evidently_stattest(name, kind, override_data):
    import evidently.legacy.calculations.stattests  # noqa: F401 - registers Evidently's tests
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    ref, cur, profile = override_data
    ctype = ColumnType.Numerical if kind == NUMERICAL else ColumnType.Categorical
    theirs = get_registered_stattest(name, ctype)
    ours = STATTESTS[name]
    assert (ours.display_name, ours.default_threshold) == (theirs.display_name, theirs.default_threshold)
    # We may offer a test for fewer kinds than Evidently (a kind whose binning differs), never for more.
    assert set(ours.kinds) <= {NUMERICAL if t == ColumnType.Numerical else CATEGORICAL
                               for t in theirs.allowed_feature_types}
    cols = ["x"] if kind == NUMERICAL else ["c", "b"]
    for col in cols:
        for thr in (None, ours.default_threshold / 10, ours.default_threshold * 3):
            ev = theirs(ref[col], cur[col], ctype, thr)
            override = {"stattest": name, **({} if thr is None else {"threshold": thr})}
            r = detect_drift(profile, cur, per_column_overrides={col: override}).columns[col]
            assert (r.stattest, r.threshold) == (name, ev.actual_threshold), (col, thr)
            assert r.drifted == ev.drifted, (col, name, thr, r, ev)
            assert r.statistic == pytest.approx(ev.drift_score, rel=1e-9, abs=1e-12), (col, name, thr)


def test_override_precedence_and_errors(override_data):
    ref, cur, _ = override_data
    cur = cur[["x", "c"]]
    profile = build_reference_profile(ref, ["x"], ["c"])
    # global policy + per-column precedence, threshold-only override keeps the auto test
    res = detect_drift(profile, cur, stattest="psi", threshold=0.2, per_column_overrides={"c": ("jensenshannon", 0.3)})
    assert (res.columns["x"].stattest, res.columns["x"].threshold) == ("psi", 0.2)
    assert (res.columns["c"].stattest, res.columns["c"].threshold) == ("jensenshannon", 0.3)
    res = detect_drift(profile, cur, per_column_overrides={"x": {"threshold": 0.5}})
    assert (res.columns["x"].stattest, res.columns["x"].threshold) == ("wasserstein", 0.5)
    with pytest.raises(ValueError, match="isn't applicable"):
        detect_drift(profile, cur, per_column_overrides={"c": "ks"})
    with pytest.raises(ValueError, match="unknown stattest"):
        detect_drift(profile, cur, stattest="nope")


# ---------------------------------------------------------------------------------------------
# profile persistence, prediction profile, type inference, module hygiene, HTML report
# ---------------------------------------------------------------------------------------------
def test_profile_save_load_roundtrip(tmp_path, rng):
    n = 3000
    ref = pd.DataFrame(
        {
            "x": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
            "few": rng.integers(0, 3, n),
            "s": rng.choice(["a", "b", "ü"], n),
            "i": rng.integers(-3, 3, n),
            "f": rng.choice([0.1, 0.2, 1e300], n),
            "b": rng.choice([True, False], n),
            "pred": rng.random(n),
        }
    )
    profile = build_reference_profile(
        ref, ["x", "few"], ["s", "i", "f", "b"], prediction_column="pred", metadata={"model": "m", "version": 3}
    )
    path = profile.save(tmp_path / "profile.npz")
    loaded = ReferenceProfile.load(path)
    assert loaded == profile
    assert loaded.prediction_column == "pred"
    for name, col in profile.columns.items():
        other = loaded.columns[name]
        assert other.categories == col.categories
        assert [type(v) for v in other.categories or []] == [type(v) for v in col.categories or []]
    cur = ref.sample(frac=1.0, random_state=1).assign(pred=rng.random(n) * 1.3)
    a, b = detect_drift(profile, cur), detect_drift(loaded, cur)
    assert a.to_dict() == b.to_dict()
    assert a.prediction_drift is not None and a.prediction_drift.column == "pred"
    assert a.prediction_drift.drifted is True
    # the file is a plain npz without pickled objects
    with np.load(path, allow_pickle=False) as data:
        assert "header" in data.files


def test_prediction_profile_uses_same_path(rng):
    ref = pd.DataFrame({"pred": rng.choice(["spam", "ham"], 500)})
    cur = pd.DataFrame({"pred": rng.choice(["spam", "ham"], 500, p=[0.8, 0.2])})
    profile = build_reference_profile(ref, prediction_column="pred", prediction_kind="categorical")
    res = detect_drift(profile, cur)
    ev = evidently_column_results(ref, cur, [], ["pred"])["pred"]
    assert res.prediction_drift.drifted == ev["drifted"] is True
    assert res.prediction_drift.statistic == pytest.approx(ev["score"], rel=1e-9, abs=1e-12)


def test_infer_column_types_matches_evidently(rng):
    from evidently.core.datasets import infer_column_type as ev_infer

    n = 100
    df = pd.DataFrame(
        {
            "f": rng.normal(size=n),
            "i_few": rng.integers(0, 5, n),
            "i_many": rng.integers(0, 1000, n),
            "s_cat": rng.choice(["a", "b"], n),
            "s_text": [f"free text {i}" for i in range(n)],
            "b": rng.choice([True, False], n),
            "cat": pd.Categorical(rng.choice(["x", "y"], n)),
            "d": pd.date_range("2024-01-01", periods=n),
        }
    )
    names = {"num": "numerical", "cat": "categorical"}
    for col in df.columns:
        theirs = ev_infer(df[col]).value
        assert drift.infer_column_type(df[col]) == names.get(theirs, theirs), col
    num, cat = infer_column_types(df)
    assert num == ["f", "i_many"]
    assert cat == ["i_few", "s_cat", "b", "cat"]


def test_import_has_no_dagster_or_evidently():
    code = "import sys, mlplatform_assets.lib.monitoring.drift; print('dagster' in sys.modules, 'evidently' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_evidently_report_html(tmp_path, rng):
    ref = pd.DataFrame({"x": rng.normal(size=400), "c": rng.choice(["a", "b", "c"], 400)})
    cur = pd.DataFrame({"x": rng.normal(1, 1, 300), "c": rng.choice(["a", "b", "c"], 300)})
    out = drift.evidently_report_html(ref, cur, ["x"], ["c"], tmp_path / "r" / "drift.html", sample_rows=200)
    text = open(out, encoding="utf-8").read()
    assert out.endswith("drift.html") and "<html" in text.lower()
    assert not [p for p in (tmp_path / "r").iterdir() if p.name != "drift.html"]  # no temp files left


def test_linear_time_wasserstein_equals_scipy(rng):
    from scipy.stats import wasserstein_distance

    for n, m in [(1, 1), (1, 5), (7, 3), (100, 250), (999, 1000), (4000, 6000), (3, 3)]:
        for ties in (False, True):
            r = rng.integers(0, 5, n).astype(float) if ties else rng.normal(size=n)
            c = rng.integers(0, 6, m).astype(float) if ties else rng.normal(0.3, 1.0, m)
            ours = _wasserstein_sorted(np.sort(r), np.sort(c))
            assert ours == pytest.approx(wasserstein_distance(r, c), rel=1e-10, abs=1e-14), (n, m, ties)


def test_spec_stattest_choices_come_from_the_registry(monkeypatch):
    from pydantic import ValidationError

    from mlplatform_assets.lib.monitoring.drift.stattests import StatTest
    from mlplatform_assets.lib.spec import DriftSpec

    assert DriftSpec(numerical_stattest="wasserstein", categorical_stattest="z").categorical_stattest == "z"
    with pytest.raises(ValidationError, match=r"numerical_stattest\n.*unknown test 'chisquare'; choose one of: "
                                              r"ks, wasserstein, jensenshannon, psi"):
        DriftSpec(numerical_stattest="chisquare")
    with pytest.raises(ValidationError, match=r"categorical_stattest\n.*unknown test 'ks'"):
        DriftSpec(categorical_stattest="ks")
    # A new registry entry is selectable in the spec and runs in the engine, with no other edit.
    monkeypatch.setitem(STATTESTS, "mean_shift", StatTest(
        "mean_shift", "mean shift", (NUMERICAL,), 0.5, lambda value, threshold: value >= threshold,
        lambda col: abs(float(col.current_sorted.mean()) - float(col.reference.values.mean()))))
    spec = DriftSpec(numerical_stattest="mean_shift")
    ref, cur = pd.DataFrame({"x": np.arange(100.0)}), pd.DataFrame({"x": np.arange(100.0) + 0.75})
    result = detect_drift(build_reference_profile(ref, ["x"]), cur, stattest=spec.numerical_stattest)
    assert (result.columns["x"].stattest, result.columns["x"].statistic, result.columns["x"].drifted) == (
        "mean_shift", pytest.approx(0.75), True)
