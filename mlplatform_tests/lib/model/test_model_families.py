"""LightGBM and XGBoost models: trained, gated, registered, served on the fast path and hot-swapped like
scikit-learn ones; saved as skops files whose family classes load from state only, under the one trust policy.

Each test needs its family installed (``pip install -e '.[lightgbm,xgboost]'``): skipped locally without
it, failed under CI (which installs the extras).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.lib.data.example_data import customer_churn
from mlplatform_assets.lib.model import model_io
from mlplatform_assets.lib.model.features import build_pipeline, fit_pipeline
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_assets.lib.serving import ThreadedServer, create_app
from mlplatform_assets.lib.serving.model import ModelHandle
from mlplatform_assets.lib.serving.validation import Validator
from mlplatform_assets.lib.spec import parse_spec
from mlplatform_tests.conftest import (
    SMALL_END,
    SMALL_START,
    small_spec_yaml,
    write_small_spec,
)
from mlplatform_tests.lib.model.test_model_io import (
    _calls_with_key,
    _node,
    rezip_with_schema,
)

# family -> (classifier class path, weak params for v1, strong params for v2, the classes a file holds)
FAMILIES = {
    "lightgbm": ("lightgbm.LGBMClassifier", "{n_estimators: 1, num_leaves: 2}",
                 "{n_estimators: 80, num_leaves: 15, learning_rate: 0.1}",
                 {"lightgbm.sklearn.LGBMClassifier", "lightgbm.basic.Booster"}),
    "xgboost": ("xgboost.XGBClassifier", "{n_estimators: 1, max_depth: 1}",
                "{n_estimators: 80, max_depth: 4, learning_rate: 0.1}",
                {"xgboost.sklearn.XGBClassifier", "xgboost.core.Booster"}),
}
ROW = {"tenure_months": 3, "monthly_charges": 80.5, "total_charges": 240.0, "usage_gb": 10.0, "support_calls": 4,
       "days_since_last_login": 20.0, "age": 30, "plan": "premium", "contract": "monthly",
       "payment_method": "voucher", "region": "coastal"}


def require(family: str) -> None:
    if importlib.util.find_spec(family) is None:
        message = f"{family} is not installed (pip install -e '.[{family}]')"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI installs the model-family extras, so this must run there")
        pytest.skip(message)


def _fitted(family: str, params: str | None = None):
    class_path, _, strong, _ = FAMILIES[family]
    spec = parse_spec(small_spec_yaml("/unused", estimator=class_path, params=params or strong), variables={})
    numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
    frame = customer_churn(SMALL_START, rows=400)
    frame.loc[::7, "usage_gb"] = np.nan
    X, y = frame[[*numeric, *categorical]], frame["churned"]
    return fit_pipeline(spec, build_pipeline(spec, numeric, categorical), X, y), X


@pytest.mark.parametrize("family", FAMILIES)
def test_family_model_round_trips_through_skops_under_the_policy(family, tmp_path):
    require(family)
    pipeline, X = _fitted(family)
    trusted = model_io.trusted_types_for(pipeline)  # the registration check accepts it
    assert FAMILIES[family][3] <= set(trusted)
    path = tmp_path / "model.skops"
    path.write_bytes(skops.io.dumps(pipeline))
    loaded = model_io.load_skops_file(path, family)
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), pipeline.predict_proba(X))
    requirements = model_io.pip_requirements_for(pipeline)
    assert any(r.startswith(f"{family}==") for r in requirements), requirements


@pytest.mark.parametrize("family", FAMILIES)
def test_serving_fast_path_matches_the_pipeline_and_uses_one_thread(family):
    require(family)
    pipeline, X = _fitted(family)
    expected, expected_proba = pipeline.predict(X), pipeline.predict_proba(X)
    classes = pipeline.classes_.tolist()
    handle = ModelHandle(name="m", version="1", model=pipeline, columns=[], validator=Validator([], 10),
                         classes=classes, has_proba=True)
    assert handle._argmax, "the family classifier takes the predict_proba-then-argmax path"
    assert pipeline[-1].get_params()["n_jobs"] == 1
    result = handle.predict(X)
    np.testing.assert_array_equal(result.predictions, expected)
    np.testing.assert_allclose(result.proba, expected_proba)


def _family_file_with(family: str, edit) -> bytes:
    """A real fitted family pipeline's skops bytes with ``edit(nodes_by_class)`` applied to its schema."""
    pipeline, _ = _fitted(family, FAMILIES[family][1])
    src = zipfile.ZipFile(io.BytesIO(skops.io.dumps(pipeline)))
    schema = json.loads(src.read("schema.json"))
    by_class: dict[str, dict] = {}
    for node in model_io._nodes(schema):
        by_class.setdefault(f"{node['__module__']}.{node['__class__']}", node)
    edit(by_class)
    return rezip_with_schema(src, schema)


def _add_attribute(node: dict, key: str, value: dict) -> None:
    node["content"]["content"][key] = value
    node["content"]["key_types"]["content"].append(_node("TypeNode", "builtins", "str"))


