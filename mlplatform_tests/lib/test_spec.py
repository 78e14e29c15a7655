"""Spec loading: the examples are valid; every bad spec names file, field and problem."""

from pathlib import Path

import pytest

from mlplatform_assets.cli import main
from mlplatform_assets.lib.config import examples_models_dir
from mlplatform_assets.lib.spec import SpecError, load_spec, load_specs

GOOD = """\
name: churn
task: classification
source: {uri: data/}
timestamp_column: ts
partition_start: 2026-01-01
target: {column: y}
features: {numeric: [a, b], categorical: [c]}
estimator: {class_path: sklearn.linear_model.LogisticRegression}
metrics: {primary: roc_auc}
"""


def write(tmp_path: Path, text: str, name: str = "churn") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_examples_are_valid(tmp_path):
    specs = load_specs(examples_models_dir(), state_dir=str(tmp_path))
    assert [s.name for s in specs] == ["customer_churn", "delivery_time"]
    churn, delivery = specs
    assert churn.task == "classification" and churn.higher_is_better
    assert delivery.task == "regression" and not delivery.higher_is_better  # rmse: lower is better
    assert churn.source.uri == f"{tmp_path}/example-data/customer_churn"  # ${MLPLATFORM_HOME} resolved
    assert churn.source.layout == "daily_files" and churn.source.format == "parquet"


def test_defaults_and_relative_paths(tmp_path):
    spec = load_spec(write(tmp_path, GOOD), state_dir=str(tmp_path))
    assert spec.source.uri == str(tmp_path / "data")  # relative to the spec file
    assert spec.metrics.direction == "maximize"
    assert spec.training.window_days == 60 and spec.schedule.enabled is False
    assert len(spec.sha256) == 64
    assert spec.sha256 == load_spec(write(tmp_path, GOOD), state_dir=str(tmp_path)).sha256


@pytest.mark.parametrize("change, field, problem", [
    (("task: classification", "task: clustering"), "task", "'classification' or 'regression'"),
    (("metrics: {primary: roc_auc}", "metrics: {primary: auc}"), "metrics.primary", "unknown metric 'auc'"),
    (("metrics: {primary: roc_auc}", "metrics: {primary: rmse}"), "(top level)", "'rmse' is a regression metric"),
    (("sklearn.linear_model.LogisticRegression", "sklearn.linear_model.Nope"), "estimator.class_path", "cannot import"),
    (("sklearn.linear_model.LogisticRegression", "sklearn.ensemble.RandomForestRegressor"), "(top level)",
     "is a regressor but task is classification"),
    (("partition_start: 2026-01-01", "partition_start: yesterday"), "partition_start", "date"),
    (("target: {column: y}\n", ""), "target", "required field is missing"),
    (("features: {numeric: [a, b], categorical: [c]}", "features: {}"), "features", "or set infer: true"),
    (("features: {numeric: [a, b], categorical: [c]}", "features: {numeric: [a], categorical: [a]}"), "features",
     "both numeric and categorical"),
    (("task: classification", "task: classification\ntraning: {window_days: 3}"), "traning", "unknown field"),
    (("metrics: {primary: roc_auc}", "metrics: {primary: roc_auc}\ntraining: {window_days: 5, holdout_days: 9}"),
     "training", "must be smaller than window_days"),
    (("metrics: {primary: roc_auc}", "metrics: {primary: roc_auc}\nschedule: {cron: 'every day'}"),
     "schedule.cron", "not a 5-field cron"),
    (("metrics: {primary: roc_auc}", "metrics: {primary: roc_auc}\nschedule: {timezone: Mars/Base}"),
     "schedule.timezone", "unknown timezone"),
    (("source: {uri: data/}", "source: {uri: data/, file_pattern: day.csv}"), "source.file_pattern", "{date}"),
    (("name: churn", "name: Churn-Model"), "name", "should match pattern"),
])
def test_bad_spec_names_file_field_and_problem(tmp_path, change, field, problem):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(SpecError) as err:
        load_spec(path, state_dir=str(tmp_path))
    msg = str(err.value)
    assert msg.startswith(str(path)), msg
    assert f": {field}:" in msg and problem in msg, msg


def test_unreadable_yaml_and_name_mismatch(tmp_path):
    with pytest.raises(SpecError, match=r"not valid YAML"):
        load_spec(write(tmp_path, "name: [unclosed"), state_dir=str(tmp_path))
    with pytest.raises(SpecError, match=r"must match the file name 'other'"):
        load_spec(write(tmp_path, GOOD, name="other"), state_dir=str(tmp_path))
    with pytest.raises(SpecError, match=r"cannot read spec file"):
        load_spec(tmp_path / "absent.yaml", state_dir=str(tmp_path))


def test_unset_variable_is_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("CHURN_BUCKET", raising=False)
    path = write(tmp_path, GOOD.replace("uri: data/", "uri: s3://${CHURN_BUCKET}/daily"))
    with pytest.raises(SpecError, match=r"\$\{CHURN_BUCKET\}, which is not set"):
        load_spec(path, state_dir=str(tmp_path))
    monkeypatch.setenv("CHURN_BUCKET", "acme")
    assert load_spec(path, state_dir=str(tmp_path)).source.uri == "s3://acme/daily"


def test_load_specs_reports_every_bad_file(tmp_path):
    write(tmp_path, GOOD.replace("task: classification", "task: nope"), name="churn")
    write(tmp_path, GOOD.replace("name: churn", "name: other").replace("roc_auc", "nope"), name="other")
    with pytest.raises(SpecError) as err:
        load_specs(tmp_path, state_dir=str(tmp_path))
    assert "churn.yaml: task" in str(err.value) and "other.yaml: metrics.primary" in str(err.value)


def test_validate_spec_cli(tmp_path, capsys):
    good = write(tmp_path, GOOD)
    assert main(["validate-spec", str(good)]) == 0
    assert "OK (churn: classification" in capsys.readouterr().out
    bad = write(tmp_path, GOOD.replace("roc_auc", "auc"), name="bad")
    assert main(["validate-spec", str(bad)]) == 2
    assert "metrics.primary: unknown metric 'auc'" in capsys.readouterr().err
