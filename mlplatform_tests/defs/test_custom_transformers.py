"""Custom feature transformers (``features.transformers``) from an operator-trusted plugin package, under the
one trust configuration (``MLPLATFORM_TRUSTED_MODULES``): spec validation, training/registration, serving,
and refusal at load once the module is no longer trusted.

The plugin is ``mlplatform_tests/plugins/acme_features`` (CI pip-installs it; otherwise it is put on sys.path).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlplatform_assets.cli import main, run_lifecycle
from mlplatform_assets.lib.data.example_data import customer_churn
from mlplatform_assets.lib.model.features import build_pipeline, fit_pipeline
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry, RegistryError
from mlplatform_assets.lib.serving import ThreadedServer, create_app
from mlplatform_assets.lib.serving.model import ModelLoadError, load_version
from mlplatform_assets.lib.spec import SpecError, parse_spec
from mlplatform_tests.conftest import (
    SMALL_END,
    SMALL_START,
    small_spec_yaml,
    write_small_spec,
)
from mlplatform_tests.lib.model.test_model_families import ROW, _predict, require

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "plugins" / "acme_features"
TRANSFORMERS = """\
  transformers:
    - class_path: acme_features.RatioFeature
      params: {numerator: total_charges, denominator: tenure_months, output: charges_per_month}
      adds: {numeric: [charges_per_month]}
    - class_path: acme_features.SpendBand
      params: {column: monthly_charges, output: spend_band}
      adds: {categorical: [spend_band]}
