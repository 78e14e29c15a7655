"""Per-column data rules (validation.columns): the spec's errors and each rule's outcome on a day."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.lib.data.validation import (
    CHECK_NAMES,
    COLUMN_RULES_CHECK,
    COLUMN_RULES_WARN_CHECK,
    check_day,
    check_names,
)
from mlplatform_assets.lib.spec import SpecError, parse_spec
from mlplatform_tests.conftest import small_spec_yaml

DAY = dt.date(2026, 6, 1)


def spec_with(rules: str, extra: str = "", features: str | None = None):
    # Small frames: one row is enough for a day here.
    text = small_spec_yaml("/tmp/source").replace("min_rows: 50", "min_rows: 1") + extra + (
        "  columns:\n" + rules if rules else "")
    if features is not None:
        text = text.replace(text[text.index("features:"):text.index("estimator:")], features)
    return parse_spec(text, "m.yaml", variables={})


def frame(**columns) -> pd.DataFrame:
    """A valid small day of the small churn spec's columns, with ``columns`` replacing some of them."""
    n = len(next(iter(columns.values()))) if columns else 6
    base = {"event_time": pd.date_range("2026-06-01 01:00", periods=n, freq="min"),
            "tenure_months": np.arange(n, dtype=float), "monthly_charges": np.linspace(10, 60, n),
            "total_charges": np.linspace(100, 600, n), "usage_gb": np.ones(n), "support_calls": np.arange(n) % 3,
            "days_since_last_login": np.ones(n), "age": np.arange(30, 30 + n, dtype=float),
            "plan": ["basic", "pro"] * (n // 2) + ["basic"] * (n % 2), "contract": ["monthly"] * n,
            "payment_method": ["card"] * n, "region": ["east"] * n, "churned": [0, 1] * (n // 2) + [0] * (n % 2)}
    return pd.DataFrame({**base, **columns})


def outcome(spec, df, name):
    return next(o for o in check_day(spec, df, DAY) if o.name == name)


# rule entry, column values, passed, message (after "<column>: "), failing rows, example
RULE_CASES = [
    ("{column: monthly_charges, max_null_share: 0.5}", [1.0, None, None, 4.0], True,
     "2 of 4 rows null (share 0.5000 <= 0.5)", 2, None),
    ("{column: monthly_charges, max_null_share: 0.25}", [1.0, None, None, 4.0], False,
     "2 of 4 rows null (share 0.5000 > 0.25)", 2, None),
    ("{column: monthly_charges, min: 0}", [0.0, 5.0, None, 3.0], True, "every value passes min", 0, None),
    ("{column: monthly_charges, min: 0}", [-1.0, 5.0, -7.5, 3.0], False,
     "2 of 4 rows below min 0, e.g. -7.5", 2, -7.5),
    ("{column: monthly_charges, max: 100}", [100.0, 101.0, 250.0, np.nan], False,
     "2 of 4 rows above max 100, e.g. 250.0", 2, 250.0),
    ("{column: plan, allowed: [basic, pro]}", ["basic", "pro", None, "basic"], True,
     "every value passes allowed", 0, None),
    ("{column: plan, allowed: [basic, pro]}", ["basic", "gold", "gold", "free"], False,
     "3 of 4 rows outside allowed ['basic', 'pro'] (2 distinct value(s)), e.g. 'gold'", 3, "gold"),
    ("{column: support_calls, allowed: [0, 1, 2]}", [0, 1, 2, 7], False,
     "1 of 4 rows outside allowed [0, 1, 2] (1 distinct value(s)), e.g. 7", 1, 7),
    ("{column: support_calls, allowed: [0, 1]}", [0.0, 1.0, 1.0, 0.0], True,  # 1 and 1.0 are one value
     "every value passes allowed", 0, None),
    ("{column: age, unique: true}", [30.0, 31.0, None, None], True, "every value passes unique", 0, None),
    ("{column: age, unique: true}", [30.0, 31.0, 30.0, 30.0], False,
     "2 of 4 rows repeating an earlier value, e.g. 30.0", 2, 30.0),
]


@pytest.mark.parametrize("entry, values, passed, message, failing, example", RULE_CASES)
def test_each_rule_reports_count_share_and_example(entry, values, passed, message, failing, example):
    spec = spec_with(f"    - {entry}\n")
    rule_spec = spec.validation.columns[0]
    rule, column = next(iter(rule_spec.rules)), rule_spec.column
    result = outcome(spec, frame(**{column: values}), f"{rule}:{column}")
    assert result.passed is passed
    assert result.message == f"{column}: {message}"
    assert result.metadata["failing_rows"] == failing
    assert result.metadata.get("example") == example
    if rule != "max_null_share":
        assert result.metadata["share"] == pytest.approx(failing / len(values))
    assert result.severity == "block" and result.check == COLUMN_RULES_CHECK
    assert result.blocks is (not passed)


def test_warn_rules_fail_without_blocking_and_report_under_their_own_check():
    spec = spec_with("    - {column: monthly_charges, max: 10, severity: warn}\n"
                     "    - {column: monthly_charges, min: 0}\n")
    assert check_names(spec) == (*CHECK_NAMES, COLUMN_RULES_CHECK, COLUMN_RULES_WARN_CHECK)
    outcomes = {o.name: o for o in check_day(spec, frame(monthly_charges=[5.0, 50.0, 7.0, 8.0]), DAY)}
    warned = outcomes["max:monthly_charges"]
    assert not warned.passed and not warned.blocks and warned.check == COLUMN_RULES_WARN_CHECK
    assert outcomes["min:monthly_charges"].passed
    assert not [o for o in outcomes.values() if o.blocks]


def test_own_null_share_rule_replaces_the_global_default_for_that_column_only():
    half_null = [1.0, None, 3.0, None]
    default = check_day(spec_with(""), frame(monthly_charges=half_null), DAY)
    assert not next(o for o in default if o.name == "null_share").passed  # 0.5 > global 0.2
    spec = spec_with("    - {column: monthly_charges, max_null_share: 0.6}\n")
    outcomes = {o.name: o for o in check_day(spec, frame(monthly_charges=half_null), DAY)}
    assert outcomes["null_share"].passed and outcomes["max_null_share:monthly_charges"].passed
    both = {o.name: o for o in check_day(spec, frame(monthly_charges=half_null, usage_gb=half_null), DAY)}
    assert not both["null_share"].passed and "usage_gb" in both["null_share"].message
    assert "monthly_charges" not in both["null_share"].message


def test_missing_column_non_numeric_column_and_days_without_rows():
    spec = spec_with("    - {column: monthly_charges, min: 0}\n    - {column: plan, unique: true}\n")
    assert outcome(spec, frame().drop(columns=["monthly_charges"]), "min:monthly_charges").message == \
        "monthly_charges: column is missing"
    text = outcome(spec, frame(monthly_charges=["a", "b", "c", "d"]), "min:monthly_charges")
    assert not text.passed and text.message == "monthly_charges: min needs a numeric column, got object"
    empty = outcome(spec, frame().iloc[0:0], "unique:plan")
    assert empty.passed and empty.message == "plan: no rows to check"
    # A missing file is non_empty's finding alone: nothing else fails on it.
    gap = check_day(spec, pd.DataFrame(), DAY, "file not found")
    assert [o.name for o in gap if not o.passed] == ["non_empty"]
    assert len(gap) == len(CHECK_NAMES) + 2


def test_rules_are_checked_without_features_declared_when_inferred():
    features = "features: {infer: true, exclude: [customer_id]}\n"
    spec = spec_with("    - {column: customer_id, unique: true}\n", features=features)
    df = frame()
    df["customer_id"] = ["a", "b", "a", "c", "d", "e"]
    result = outcome(spec, df, "unique:customer_id")
    assert not result.passed and result.metadata["example"] == "a"


@pytest.mark.parametrize("rules, extra, problem", [
    ("    - {column: monthly_chargs, max: 5}\n", "",
     "m.yaml: validation: columns.0.column: 'monthly_chargs' is not a column of this model; rules apply to the "
     "declared features, the target and the timestamp: ['age', 'churned',"),
    ("    - {column: plan, max: 5}\n", "",
     "m.yaml: validation: columns.0: max only apply to numeric columns; 'plan' is a categorical feature"),
    ("    - {column: event_time, min: 0, max: 1}\n", "",
     "m.yaml: validation: columns.0: min and max only apply to numeric columns; 'event_time' is the timestamp"),
    ("    - {column: age}\n", "",
     "m.yaml: validation.columns.0: column 'age': give at least one rule: max_null_share, min, max, allowed or "
     "unique: true"),
    ("    - {column: age, min: 5, max: 1}\n", "", "m.yaml: validation.columns.0: column 'age': min (5) is larger "
                                               "than max (1)"),
    ("    - {column: plan, allowed: []}\n", "", "column 'plan': allowed is empty; list at least one value"),
    ("    - {column: age, max_null_share: 1.5}\n", "",
     "m.yaml: validation.columns.0.max_null_share: Input should be less than or equal to 1"),
    ("    - {column: age, min: 5}\n    - {column: age, min: 1, severity: warn}\n", "",
     "m.yaml: validation: columns.1: min of 'age' is already set in columns.0; give each rule of a column once"),
    ("    - {column: age, min: 5, severity: error}\n", "",
     "m.yaml: validation.columns.0.severity: Input should be 'block' or 'warn'"),
    ("    - {column: age, minimum: 5}\n", "", "m.yaml: validation.columns.0.minimum: unknown field"),
    ("", "  on_failure: skip\n", "m.yaml: validation.on_failure: Input should be 'block' or 'quarantine'"),
])
def test_spec_errors_name_the_field_and_the_problem(rules, extra, problem):
    with pytest.raises(SpecError) as err:
        spec_with(rules, extra)
    assert problem in str(err.value)


def test_a_spec_with_rules_and_quarantine_loads():
    spec = spec_with("    - {column: plan, allowed: [basic, pro, standard]}\n"
                     "    - {column: monthly_charges, max_null_share: 0.7, min: 0, max: 500, severity: warn}\n",
                     "  on_failure: quarantine\n")
    assert spec.validation.on_failure == "quarantine"
    assert [(e.column, e.rules, e.severity) for e in spec.validation.columns] == [
        ("plan", {"allowed": ["basic", "pro", "standard"]}, "block"),
        ("monthly_charges", {"max_null_share": 0.7, "min": 0.0, "max": 500.0}, "warn")]
    assert spec.validation.own_null_share_columns() == {"monthly_charges"}
    assert spec_with("").validation.on_failure == "block"
