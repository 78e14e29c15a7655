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

``psi`` (PSI >= 0.1 by default) is available as an explicit override (see ``stattests.STATTESTS``).  Dataset drift:
``n_drifted / n_columns >= drift_share`` (default 0.5).

Differences from Evidently (documented on purpose):

* Evidently raises ``ValueError`` (and produces no report at all) when a current column has no
  non-null value.  Here such a column gets ``stattest="empty_current"`` and, with the default
  ``empty_column="drift"``, is reported as drifted (a feature that stopped arriving is a
  problem); ``empty_column="raise"`` reproduces Evidently's behaviour.
* An empty current partition (0 rows) raises ``ValueError("current data is empty ...")``, which is
  what Evidently effectively does (it raises for the first column).

Layout: ``column_types`` (kind inference), ``profile`` (reference statistics), ``stattests`` (the
registry: name -> test, default threshold, applicable kinds), ``engine`` (:func:`detect_drift`),
``evidently_oracle`` (real Evidently: the HTML report and ground-truth verdicts). The public names
are importable from here. Nothing here imports Dagster; Evidently is imported lazily by the oracle only.
"""

from __future__ import annotations

from mlplatform_assets.lib.monitoring.drift.column_types import (
    CATEGORICAL,
    INTEGER_CARDINALITY_LIMIT,
    KINDS,
    NUMERICAL,
    infer_column_type,
    infer_column_types,
)
from mlplatform_assets.lib.monitoring.drift.engine import (
    ColumnDrift,
    DriftResult,
    detect_drift,
)
from mlplatform_assets.lib.monitoring.drift.evidently_oracle import (
    evidently_column_results,
    evidently_column_verdicts,
    evidently_report_html,
)
from mlplatform_assets.lib.monitoring.drift.profile import (
    PROFILE_FORMAT_VERSION,
    ColumnProfile,
    ReferenceProfile,
    build_reference_profile,
)
from mlplatform_assets.lib.monitoring.drift.stattests import (
    STATTEST_DISPLAY_NAMES,
    STATTESTS,
    StatTest,
    select_default_stattest,
    stattest_names,
)

__all__ = [
    "NUMERICAL",
    "CATEGORICAL",
    "KINDS",
    "INTEGER_CARDINALITY_LIMIT",
    "PROFILE_FORMAT_VERSION",
    "STATTESTS",
    "STATTEST_DISPLAY_NAMES",
    "StatTest",
    "ColumnProfile",
    "ReferenceProfile",
    "ColumnDrift",
    "DriftResult",
    "build_reference_profile",
    "detect_drift",
    "infer_column_type",
    "infer_column_types",
    "select_default_stattest",
    "stattest_names",
    "evidently_report_html",
    "evidently_column_results",
    "evidently_column_verdicts",
]
