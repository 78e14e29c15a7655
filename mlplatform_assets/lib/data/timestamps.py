"""Parsing timestamps the same way everywhere: naive values are UTC, each value may have its own format.

One source often mixes representations (``2024-05-01 10:00:00`` next to ``2024-05-01T12:00:00+02:00``,
or a trailing ``Z``); parsing a column with the format of its first value turns every other
representation into NaT, and rows without a timestamp would then silently drop out of their day.
"""

from __future__ import annotations

import pandas as pd


def parse_utc(values: pd.Series) -> pd.Series:
    """Timezone-aware UTC timestamps; NaT where a value is missing or is no timestamp."""
    return pd.to_datetime(values, errors="coerce", utc=True, format="mixed")


def unparsable(values: pd.Series, parsed: pd.Series) -> pd.Series:
    """The values that are present but did not parse."""
    return values[parsed.isna() & values.notna()]
