"""The Markdown evaluation summary: each section from the evaluation's data, shown only when the data is there."""

import pandas as pd
import pytest

from mlplatform_assets.lib.model import report
from mlplatform_assets.lib.model.evaluation import decide_promotion
from mlplatform_assets.lib.model.lifecycle import Evaluation
from mlplatform_tests.lib.model.test_evaluation import CLS, REG

Y_CLS = pd.Series([0, 0, 0, 1, 1, 1, 1, 0])
# challenger: class 1 predicted 4x, 3 right; champion: class 1 predicted 2x, 2 right
CH_CLS = pd.DataFrame({"prediction": [0, 0, 1, 1, 1, 1, 0, 0]})
CHAMP_CLS = pd.DataFrame({"prediction": [0, 0, 0, 1, 1, 0, 0, 0]})


def _cls_evaluation(with_champion: bool) -> Evaluation:
    champ = {"roc_auc": 0.70, "accuracy": 0.75} if with_champion else None
    decision = decide_promotion(CLS, "2", 0.80, "1" if with_champion else None, 0.70 if with_champion else None)
    return Evaluation(decision, {"roc_auc": 0.80, "accuracy": 0.75}, champ, CH_CLS,
                      CHAMP_CLS if with_champion else None)


def test_classification_summary_compares_metrics_and_classes():
    md = report.evaluation_markdown(CLS, _cls_evaluation(True), Y_CLS, "http://mlflow.test/#/x/artifacts/r.html")
    assert "challenger v2 vs champion v1" in md
    assert "Decision: **PROMOTE**. challenger roc_auc=0.8000 beats champion v1" in md
    assert "[Full Evidently report](http://mlflow.test/#/x/artifacts/r.html)" in md
    assert "| **roc_auc** | 0.8000 | 0.7000 | +0.1000 |" in md
    assert "| accuracy | 0.7500 | 0.7500 | +0.0000 |" in md
    # class 1: 4 actual; challenger precision 3/4 recall 3/4; champion precision 2/2 recall 2/4
    assert "| 1 | 4 | 0.7500 | 0.7500 | 1.0000 | 0.5000 |" in md
    # class 0: challenger predicts 0 four times, 3 right; champion six times, 4 right
    assert "| 0 | 4 | 0.7500 | 0.7500 | 0.6667 | 1.0000 |" in md
    assert "Residuals" not in md


def test_first_model_has_no_champion_columns():
    md = report.evaluation_markdown(CLS, _cls_evaluation(False), Y_CLS)
    assert "vs no champion yet" in md and "no champion yet; challenger roc_auc=0.8000 meets the floor 0.7" in md
    assert "| **roc_auc** | 0.8000 | – | – |" in md
    assert "champion precision" not in md
    assert "Full Evidently report" not in md


def test_regression_summary_shows_residuals_and_worst_errors():
    y = pd.Series([10.0, 20.0, 30.0, 40.0])
    ch = pd.DataFrame({"prediction": [12.0, 19.0, 30.0, 30.0]})     # residuals +2, -1, 0, -10
    champ = pd.DataFrame({"prediction": [10.0, 24.0, 30.0, 40.0]})  # residuals 0, +4, 0, 0
    decision = decide_promotion(REG, "3", 5.1, "2", 2.0)
    md = report.evaluation_markdown(REG, Evaluation(decision, {"rmse": 5.1}, {"rmse": 2.0}, ch, champ), y)
    assert "Decision: **KEEP CHAMPION**" in md and "absolute floor 10" in md
    assert "| mean residual | -2.2500 | 1.0000 |" in md
    assert "| max |error| | 10.0000 | 4.0000 |" in md
    worst = md.split("Largest challenger errors")[1]
    assert worst.index("| 3 | 40.0000 | 30.0000 | -10.0000 |") < worst.index("| 0 | 10.0000 | 12.0000 | 2.0000 |")
    assert "Per class" not in md


def test_residual_summary_values():
    s = report.residual_summary(pd.Series([0.0] * 10), pd.Series([float(i) for i in range(10)]))
    assert s["mean residual"] == pytest.approx(4.5)
    assert s["median residual"] == pytest.approx(4.5)
    assert s["p90 |error|"] == pytest.approx(8.1)
    assert s["max |error|"] == 9.0


def test_a_section_renders_only_when_its_data_is_present(monkeypatch):
    def extra_section(r: report.ReportInput):  # how an added analysis plugs in
        ci = r.evaluation.extra.get("delta_ci")
        return f"#### Difference CI\n\n{ci[0]:+.3f} .. {ci[1]:+.3f}" if ci else None

    monkeypatch.setattr(report, "SECTIONS", [*report.SECTIONS, extra_section])
    ev = _cls_evaluation(True)
    assert "Difference CI" not in report.evaluation_markdown(CLS, ev, Y_CLS)
    ev.extra["delta_ci"] = (0.01, 0.2)
    assert report.evaluation_markdown(CLS, ev, Y_CLS).endswith("#### Difference CI\n\n+0.010 .. +0.200")


def test_artifact_url_extends_the_run_page():
    assert (report.mlflow_artifact_url("http://127.0.0.1:5000/#/experiments/1/runs/abc/", "evaluation/e_v1.html")
            == "http://127.0.0.1:5000/#/experiments/1/runs/abc/artifacts/evaluation/e_v1.html")
