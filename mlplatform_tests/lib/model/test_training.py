"""compute_metrics against values worked out by hand, for every metric of both tasks; predict_frame's shape."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from mlplatform_assets.lib.model.training import compute_metrics, predict_frame
from mlplatform_assets.lib.spec import METRICS

# Binary: y = [1, 0, 1, 1, 0], predicted labels [1, 0, 0, 1, 1], P(y=1) [0.9, 0.2, 0.4, 0.7, 0.6].
# Positive class 1: TP = rows 0 and 3, FP = row 4, FN = row 2, so precision = recall = f1 = 2/3.
# ROC AUC: of the 3 x 2 (positive, negative) pairs only (0.4, 0.6) is ranked wrongly: 5/6.
# Average precision: ranked 0.9+ 0.7+ 0.6- 0.4+ 0.2-; recall steps of 1/3 at precision 1, 1 and 3/4: 11/12.
BINARY_Y = [1, 0, 1, 1, 0]
BINARY = pd.DataFrame({"prediction": [1, 0, 0, 1, 1], "probability": [0.9, 0.2, 0.4, 0.7, 0.6]})
BINARY_LOG_LOSS = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.7) + math.log(0.4)) / 5

# Regression: y = [3, -0.5, 2, 7], predictions [2.5, 0, 2, 8]: errors 0.5, -0.5, 0, -1.
# MAE = 2/4; MSE = 1.5/4; mean y = 2.875, total sum of squares 29.1875, so R2 = 1 - 1.5/29.1875;
# MAPE = (0.5/3 + 0.5/0.5 + 0/2 + 1/7) / 4.
REGRESSION_Y = [3.0, -0.5, 2.0, 7.0]
REGRESSION = pd.DataFrame({"prediction": [2.5, 0.0, 2.0, 8.0]})

# Three classes, labels only: y = [a, b, c, a], predicted [a, b, b, c].
# Per class (precision, recall, f1): a (1, 1/2, 2/3), b (1/2, 1, 2/3), c (0, 0, 0); macro averages.
MULTI_Y = ["a", "b", "c", "a"]
MULTI = pd.DataFrame({"prediction": ["a", "b", "b", "c"]})

CASES = [
    # task, metric, y, predictions, positive_class, expected
    ("classification", "accuracy", BINARY_Y, BINARY, 1, 3 / 5),
    ("classification", "precision", BINARY_Y, BINARY, 1, 2 / 3),
    ("classification", "recall", BINARY_Y, BINARY, 1, 2 / 3),
    ("classification", "f1", BINARY_Y, BINARY, 1, 2 / 3),
    ("classification", "roc_auc", BINARY_Y, BINARY, 1, 5 / 6),
    ("classification", "average_precision", BINARY_Y, BINARY, 1, 11 / 12),
    ("classification", "log_loss", BINARY_Y, BINARY, 1, BINARY_LOG_LOSS),
    ("classification", "roc_auc", BINARY_Y, BINARY, None, 5 / 6),  # default positive: the larger label
    # Positive class 0 for the label metrics: predicted 0 at rows 1, 2; true 0 at rows 1, 4.
    ("classification", "precision", BINARY_Y, BINARY, 0, 1 / 2),
    ("classification", "recall", BINARY_Y, BINARY, 0, 1 / 2),
    ("classification", "accuracy", MULTI_Y, MULTI, None, 2 / 4),
    ("classification", "precision", MULTI_Y, MULTI, None, (1 + 1 / 2 + 0) / 3),
    ("classification", "recall", MULTI_Y, MULTI, None, (1 / 2 + 1 + 0) / 3),
    ("classification", "f1", MULTI_Y, MULTI, None, (2 / 3 + 2 / 3 + 0) / 3),
    ("regression", "mae", REGRESSION_Y, REGRESSION, None, 0.5),
    ("regression", "rmse", REGRESSION_Y, REGRESSION, None, math.sqrt(1.5 / 4)),
    ("regression", "r2", REGRESSION_Y, REGRESSION, None, 1 - 1.5 / 29.1875),
    ("regression", "mape", REGRESSION_Y, REGRESSION, None, (0.5 / 3 + 1 + 0 + 1 / 7) / 4),
]


@pytest.mark.parametrize("task, metric, y, predictions, positive, expected", CASES,
                         ids=[f"{c[0]}-{c[1]}-{'multi' if c[2] is MULTI_Y else c[4]}" for c in CASES])
def test_metric_matches_the_hand_computed_value(task, metric, y, predictions, positive, expected):
    got = compute_metrics(task, [metric], pd.Series(y), predictions, positive)
    assert got == {metric: pytest.approx(expected, rel=1e-12)}


def test_every_spec_metric_has_a_case():
    assert {c[1] for c in CASES} == set(METRICS)


def test_metrics_come_back_once_each_in_the_order_asked():
    got = compute_metrics("regression", ["r2", "mae", "r2"], pd.Series(REGRESSION_Y), REGRESSION)
    assert list(got) == ["r2", "mae"]


def test_ranking_metrics_need_probabilities_and_two_classes():
    with pytest.raises(ValueError, match="metric 'roc_auc' needs a binary classifier with predict_proba"):
        compute_metrics("classification", ["roc_auc"], pd.Series(MULTI_Y), MULTI)
    one_class = compute_metrics("classification", ["roc_auc", "average_precision", "log_loss"],
                                pd.Series([1, 1]), pd.DataFrame({"prediction": [1, 1], "probability": [0.8, 0.5]}), 1)
    assert math.isnan(one_class["roc_auc"]) and math.isnan(one_class["average_precision"])
    assert one_class["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.5)) / 2)
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        compute_metrics("classification", ["auc"], pd.Series(BINARY_Y), BINARY, 1)


def test_predict_frame_has_the_positive_probability_for_binary_classifiers_only():
    X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    binary = LogisticRegression().fit(X, [0, 0, 1, 1])
    frame = predict_frame(binary, X, "classification")
    assert list(frame.columns) == ["prediction", "probability"]
    np.testing.assert_allclose(frame["probability"], binary.predict_proba(X)[:, 1])
    multi = LogisticRegression().fit(X, ["a", "b", "c", "c"])
    assert list(predict_frame(multi, X, "classification").columns) == ["prediction"]
    regression = predict_frame(LinearRegression().fit(X, [1.0, 3.0, 5.0, 7.0]), X, "regression")
    np.testing.assert_allclose(regression["prediction"], [1.0, 3.0, 5.0, 7.0])


def test_ranking_metrics_with_the_smaller_label_as_positive_class():
    # P(y=0) = 1 - P(y=1) ranks the same pairs, with the labels swapped: AUC stays 5/6.
    got = compute_metrics("classification", ["roc_auc", "log_loss"], pd.Series(BINARY_Y), BINARY, 0)
    assert got["roc_auc"] == pytest.approx(5 / 6)
    # Same probabilities, same labels: the log loss does not depend on which label is called positive.
    assert got["log_loss"] == pytest.approx(BINARY_LOG_LOSS)
    # String labels: "probability" is P("stayed") (the larger label); the positive class is "churned".
    words = pd.Series(["stayed" if v else "churned" for v in BINARY_Y])
    named = compute_metrics("classification", ["roc_auc", "average_precision"], words, BINARY, "churned")
    flipped = compute_metrics("classification", ["average_precision"], pd.Series([1 - v for v in BINARY_Y]),
                              BINARY.assign(probability=1 - BINARY["probability"]), 1)
    assert named["roc_auc"] == pytest.approx(5 / 6)
    assert named["average_precision"] == pytest.approx(flipped["average_precision"])
