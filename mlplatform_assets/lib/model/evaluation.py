"""Challenger vs champion on the same holdout, the promotion gate, and the quality report for people."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlplatform_assets.lib.data.storage import atomic_path
from mlplatform_assets.lib.model.rigor import (
    Rigor,
    baseline_failure,
    baseline_note,
    clears,
    decision_details,
    gain_is_enough,
    slice_failure,
)
from mlplatform_assets.lib.spec import ModelSpec


@dataclass
class PromotionDecision:
    promote: bool
    reason: str
    metric: str
    direction: str
    challenger_value: float
    champion_value: float | None
    delta: float | None
    min_improvement: float
    absolute_floor: float | None
    champion_version: str | None
    challenger_version: str
    # The rigor behind the decision (lib/model/rigor.py): how it was judged, on how many holdout rows, the paired
    # interval of the gain over the champion, the baselines and the largest slice gap. Defaults keep records
    # written before these fields readable.
    require: str = "point"
    rows: int | None = None
    interval: dict[str, Any] | None = None
    baselines: dict[str, Any] | None = None
    largest_slice_gap: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(spec: ModelSpec, challenger_version: str, challenger_value: float,
                     champion_version: str | None, champion_value: float | None,
                     rigor: Rigor | None = None) -> PromotionDecision:
    """The gate, in order: the challenger's metric is defined and reaches the absolute floor; it beats the
    baselines (``promotion.must_beat_baseline``); it beats the champion by ``min_improvement`` (the interval's
    lower bound with ``promotion.require: significant``, the point estimate with ``point``); and it loses no
    slice by more than ``promotion.max_slice_regression``. ``rigor`` (from :func:`rigor.assess`) carries the
    interval, baselines and slices; without it only ``require: point`` and no baseline check can pass.

    ``delta`` is signed so that positive always means "challenger is better", whatever the metric's direction.
    """
    metric, direction = spec.metrics.primary, spec.metrics.direction or "maximize"
    promotion = spec.promotion
    floor, min_imp = promotion.absolute_floor, promotion.min_improvement
    better_sign = 1.0 if direction == "maximize" else -1.0
    details = decision_details(rigor) if rigor is not None else {}

    def result(promote: bool, reason: str, delta: float | None) -> PromotionDecision:
        note = baseline_note(rigor) if promote and rigor is not None else None
        reason = f"{reason}; {note}" if note else reason
        return PromotionDecision(promote, reason, metric, direction, challenger_value, champion_value, delta,
                                 min_imp, floor, champion_version, str(challenger_version), promotion.require,
                                 **details)

    if challenger_value is None or math.isnan(challenger_value):
        return result(False, f"challenger {metric} is undefined on the holdout", None)
    if floor is not None:
        meets = challenger_value >= floor if direction == "maximize" else challenger_value <= floor
        if not meets:
            cmp = "below" if direction == "maximize" else "above"
            return result(False, f"challenger {metric}={challenger_value:.4f} is {cmp} the absolute floor {floor}", None)
    no_champion = champion_version is None or champion_value is None or math.isnan(champion_value)
    delta = None if no_champion else better_sign * (challenger_value - champion_value)
    if promotion.must_beat_baseline:
        failure = baseline_failure(spec, rigor) if rigor is not None else "no baseline was evaluated"
        if failure:
            return result(False, f"challenger {metric}={challenger_value:.4f} is {failure}", delta)
    if no_champion:
        beats = " and passes the baseline checks" if promotion.must_beat_baseline else ""
        return result(True, f"no champion yet; challenger {metric}={challenger_value:.4f} meets the floor "
                            f"{floor if floor is not None else '(none)'}{beats}", None)
    versus = (f"challenger {metric}={challenger_value:.4f} vs champion v{champion_version} ({champion_value:.4f}): "
              f"improvement {delta:+.4f}")
    interval = rigor.versus_champion if rigor is not None else None
    if promotion.require == "significant":
        if interval is None or not interval.defined:
            return result(False, f"{versus}, but its confidence interval is undefined on this holdout "
                                 "(promotion.require: significant)", delta)
        ci = f"{interval.confidence:.0%} interval [{interval.lower:+.4f}, {interval.upper:+.4f}] on {interval.rows} rows"
        if not gain_is_enough(spec, interval):
            return result(False, f"{versus}, {ci}: the lower bound does not clear min_improvement {min_imp} "
                                 "(not significant)", delta)
    else:
        ci = "point estimate"
        if not clears(delta, min_imp):
            return result(False, f"{versus} < min_improvement {min_imp}", delta)
    failure = slice_failure(spec, rigor) if rigor is not None else None
    if failure:
        return result(False, f"{versus} overall, but {failure}", delta)
    return result(True, f"challenger {metric}={challenger_value:.4f} beats champion v{champion_version} "
                        f"({champion_value:.4f}) by {delta:+.4f} ({ci}) >= min_improvement {min_imp}", delta)


def quality_report_html(spec: ModelSpec, holdout: pd.DataFrame, predictions: pd.DataFrame, path: str | Path,
                        reference: pd.DataFrame | None = None, max_rows: int = 50_000) -> Path:
    """An Evidently classification or regression report of the challenger on the holdout.

    ``reference`` (the champion's predictions on the same rows, same columns) makes Evidently
    show both side by side. Written atomically.
    """
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Regression,
        Report,
    )
    from evidently.presets import ClassificationPreset, RegressionPreset

    target = spec.target.column

    def frame(preds: pd.DataFrame) -> pd.DataFrame:
        df = pd.DataFrame({"target": holdout[target].to_numpy(), "prediction": preds["prediction"].to_numpy()})
        if "probability" in preds:
            df["probability"] = preds["probability"].to_numpy()
        return df.head(max_rows)

    current = frame(predictions)
    if spec.task == "regression":
        definition = DataDefinition(regression=[Regression(target="target", prediction="prediction")],
                                    numerical_columns=["target", "prediction"])
        preset = RegressionPreset()
    else:
        labels = sorted(pd.unique(current["target"]))
        if len(labels) <= 2 and "probability" in current:
            pos = spec.target.positive_class if spec.target.positive_class is not None else labels[-1]
            current["probability"] = current["probability"].astype(float)
            definition = DataDefinition(classification=[BinaryClassification(
                target="target", prediction_labels="prediction", prediction_probas="probability", pos_label=pos)],
                categorical_columns=["target", "prediction"])
        else:
            definition = DataDefinition(classification=[MulticlassClassification(
                target="target", prediction_labels="prediction")], categorical_columns=["target", "prediction"])
        preset = ClassificationPreset()
    cur_ds = Dataset.from_pandas(current, data_definition=definition)
    ref_ds = Dataset.from_pandas(frame(reference), data_definition=definition) if reference is not None else None
    snapshot = Report([preset]).run(cur_ds, ref_ds)
    with atomic_path(path) as tmp:
        snapshot.save_html(tmp)
    return Path(path)