"""
DOCS = Path(__file__).resolve().parents[2] / "docs" / "adding-a-model.md"


@pytest.fixture()
def plugin(monkeypatch):
    """acme_features importable (installed, or from the source tree) and trusted by the operator."""
    if importlib.util.find_spec("acme_features") is None:
        monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setenv("MLPLATFORM_TRUSTED_MODULES", "acme_features")


def with_transformers(spec_yaml: str, transformers: str = TRANSFORMERS) -> str:
    anchor = "  categorical: [plan, contract, payment_method, region]\n"
    assert anchor in spec_yaml
    return spec_yaml.replace(anchor, anchor + transformers)


def _spec(transformers: str = TRANSFORMERS):
    return parse_spec(with_transformers(small_spec_yaml("/unused"), transformers), variables={})


def test_pipeline_runs_transformers_first_and_feeds_their_columns_to_preprocessing(plugin):
    spec = _spec()
    numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
    frame = customer_churn(SMALL_START, rows=300)
    pipeline = fit_pipeline(spec, build_pipeline(spec, numeric, categorical), frame[[*numeric, *categorical]],
                            frame["churned"])
    assert [name for name, _ in pipeline.steps] == ["custom_0", "custom_1", "preprocess", "model"]
    preprocess = pipeline.named_steps["preprocess"]
    assert preprocess.transformers_[0][2][-1] == "charges_per_month"
    assert preprocess.transformers_[1][2][-1] == "spend_band"
    names = list(preprocess.get_feature_names_out())
    assert "numeric__charges_per_month" in names
    assert {"categorical__spend_band_low", "categorical__spend_band_mid", "categorical__spend_band_high"} <= set(names)


def test_transformer_that_drops_its_declared_column_fails_training_naming_it(plugin):
    spec = _spec(TRANSFORMERS.replace("adds: {numeric: [charges_per_month]}", "adds: {numeric: [per_month]}"))
    numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
    frame = customer_churn(SMALL_START, rows=100)
    with pytest.raises(ValueError, match=r"features.transformers.0 \(acme_features.RatioFeature\): transform "
                                         r"output lacks column\(s\) \['per_month'\]"):
        fit_pipeline(spec, build_pipeline(spec, numeric, categorical), frame[[*numeric, *categorical]],
                     frame["churned"])


@pytest.mark.parametrize("transformers, problem", [
    (TRANSFORMERS.replace("acme_features.RatioFeature", "acme_features.not_a_transformer"),
     "features.transformers.0.class_path: 'acme_features.not_a_transformer' is not a transformer"),
    (TRANSFORMERS.replace("output: charges_per_month", "outptu: charges_per_month"),
     "features.transformers.0.params: unknown parameter(s) ['outptu'] for RatioFeature"),
    (TRANSFORMERS.replace("[charges_per_month]", "[tenure_months]"),
     "features: transformers.0.adds: ['tenure_months'] already named"),
    (TRANSFORMERS.replace("acme_features.SpendBand", "sklearn.preprocessing.FunctionTransformer"),
     "features.transformers.1.class_path: 'sklearn.preprocessing.FunctionTransformer' is not in a trusted module"),
])
def test_bad_transformer_entries_are_spec_errors(plugin, transformers, problem):
    with pytest.raises(SpecError) as err:
        _spec(transformers)
    assert problem in str(err.value)


def test_untrusted_plugin_fails_validate_spec_with_exit_2_naming_the_variable(plugin, platform_env, small_source,
                                                                              monkeypatch, capsys):
    path = write_small_spec(Path(platform_env.models_dir), small_source)
    path.write_text(with_transformers(path.read_text()))
    monkeypatch.setenv("MLPLATFORM_TRUSTED_MODULES", "other_plugins")
    assert main(["validate-spec", str(path)]) == 2
    err = capsys.readouterr().err
    assert (f"{path}: features.transformers.0.class_path: 'acme_features.RatioFeature' is not in a trusted "
            "module: custom transformers are imported only from modules the operator lists in "
            "MLPLATFORM_TRUSTED_MODULES (trusted now: other_plugins)") in err
    monkeypatch.setenv("MLPLATFORM_TRUSTED_MODULES", "acme_features")
    assert main(["validate-spec", str(path)]) == 0


def _docs_example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"docs/adding-a-model.md lost its {name} example"
    return match.group(1)


@pytest.mark.parametrize("name, estimator, transformers", [
    ("lightgbm", "lightgbm.LGBMClassifier", []),
    ("transformer", "sklearn.ensemble.HistGradientBoostingClassifier",
     ["acme_features.RatioFeature", "acme_features.SpendBand"]),
])
def test_docs_examples_are_valid_specs(plugin, name, estimator, transformers):
    if estimator.startswith("lightgbm"):
        require("lightgbm")
    spec = parse_spec(_docs_example(name), f"docs example {name}", variables={})
    assert spec.estimator.class_path == estimator
    assert [t.class_path for t in spec.features.transformers] == transformers


@pytest.mark.slow
def test_plugin_model_trains_registers_serves_and_is_refused_once_untrusted(plugin, platform_env, small_source,
                                                                           monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # the server sets it; restored after
    # 30 boosting rounds on 2,400 rows lose to a logistic regression (-0.046 AUC, significant): the baseline check
    # is off because this test is about the plugin's way into serving, not about the model's quality.
    path = write_small_spec(Path(platform_env.models_dir), small_source,
                            estimator="sklearn.ensemble.HistGradientBoostingClassifier", params="{max_iter: 30}",
                            promotion="{must_beat_baseline: false}")
    path.write_text(with_transformers(path.read_text()))
    summary = run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]
    assert summary["success"], summary
    registry = Registry(MlflowSettings.from_config(platform_env))
    assert str(registry.champion("small_churn").version) == "1"
    pipeline = registry.load_pipeline("small_churn", "1")
    assert type(pipeline.named_steps["custom_0"]).__name__ == "RatioFeature"
    assert pipeline.named_steps["custom_1"].edges_.shape == (2,)  # fitted state travelled in the file
    expected = pipeline.predict_proba(pd.DataFrame([ROW]))[0]

    server = ThreadedServer(create_app("small_churn", platform_env, poll_interval_s=0.2, prediction_log=False,
                                       allow_unauthenticated=True)).start(wait_model=True)
    try:
        answer = _predict(server.url, ROW)
        assert str(answer["model_version"]) == "1"
        assert answer["predictions"][0] == int(np.argmax(expected))
    finally:
        server.stop()

    # The operator stops trusting the plugin: every loader refuses the registered model, naming the
    # class and the variable.
    monkeypatch.setenv("MLPLATFORM_TRUSTED_MODULES", "")
    with pytest.raises(RegistryError) as training_side:
        registry.load_pipeline("small_churn", "1")
    with pytest.raises(ModelLoadError) as serving_side:
        load_version(platform_env, "small_churn", "1", max_rows=10)
    for message in (str(training_side.value), str(serving_side.value)):
        assert "acme_features.RatioFeature" in message and "acme_features.SpendBand" in message
        assert ("a custom class loads only from a module listed in MLPLATFORM_TRUSTED_MODULES; "
                "trusted now: none") in message
