"""Why did the model say that? Per-feature contributions to one prediction (``mlplatform explain``).

Method: interventional Shapley values of the model's output, with the version's training sample
(``drift/reference_sample.parquet``, stored at training) as the background. A feature's contribution is its
average effect on the output when its value is switched from a background row's value to the explained
row's value, averaged over the orders in which features are switched. It treats the whole pipeline (custom
transformers, imputation, encoding, any estimator: scikit-learn, LightGBM, XGBoost) as a black box on the
raw input columns, so a categorical column gets one contribution, not one per one-hot column.

- Exact (every coalition of features) while ``2**features * background`` evaluations stay under
  :data:`EXACT_LIMIT`; otherwise Monte-Carlo over ``permutations`` random feature orders (each with its
  reverse, which lowers the variance). Both are seeded.
- Either way the contributions add up to ``output - expected``: the output for this row minus the mean output
  over the background rows (each sampled order telescopes exactly).
- The output explained: regression, the prediction; a classifier with probabilities, the probability of the
  positive class (binary) or of the class predicted for this row (multiclass); otherwise 1/0 for "predicts
  that class".

Limits: features are switched independently, so correlated features make hybrid rows that never occur in real
data and split credit between them; values are relative to the background (the training sample), not to
zero; sampled values carry Monte-Carlo error (more ``permutations``, less error); cost is
``background * evaluations`` predictions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

EXACT_LIMIT = 200_000  # predictions for exact values: 2**features * background rows
PREDICT_CHUNK = 50_000


class ExplainError(ValueError):
    """The row to explain is unusable (missing or unknown features, wrong types) or cannot be found."""


@dataclass
class Explanation:
    model: str
    version: str
    output: str  # what the numbers are in: "prediction", "probability of class 1", ...
    value: float  # the model's output for the row
    expected: float  # mean output over the background rows
    contributions: list[dict[str, Any]]  # feature, value, contribution; largest |contribution| first
    method: str  # "exact" or "sampled"
    background_rows: int
    permutations: int | None
    prediction: Any

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Output:
    """The scalar model output explained, fixed for the explained row (which class, which column)."""

    def __init__(self, pipeline: Any, row: pd.DataFrame, task: str, positive_class: Any | None):
        self.pipeline = pipeline
        self.prediction = _plain(pipeline.predict(row)[0])
        self.class_index: int | None = None
        self.label = "prediction"
        if task == "classification":
            classes = list(getattr(pipeline, "classes_", []))
            if hasattr(pipeline, "predict_proba") and classes:
                target = (positive_class if positive_class in classes else classes[-1]) if len(classes) == 2 \
                    else self.prediction
                self.class_index = classes.index(target)
                self.label = f"probability of class {target!r}"
            else:
                self.label = f"predicts class {self.prediction!r} (1/0)"

    def __call__(self, X: pd.DataFrame) -> np.ndarray:
        parts = []
        for start in range(0, len(X), PREDICT_CHUNK):
            chunk = X.iloc[start:start + PREDICT_CHUNK]
            if self.class_index is not None:
                parts.append(np.asarray(self.pipeline.predict_proba(chunk))[:, self.class_index])
            elif self.label == "prediction":
                parts.append(np.asarray(self.pipeline.predict(chunk), dtype=float))
            else:
                parts.append((np.asarray(self.pipeline.predict(chunk)) == self.prediction).astype(float))
        return np.concatenate(parts).astype(float)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _hybrids(row: pd.DataFrame, background: pd.DataFrame, masks: np.ndarray) -> pd.DataFrame:
    """For each mask (one per line) and each background row: the background row with the masked features
    taken from ``row``. Ordered mask-major: ``len(masks) * len(background)`` rows."""
    n_b = len(background)
    out = background.iloc[np.tile(np.arange(n_b), len(masks))].reset_index(drop=True)
    for j, column in enumerate(background.columns):
        take = np.repeat(masks[:, j], n_b)
        if take.any():
            out[column] = out[column].where(~take, row[column].iloc[0])
    return out


def _exact(f: _Output, row: pd.DataFrame, background: pd.DataFrame) -> np.ndarray:
    d = background.shape[1]
    ids = np.arange(2 ** d)
    masks = ((ids[:, None] >> np.arange(d)) & 1).astype(bool)
    v = f(_hybrids(row, background, masks)).reshape(2 ** d, len(background)).mean(axis=1)
    sizes = masks.sum(axis=1)
    weight = np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) if s < d else 0.0
                       for s in range(d + 1)])
    phi = np.zeros(d)
    for j in range(d):
        without = ids[~masks[:, j]]
        phi[j] = np.sum(weight[sizes[without]] * (v[without | (1 << j)] - v[without]))
    return phi


def _sampled(f: _Output, row: pd.DataFrame, background: pd.DataFrame, permutations: int, seed: int) -> np.ndarray:
    d, n_b = background.shape[1], len(background)
    rng = np.random.default_rng(seed)
    half = [rng.permutation(d) for _ in range(max(1, permutations // 2))]
    orders = np.array([p for pair in ((p, p[::-1]) for p in half) for p in pair])
    # For each order, the path from "all background" to "all row": step k switches the first k features.
    steps = np.arange(d + 1)
    position = np.argsort(orders, axis=1)  # position[o, j]: when feature j is switched in order o
    masks = (position[:, None, :] < steps[None, :, None]).reshape(-1, d)
    v = f(_hybrids(row, background, masks)).reshape(len(orders), d + 1, n_b).mean(axis=2)
    gains = np.diff(v, axis=1)  # gains[o, k]: effect of switching orders[o, k]
    phi = np.zeros(d)
    np.add.at(phi, orders.ravel(), gains.ravel())
    return phi / len(orders)


def explain_row(pipeline: Any, row: pd.DataFrame, background: pd.DataFrame, task: str,
                positive_class: Any | None = None, permutations: int = 64, seed: int = 0,
                model: str = "", version: str = "") -> Explanation:
    """Shapley contributions of each column of ``background`` to the model's output for the one-row ``row``."""
    features = list(background.columns)
    row = row[features]
    f = _Output(pipeline, row, task, positive_class)
    exact = (2 ** len(features)) * len(background) <= EXACT_LIMIT
    phi = _exact(f, row, background) if exact else _sampled(f, row, background, permutations, seed)
    value = float(f(row)[0])
    expected = float(f(background).mean())
    order = np.argsort(-np.abs(phi), kind="stable")
    contributions = [{"feature": features[j], "value": _plain(row[features[j]].iloc[0]),
                      "contribution": float(phi[j])} for j in order]
    return Explanation(model, str(version), f.label, value, expected, contributions, "exact" if exact else "sampled",
                       len(background), None if exact else 2 * max(1, permutations // 2), f.prediction)


def row_frame(values: dict[str, Any], background: pd.DataFrame) -> pd.DataFrame:
    """The one-row frame for ``values`` (a JSON object of feature -> value), typed like the background.
    Raises ExplainError naming missing or unknown features and values of the wrong type."""
    if not isinstance(values, dict):
        raise ExplainError("the row must be a JSON object of feature -> value")
    features = list(background.columns)
    missing = [c for c in features if c not in values]
    unknown = sorted(set(values) - set(features))
    if missing or unknown:
        raise ExplainError("; ".join(filter(None, [
            f"missing feature(s) {missing}" if missing else "",
            f"unknown feature(s) {unknown} (the model's features: {features})" if unknown else ""])))
    data = {}
    for column in features:
        value = values[column]
        numeric = pd.api.types.is_numeric_dtype(background[column])
        if value is None:
            data[column] = [np.nan if numeric else None]
        elif numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ExplainError(f"feature {column!r} is numeric; got {type(value).__name__}")
        elif not numeric and not isinstance(value, str):
            raise ExplainError(f"feature {column!r} is categorical (a string); got {type(value).__name__}")
        else:
            data[column] = [value]
    frame = pd.DataFrame(data)
    for column in features:
        if pd.api.types.is_numeric_dtype(background[column]):
            frame[column] = frame[column].astype(float)
    return frame


def background_sample(reference: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """A seeded sample of the stored training sample: the baseline the contributions are measured against."""
    if len(reference) > rows:
        reference = reference.sample(n=rows, random_state=seed)
    return reference.reset_index(drop=True)


def format_table(e: Explanation, limit: int | None = None) -> str:
    lines = [f"{e.model} v{e.version}: {e.output} = {e.value:.4f} (prediction {e.prediction!r}); "
             f"expected over {e.background_rows} training rows = {e.expected:.4f}",
             f"contributions ({e.method} Shapley values) add up to {e.value - e.expected:+.4f}:", ""]
    width = max([len("feature"), *(len(c["feature"]) for c in e.contributions)])
    lines.append(f"{'feature':<{width}}  {'contribution':>12}  value")
    for c in e.contributions[:limit]:
        lines.append(f"{c['feature']:<{width}}  {c['contribution']:>+12.4f}  {c['value']!r}")
    return "\n".join(lines)
