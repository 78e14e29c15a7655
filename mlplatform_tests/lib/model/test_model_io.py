"""The model trust policy: crafted skops files that would run code are refused, normal models load.

Every crafted file below embeds its payload in a real fitted pipeline and is first shown to WORK
against a naive skops load (trusting whatever ``get_untrusted_types`` reports): the payload creates
a marker file. Then the same bytes, registered as a model version in a real MLflow store, must be
refused by ``Registry.load_pipeline`` and by serving's ``load_version``, naming the type, with no
marker file.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io
from threadpoolctl import threadpool_limits

from mlplatform_assets.lib.data.example_data import customer_churn, delivery_time
from mlplatform_assets.lib.data.validation import infer_feature_columns
from mlplatform_assets.lib.model import model_io
from mlplatform_assets.lib.model.features import build_pipeline
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry, RegistryError
from mlplatform_assets.lib.serving import testing as T
from mlplatform_assets.lib.serving.model import ModelLoadError, load_version
from mlplatform_assets.lib.spec import EstimatorSpec, load_spec

EXAMPLES = Path(model_io.__file__).resolve().parents[2] / "examples" / "models"
CRAFTED = "crafted-model"


# --- building crafted skops files ------------------------------------------------------------------

def _node(kind: str, module: str, cls: str, **fields) -> dict:
    return {"__loader__": kind, "__module__": module, "__class__": cls, **fields}


def _str(value: str) -> dict:
    return _node("JsonNode", "builtins", "str", content=json.dumps(value), is_json=True)


def _calls_with_key(callable_node: dict, key: str) -> dict:
    """A dict whose key type is ``callable_node``: skops calls it with ``key`` while building the dict."""
    return _node("DictNode", "builtins", "dict", content={key: _str("x")},
                 key_types=_node("ListNode", "builtins", "list", content=[callable_node]))


def _embed(base: bytes, payload: dict, extra_files: dict[str, bytes] | None = None) -> bytes:
    """``base`` (a real pipeline's skops bytes) with ``payload`` as one more pipeline attribute."""
    src = zipfile.ZipFile(io.BytesIO(base))
    schema = json.loads(src.read("schema.json"))
    attrs = schema["content"]
    attrs["content"]["_payload"] = payload
    attrs["key_types"]["content"].append(_node("TypeNode", "builtins", "str"))
    return rezip_with_schema(src, schema, extra_files)


def rezip_with_schema(src: zipfile.ZipFile, schema: dict, extra_files: dict[str, bytes] | None = None) -> bytes:
    """A skops file: ``src``'s members with ``schema`` as its schema.json, plus ``extra_files``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        dst.writestr("schema.json", json.dumps(schema))
        for name in src.namelist():
            if name != "schema.json":
                dst.writestr(name, src.read(name))
        for name, data in (extra_files or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


class _OpensMarker:
    """Pickled into the file numpy.load is tricked into reading: unpickling creates the marker."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def _pickle_bait(marker: Path) -> Path:
    """Where the numpy.load payload looks for its pickle (written by :func:`_write_pickle_bait`)."""
    return marker.with_name(marker.name + ".pkl")


def _write_pickle_bait(marker: Path) -> None:
    _pickle_bait(marker).write_bytes(pickle.dumps(_OpensMarker(str(marker))))


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _payloads(marker: Path) -> dict[str, tuple[dict, dict[str, bytes], list[str]]]:
    """name -> (payload node, extra zip members, refused names the error must contain)."""
    code = f"open({str(marker)!r}, 'w').write('ran')"
    pickle_file = _pickle_bait(marker)
    return {
        "builtins.exec function as a dict key type": (
            _calls_with_key(_node("FunctionNode", "builtins", "exec"), code), {}, ["builtins.exec"]),
        "builtins.eval as a type": (
            _calls_with_key(_node("TypeNode", "builtins", "eval"), code), {}, ["builtins.eval"]),
        "os.system function": (
            _calls_with_key(_node("FunctionNode", "os", "system"), f"touch {marker}"), {}, ["os.system"]),
        "operator.call chain (OperatorFuncNode)": (
            _node("OperatorFuncNode", "operator", "call", attrs=_node(
                "TupleNode", "builtins", "tuple", content=[_node("FunctionNode", "builtins", "exec"), _str(code)])),
            {}, ["operator.call", "builtins.exec"]),
        "bound method ndarray.tofile on an allowed array (MethodNode)": (
            _calls_with_key(_node("MethodNode", "numpy", "ndarray", content={
                "func": "tofile",
                "obj": _node("NdArrayNode", "numpy", "ndarray", type="numpy", file="payload.npy")}), str(marker)),
            {"payload.npy": _npy(np.arange(3))}, ["numpy.ndarray.tofile"]),
        "numpy.load with allow_pickle via functools.partial": (
            _calls_with_key(_node("PartialNode", "functools", "partial", content={
                "func": _node("FunctionNode", "numpy", "load"),
                "args": _node("TupleNode", "builtins", "tuple", content=[]),
                "kwds": _node("DictNode", "builtins", "dict", content={"allow_pickle": _node(
                    "JsonNode", "builtins", "str", content="true", is_json=True)},
                    key_types=_node("ListNode", "builtins", "list", content=[_node("TypeNode", "builtins", "str")])),
                "namespace": _node("JsonNode", "builtins", "str", content="null", is_json=True)}),
                str(pickle_file)),
            {}, ["numpy.load", "functools.partial"]),
        "a function under sklearn (sklearn.utils._testing) as a type": (
            _calls_with_key(_node("TypeNode", "sklearn.utils._testing",
                                  "assert_run_python_script_without_output"), code),
            {}, ["sklearn.utils._testing.assert_run_python_script_without_output"]),
    }


PAYLOAD_NAMES = list(_payloads(Path("/nonexistent/marker")))


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow store holding one normal version of CRAFTED (its model file gets replaced)."""
    config = T.make_config(tmp_path_factory.mktemp("model-io-store"))
    assert T.register_model(config, CRAFTED, "logreg", n_rows=200) == "1"
    return config


@pytest.fixture(scope="module")
def base_model(store) -> bytes:
    return (T.model_artifact_dir(store, CRAFTED, "1") / "model.skops").read_bytes()


def _fitted(kind: str, estimator: str, params: dict, rows: int = 400):
    """A pipeline exactly as training builds it (features.build_pipeline), fitted on example data."""
    spec = load_spec(EXAMPLES / ("customer_churn.yaml" if kind == "classification" else "delivery_time.yaml"))
    spec = spec.model_copy(update={"estimator": EstimatorSpec(class_path=estimator, params=params)})
    make = customer_churn if kind == "classification" else delivery_time
    frame = make(dt.date(2026, 6, 1), rows=rows)
    numeric, categorical = infer_feature_columns(spec, frame)
    frame.loc[::9, numeric[0]] = np.nan  # missing values go through the imputers
    X, y = frame[[*numeric, *categorical]], frame[spec.target.column]
    with threadpool_limits(1):  # OpenMP threads only add overhead on a few hundred rows
        return build_pipeline(spec, numeric, categorical).fit(X, y), X


# --- the crafted files -----------------------------------------------------------------------------

@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_crafted_payload_is_real(payload, base_model, tmp_path):
    """Control: trusting what skops reports (the old prefix lists did the same) runs the payload."""
    marker = tmp_path / "marker"
    _write_pickle_bait(marker)
    node, files, _ = _payloads(marker)[payload]
    data = _embed(base_model, node, files)
    try:
        skops.io.loads(data, trusted=skops.io.get_untrusted_types(data=data))
    except Exception:  # noqa: BLE001 - some payloads break the object they sit in after running
        pass
    assert marker.exists(), f"{payload}: the crafted file did not run its payload; the test would prove nothing"


@pytest.mark.parametrize("payload", PAYLOAD_NAMES)
def test_crafted_model_version_is_refused_by_every_loader(payload, store, base_model, tmp_path):
    marker = tmp_path / "marker"
    _write_pickle_bait(marker)
    node, files, refused_names = _payloads(marker)[payload]
    (T.model_artifact_dir(store, CRAFTED, "1") / "model.skops").write_bytes(_embed(base_model, node, files))
    registry = Registry(MlflowSettings.from_config(store))

    with pytest.raises(RegistryError, match="outside the model trust allow-list") as training_side:
        registry.load_pipeline(CRAFTED, "1")
    with pytest.raises(ModelLoadError, match="outside the model trust allow-list") as serving_side:
        load_version(store, CRAFTED, "1", max_rows=10)
    for name in refused_names:
        assert name in str(training_side.value) and name in str(serving_side.value)
    assert not marker.exists()


def test_the_normal_model_of_the_crafted_store_still_loads(store, base_model):
    (T.model_artifact_dir(store, CRAFTED, "1") / "model.skops").write_bytes(base_model)
    pipeline = Registry(MlflowSettings.from_config(store)).load_pipeline(CRAFTED, "1")
    handle = load_version(store, CRAFTED, "1", max_rows=10)
    X, _ = T.mixed_frame(20)
    assert (pipeline.predict(X) == handle.model.predict(X)).all()
    assert set(handle.classes) == {0, 1}


def test_older_skops_protocol_is_refused(base_model, tmp_path):
    """An older protocol selects skops' older node classes: only the protocol this platform writes loads."""
    src = zipfile.ZipFile(io.BytesIO(base_model))
    schema = json.loads(src.read("schema.json"))
    schema["protocol"] = model_io._skops_protocol() - 1
    path = tmp_path / "old.skops"
    with zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, json.dumps(schema) if name == "schema.json" else src.read(name))
    with pytest.raises(model_io.ModelTrustError, match=f"skops protocol {schema['protocol']}"):
        model_io.load_skops_file(path, "old model")


