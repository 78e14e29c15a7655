"""A small feature-transformer plugin, as a team would ship one: a pip-installable package whose classes a
spec names under ``features.transformers`` once the operator trusts the module
(``MLPLATFORM_TRUSTED_MODULES=acme_features``).

Rules a plugin transformer follows (docs/extending.md): a scikit-learn ``BaseEstimator`` subclass whose
constructor only stores its parameters; ``fit`` learns from the training rows; ``transform`` takes the
model's input features as a DataFrame and returns a DataFrame with those columns plus the ones it adds;
fitted state is plain data (numbers, strings, arrays), so the model file holds no code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

__all__ = ["RatioFeature", "SpendBand"]


class RatioFeature(TransformerMixin, BaseEstimator):
    """``output = numerator / denominator``; a zero or missing denominator gives NaN (imputed downstream)."""

    def __init__(self, numerator: str = "", denominator: str = "", output: str = "ratio"):
        self.numerator = numerator
        self.denominator = denominator
        self.output = output

    def fit(self, X: pd.DataFrame, y=None) -> "RatioFeature":
        missing = [c for c in (self.numerator, self.denominator) if c not in X.columns]
        if missing:
            raise ValueError(f"RatioFeature: input has no column(s) {missing}")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        denominator = pd.to_numeric(X[self.denominator], errors="coerce").astype(float)
        numerator = pd.to_numeric(X[self.numerator], errors="coerce").astype(float)
        return X.assign(**{self.output: numerator / denominator.where(denominator != 0)})


class SpendBand(TransformerMixin, BaseEstimator):
    """A categorical band of ``column`` by the training rows' quantiles (``low``/``mid``/``high``)."""

    def __init__(self, column: str = "", output: str = "band"):
        self.column = column
        self.output = output

    def fit(self, X: pd.DataFrame, y=None) -> "SpendBand":
        values = pd.to_numeric(X[self.column], errors="coerce").dropna().to_numpy(dtype=float)
        self.edges_ = np.quantile(values, [1 / 3, 2 / 3]) if len(values) else np.array([0.0, 0.0])
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        values = pd.to_numeric(X[self.column], errors="coerce").to_numpy(dtype=float)
        bands = np.where(values <= self.edges_[0], "low", np.where(values <= self.edges_[1], "mid", "high"))
        return X.assign(**{self.output: np.where(np.isnan(values), None, bands).astype(object)})


def not_a_transformer(X):  # a function, for the tests: a spec naming it is refused
    return X