BOOSTERS = {"lightgbm": "lightgbm.basic.Booster", "xgboost": "xgboost.core.Booster"}


@pytest.mark.parametrize("family", FAMILIES)
def test_code_hidden_in_a_booster_state_is_refused_and_never_runs(family, tmp_path):
    require(family)
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w').write('ran')"
    data = _family_file_with(family, lambda nodes: _add_attribute(
        nodes[BOOSTERS[family]], "_payload", _calls_with_key(_node("FunctionNode", "builtins", "exec"), code)))
    try:  # control: a loader that trusts what skops reports runs it
        skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    except Exception:  # noqa: BLE001 - the payload may break the object after running
        pass
    assert marker.exists(), "the crafted file did not run its payload; the test would prove nothing"
    marker.unlink()
    path = tmp_path / "crafted.skops"
    path.write_bytes(data)
    with pytest.raises(model_io.ModelTrustError, match=r"builtins\.exec"):
        model_io.load_skops_file(path, "crafted")
    assert not marker.exists()


def test_lightgbm_defaultdict_factory_must_be_a_container_type(tmp_path):
    require("lightgbm")

    def factory_exec(nodes):
        nodes["collections.defaultdict"]["content"]["default_factory"] = _node("TypeNode", "builtins", "exec")

    path = tmp_path / "crafted.skops"
    path.write_bytes(_family_file_with("lightgbm", factory_exec))
    with pytest.raises(model_io.ModelTrustError, match=r"collections\.defaultdict with factory builtins\.exec"):
        model_io.load_skops_file(path, "crafted")


def test_xgboost_booster_whose_model_bytes_are_a_function_is_refused(tmp_path):
    require("xgboost")

    def handle_is_function(nodes):
        nodes["xgboost.core.Booster"]["content"]["content"]["handle"] = _node("FunctionNode", "os", "system")

    path = tmp_path / "crafted.skops"
    path.write_bytes(_family_file_with("xgboost", handle_is_function))
    with pytest.raises(model_io.ModelTrustError, match=r"os\.system \(a function: never loaded\)"):
        model_io.load_skops_file(path, "crafted")


def test_family_classes_are_refused_when_the_family_is_not_installed(monkeypatch):
    """The family allow-list is scoped: with neither family installed, their classes are plain refusals."""
    schema = {"protocol": model_io._skops_protocol(), "__loader__": "ObjectNode",
              "__module__": "lightgbm.basic", "__class__": "Booster", "content": {}}
    monkeypatch.setattr(model_io, "installed_model_families", lambda: [])
    model_io._allowed_types_by_node_kind.cache_clear()
    try:
        assert model_io.DEFAULT_POLICY.refusals(schema) == ["lightgbm.basic.Booster"]
    finally:
        model_io._allowed_types_by_node_kind.cache_clear()


# --- end to end: Dagster lifecycle -> MLflow -> gate -> served -> hot swap ---------------------------------

def _predict(url: str, row: dict) -> dict:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps({"dataframe_records": [row]}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_lifecycle_serves_and_hot_swaps(family, platform_env, small_source, monkeypatch):
    require(family)
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # the server sets it; restored after
    class_path, weak, strong, _ = FAMILIES[family]
    # The weak first model (a stump) is no better than the linear baseline by design: the baseline check is off so
    # that it becomes the champion the strong one then replaces.
    spec_path = write_small_spec(Path(platform_env.models_dir), small_source, estimator=class_path, params=weak,
                                 promotion="{must_beat_baseline: false}")
    first = run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]
    assert first["success"], first
    registry = Registry(MlflowSettings.from_config(platform_env))
    assert str(registry.champion("small_churn").version) == "1"
    requirements = Path(registry.client.download_artifacts(registry.get_version("small_churn", "1").run_id,
                                                            "model/requirements.txt")).read_text()
    assert f"{family}==" in requirements

    server = ThreadedServer(create_app("small_churn", platform_env, poll_interval_s=0.2, prediction_log=False,
                                       allow_unauthenticated=True)).start(wait_model=True)
    try:
        answer = _predict(server.url, ROW)
        assert str(answer["model_version"]) == "1" and answer["predictions"][0] in (0, 1)

        spec_path.write_text(spec_path.read_text().replace(weak, strong))
        second = run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]
        assert second["success"], second
        assert str(registry.champion("small_churn").version) == "2", "the stronger model passes the gate"
        deadline = time.monotonic() + 30
        while str(_predict(server.url, ROW)["model_version"]) != "2":
            assert time.monotonic() < deadline, "the server did not swap to version 2"
            time.sleep(0.1)
        expected = registry.load_pipeline("small_churn", "2").predict_proba(
            __import__("pandas").DataFrame([ROW]))[0, 1]
        answer = _predict(server.url, ROW)
        assert answer["predictions"][0] == int(expected > 0.5)
    finally:
        server.stop()