def test_unreadable_and_non_skops_artifacts_are_clear_errors(tmp_path):
    path = tmp_path / "model.skops"
    path.write_bytes(b"not a zip file")
    with pytest.raises(model_io.ModelFileError, match="old model: not a readable skops file"):
        model_io.load_skops_file(path, "old model")
    with pytest.raises(model_io.ModelFileError, match="serialized with 'cloudpickle'"):
        model_io.skops_path(tmp_path, {"sklearn": {"serialization_format": "cloudpickle"}}, "m v1")
    with pytest.raises(model_io.ModelFileError, match="plain file name"):
        model_io.skops_path(tmp_path, {"sklearn": {"serialization_format": "skops", "pickled_model": "../x"}}, "m")
    with pytest.raises(model_io.ModelFileError, match="no sklearn flavor"):
        model_io.skops_path(tmp_path, {"python_function": {}}, "m v1")


# --- save time ---------------------------------------------------------------------------------------

def test_a_pipeline_holding_a_function_is_refused_at_save_time():
    """skops itself trusts numpy ufuncs by default; the platform never loads a function."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipe = make_pipeline(FunctionTransformer(np.log1p), LinearRegression()).fit([[1.0], [2.0], [3.0]], [1, 2, 3])
    assert "numpy.log1p" not in skops.io.get_untrusted_types(data=skops.io.dumps(pipe))
    with pytest.raises(model_io.ModelTrustError, match=r"numpy\.log1p \(a function: never loaded\)"):
        model_io.trusted_types_for(pipe)


ESTIMATORS = [
    ("classification", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 10}),
    ("classification", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 5}),
    ("classification", "sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 5}),
    ("classification", "sklearn.linear_model.LogisticRegression", {"max_iter": 300}),
    ("classification", "sklearn.dummy.DummyClassifier", {}),
    ("regression", "sklearn.ensemble.HistGradientBoostingRegressor", {"max_iter": 10}),
    ("regression", "sklearn.ensemble.RandomForestRegressor", {"n_estimators": 5}),
    ("regression", "sklearn.linear_model.Ridge", {}),
    ("regression", "sklearn.linear_model.LinearRegression", {}),
]


@pytest.mark.parametrize(("task", "estimator", "params"), ESTIMATORS, ids=[e[1].rsplit(".", 1)[1] for e in ESTIMATORS])
def test_platform_pipelines_save_and_load(task, estimator, params, tmp_path):
    pipeline, X = _fitted(task, estimator, params)
    trusted = model_io.trusted_types_for(pipeline)
    assert all(name.split(".")[0] in ("numpy", "sklearn") for name in trusted), trusted
    path = tmp_path / "model.skops"
    skops.io.dump(pipeline, path)
    loaded = model_io.load_skops_file(path, estimator)
    np.testing.assert_array_equal(loaded.predict(X), pipeline.predict(X))


# --- operator-added classes ----------------------------------------------------------------------------

KNN_HELPERS = ["sklearn.metrics._dist_metrics.EuclideanDistance64", "sklearn.neighbors._kd_tree.KDTree"]


def test_operator_can_add_reviewed_classes(tmp_path):
    pipeline, X = _fitted("classification", "sklearn.neighbors.KNeighborsClassifier", {"algorithm": "kd_tree"})
    with pytest.raises(model_io.ModelTrustError, match="allow-list") as refused:
        model_io.trusted_types_for(pipeline)
    assert all(name in str(refused.value) for name in KNN_HELPERS)
    policy = model_io.TrustPolicy.with_extra_types(KNN_HELPERS, "MLPLATFORM_SERVING_TRUSTED_TYPES")
    path = tmp_path / "knn.skops"
    skops.io.dump(pipeline, path)
    with pytest.raises(model_io.ModelTrustError):
        model_io.load_skops_file(path, "knn")
    np.testing.assert_array_equal(model_io.load_skops_file(path, "knn", policy).predict(X), pipeline.predict(X))


@pytest.mark.parametrize(("entry", "reason"), [
    ("builtins.exec", "module 'builtins', which is never trusted"),
    ("os.system", "module 'os', which is never trusted"),
    ("subprocess.Popen", "module 'subprocess', which is never trusted"),
    ("operator.attrgetter", "module 'operator', which is never trusted"),
    ("numpy.load", "not a class"),
    ("sklearn.utils._testing.assert_run_python_script_without_output", "not a class"),
    ("abc.ABCMeta", "metaclass"),
    ("numpy.random.RandomState", "alias of numpy.random.mtrand.RandomState"),
    ("KDTree", "not a dotted class name"),
    ("sklearn.no_such_module.Thing", "cannot be imported"),
])
def test_operator_entries_naming_functions_or_dangerous_modules_are_refused(entry, reason):
    with pytest.raises(model_io.TrustedTypeConfigError, match="MLPLATFORM_SERVING_TRUSTED_TYPES") as exc:
        model_io.TrustPolicy.with_extra_types([KNN_HELPERS[0], entry], "MLPLATFORM_SERVING_TRUSTED_TYPES")
    assert repr(entry) in str(exc.value) and reason in str(exc.value)
    assert KNN_HELPERS[0] not in str(exc.value)  # only the refused entry is named


def test_serving_refuses_to_load_with_a_dangerous_extra_type(store):
    with pytest.raises(ModelLoadError, match=r"MLPLATFORM_SERVING_TRUSTED_TYPES: refused: 'builtins\.eval'"):
        load_version(store, CRAFTED, "1", max_rows=10, extra_trusted=frozenset({"builtins.eval"}))


# --- the allow-list itself -----------------------------------------------------------------------------

def test_allow_list_names_only_classes_and_no_callable_node_kind():
    allowed = model_io._allowed_types_by_node_kind()
    assert not set(allowed) & set(model_io._CALLABLE_NODE_KINDS)
    for kind, names in allowed.items():
        for name in names:
            module, _, attr = name.rpartition(".")
            obj = getattr(importlib.import_module(module), attr)
            assert inspect.isclass(obj) and not issubclass(obj, type), f"{kind}: {name} is not a plain class"
