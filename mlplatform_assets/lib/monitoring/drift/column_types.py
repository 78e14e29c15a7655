"""Column kind inference, exactly as Evidently 0.7 infers it without a DataDefinition."""

from __future__ import annotations

from typing import Iterable, List, Tuple

import pandas as pd

NUMERICAL = "numerical"
CATEGORICAL = "categorical"
KINDS = (NUMERICAL, CATEGORICAL)  # the kinds the drift tests handle

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
