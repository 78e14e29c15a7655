"""Spec loading: the examples are valid; every bad spec names file, field and problem."""

import importlib.util
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from mlplatform_assets.cli import main
from mlplatform_assets.lib.config import examples_models_dir
from mlplatform_assets.lib.spec import SpecError, load_spec, load_specs, parse_spec

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
     "schedule.cron", "not a valid cron expression"),
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
    # Inside a YAML flow mapping {...} a reference must be quoted (references fill values after parsing).
    path = write(tmp_path, GOOD.replace("uri: data/", 'uri: "s3://${CHURN_BUCKET}/daily"'))
    with pytest.raises(SpecError, match=r": source.uri: references \$\{CHURN_BUCKET\}, which is not set"):
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


# --- specs are data: the estimator allow-list -----------------------------------------------------

def spec_with(tmp_path: Path, change: tuple[str, str], name: str = "churn") -> Path:
    return write(tmp_path, GOOD.replace(*change), name=name)


def load_error(path: Path, tmp_path: Path) -> str:
    with pytest.raises(SpecError) as err:
        load_spec(path, state_dir=str(tmp_path))
    return str(err.value)


EFFECT_MODULE = """\
from pathlib import Path
Path({marker!r}).write_text("imported")

class Model:
    def fit(self, X, y): return self
    def predict(self, X): return X
"""


def test_a_module_outside_the_allow_list_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported.marker"
    (tmp_path / "effect_mod.py").write_text(EFFECT_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    msg = load_error(spec_with(tmp_path, ("sklearn.linear_model.LogisticRegression", "effect_mod.Model")), tmp_path)
    assert ": estimator.class_path: 'effect_mod.Model' is not an allowed estimator" in msg
    assert "MLPLATFORM_TRUSTED_MODULES" in msg
    assert not marker.exists() and "effect_mod" not in sys.modules


@pytest.mark.parametrize("class_path", ["this.Zen", "os.system", "antigravity.x", "sklearn.utils.Bunch",
                                        "sklearn.linear_model._logistic.LogisticRegression"])
def test_standard_library_and_private_paths_are_refused(tmp_path, capsys, class_path):
    before = set(sys.modules)
    msg = load_error(spec_with(tmp_path, ("sklearn.linear_model.LogisticRegression", class_path)), tmp_path)
    assert f"estimator.class_path: {class_path!r} is not an allowed estimator" in msg
    assert set(sys.modules) - before <= {"sklearn.utils"}  # nothing new was imported ("this" prints the Zen)
    assert "Beautiful is better than ugly" not in capsys.readouterr().out


TRUSTED_MODULE = """\
from sklearn.linear_model import LogisticRegression

class TunedClassifier(LogisticRegression):
    pass

class NotAnEstimator:
    def fit(self, X, y): return self
    def predict(self, X): return X
"""


def test_operator_trusted_modules_come_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "acme_models.py").write_text(TRUSTED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = spec_with(tmp_path, ("sklearn.linear_model.LogisticRegression", "acme_models.TunedClassifier"))
    monkeypatch.delenv("MLPLATFORM_TRUSTED_MODULES", raising=False)
    assert "not an allowed estimator" in load_error(path, tmp_path)
    monkeypatch.setenv("MLPLATFORM_TRUSTED_MODULES", "other_pkg, acme_models")
    assert load_spec(path, state_dir=str(tmp_path)).estimator.load_class().__name__ == "TunedClassifier"
    # Trusted or not, only estimator classes are accepted.
    bad = spec_with(tmp_path, ("sklearn.linear_model.LogisticRegression", "acme_models.NotAnEstimator"))
    assert "'acme_models.NotAnEstimator' is not an estimator" in load_error(bad, tmp_path)
    monkeypatch.setenv("MLPLATFORM_TRUSTED_MODULES", "acme models")
    assert "MLPLATFORM_TRUSTED_MODULES: ['acme models'] are not module names" in load_error(path, tmp_path)


def test_supported_families_that_are_not_installed_say_so(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    # CI installs the family extras: hide lightgbm from the (import-free) installed check.
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lightgbm" else real_find_spec(name, *a))
    msg = load_error(spec_with(tmp_path, ("sklearn.linear_model.LogisticRegression", "lightgbm.LGBMClassifier")),
                     tmp_path)
    assert ("estimator.class_path: 'lightgbm.LGBMClassifier': lightgbm is not installed "
            "(pip install 'mlplatform[lightgbm]')") in msg


@pytest.mark.parametrize("class_path, field, problem", [
    ("sklearn.linear_model.lasso_path", "estimator.class_path", "is not an estimator"),  # a function
    ("sklearn.neighbors.KDTree", "estimator.class_path", "is not an estimator"),  # a class, not an estimator
    ("sklearn.neighbors.NearestNeighbors", "estimator.class_path", "is not an estimator"),  # no predict
    ("sklearn.svm.OneClassSVM", "(top level)", "OneClassSVM is neither a classifier nor a regressor"),
    ("sklearn.linear_model.Ridge", "(top level)", "Ridge is a regressor but task is classification"),
])
def test_only_estimators_of_the_task_are_accepted(tmp_path, class_path, field, problem):
    msg = load_error(spec_with(tmp_path, ("sklearn.linear_model.LogisticRegression", class_path)), tmp_path)
    assert f": {field}: " in msg and problem in msg, msg


@pytest.mark.parametrize("params, problem", [
    ("{bogus: 1}", "unknown parameter(s) ['bogus'] for LogisticRegression"),
    ("{max_iter: many}", "The 'max_iter' parameter of LogisticRegression must be an int"),
    ("{C: -1.0}", "The 'C' parameter of LogisticRegression must be a float in the range (0.0, inf]"),
])
def test_estimator_params_are_checked_by_the_estimator(tmp_path, params, problem):
    path = spec_with(tmp_path, ("class_path: sklearn.linear_model.LogisticRegression}",
                                f"class_path: sklearn.linear_model.LogisticRegression, params: {params}}}"))
    msg = load_error(path, tmp_path)
    assert ": estimator.params: " in msg and problem in msg, msg


def test_good_params_pass(tmp_path):
    path = spec_with(tmp_path, ("class_path: sklearn.linear_model.LogisticRegression}",
                                "class_path: sklearn.linear_model.LogisticRegression, params: {C: 0.5, max_iter: 50}}"))
    assert load_spec(path, state_dir=str(tmp_path)).estimator.params == {"C": 0.5, "max_iter": 50}


# --- schedule, partitions, paths and URLs ----------------------------------------------------------

@pytest.mark.parametrize("cron", ["61 2 * * *", "0 2 30 2 *", "0 2 * * 8", "0 0 * * * *", "@sometimes"])
def test_invalid_cron_is_caught_by_a_real_parser(tmp_path, cron):
    msg = load_error(write(tmp_path, GOOD + f"schedule: {{cron: '{cron}'}}\n"), tmp_path)
    assert f": schedule.cron: {cron!r} is not a valid cron expression" in msg


@pytest.mark.parametrize("cron", ["*/15 1-5 * * MON-FRI", "@daily", "0 2 1,15 * *"])
def test_valid_cron_passes(tmp_path, cron):
    assert load_spec(write(tmp_path, GOOD + f"schedule: {{cron: '{cron}'}}\n"), str(tmp_path)).schedule.cron == cron


def test_partition_start_in_the_future_is_an_error(tmp_path):
    msg = load_error(spec_with(tmp_path, ("partition_start: 2026-01-01", "partition_start: 2999-01-01")), tmp_path)
    assert ": partition_start: 2999-01-01 is in the future" in msg


@pytest.mark.parametrize("pattern, problem", [
    ("../outside/{date}.parquet", "must not contain '..'"),
    ("daily/../../{date}.csv", "must not contain '..'"),
    ("/etc/{date}.csv", "relative path inside the source directory"),
    ("{date}-{hour}.csv", "exactly once and no other"),
    ("{date}{date}.csv", "exactly once and no other"),
    ("{date.year}.csv", "exactly once and no other"),
])
def test_file_pattern_stays_inside_the_source(tmp_path, pattern, problem):
    path = spec_with(tmp_path, ("source: {uri: data/}", f"source: {{uri: data/, file_pattern: '{pattern}'}}"))
    msg = load_error(path, tmp_path)
    assert ": source.file_pattern: " in msg and problem in msg, msg


def test_source_uri_schemes(tmp_path):
    spec = load_spec(spec_with(tmp_path, ("source: {uri: data/}", "source: {uri: 'file:///srv/data/'}")), str(tmp_path))
    assert spec.source.uri == "/srv/data/"  # file:// is a local path for the rest of the platform
    for uri, problem in [("http://example.com/data/", "unsupported scheme http://"),
                         ("ftp://h/data/", "unsupported scheme ftp://"), ("s3:///daily", "s3:// URI has no bucket"),
                         ("file://remote-host/data/", "file:// URIs must name a local path")]:
        msg = load_error(spec_with(tmp_path, ("source: {uri: data/}", f"source: {{uri: '{uri}'}}")), tmp_path)
        assert ": source.uri: " in msg and problem in msg, msg


@pytest.mark.parametrize("url, problem", [
    ("file:///etc/passwd", "must be an http:// or https:// URL, not file://"),
    ("ftp://models.internal/", "must be an http:// or https:// URL, not ftp://"),
    ("http://ops:hunter2@models.internal:8080", "must not contain user:password@"),
    ("http://models.internal:8080/?next=/admin", "must not have a query string or fragment"),
    ("http://models.internal:8080/#top", "must not have a query string or fragment"),
    ("http:///healthz", "has no host"),
    ("http://models.internal:99999", "not a valid URL"),
    ("http://models.internal/a b", "whitespace or control characters"),
])
def test_serving_endpoints_are_plain_http_urls(tmp_path, url, problem):
    msg = load_error(write(tmp_path, GOOD + f"serving: {{endpoints: ['http://ok.internal:8080', '{url}']}}\n"),
                     tmp_path)
    assert ": serving.endpoints.1: " in msg and problem in msg, msg
    assert "hunter2" not in msg


# --- the YAML itself ------------------------------------------------------------------------------

def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "churn.yaml"
    path.write_bytes(GOOD.replace("churn", "caf\xe9").encode("latin-1"))
    assert load_error(path, tmp_path) == (f"{path}: (top level): not UTF-8 text (byte 0xe9 at offset 9); "
                                          "save the spec as UTF-8")


def test_deep_nesting_is_refused(tmp_path):
    msg = load_error(write(tmp_path, GOOD + "description: " + "[" * 20000 + "]" * 20000 + "\n"), tmp_path)
    assert msg.endswith(": (top level): nested deeper than 50 levels")


def test_recursive_alias_is_refused(tmp_path):
    msg = load_error(write(tmp_path, GOOD + "owner: &a [*a]\n"), tmp_path)
    assert ": (top level): an alias refers to the node that contains it" in msg


BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))


def test_alias_bomb_is_refused_fast_and_small(tmp_path):
    path = write(tmp_path, BILLION_LAUGHS + GOOD)  # 10**9 strings when expanded
    tracemalloc.start()
    started = time.perf_counter()
    try:
        msg = load_error(path, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 5 and peak < 20 * 2**20, (time.perf_counter() - started, peak)
    assert ": (top level): expands to more than 100000 values (YAML aliases?)" in msg


def test_small_aliases_still_work(tmp_path):
    text = GOOD.replace("features: {numeric: [a, b], categorical: [c]}",
                        "x-cols: &cols [a, b]\nfeatures: {numeric: *cols, categorical: [c]}")
    assert "unknown field" in load_error(write(tmp_path, text), tmp_path)  # the alias resolved; x-cols is unknown
    ok = GOOD.replace("target: {column: y}", "target: {column: &y y}\ndescription: *y")
    assert load_spec(write(tmp_path, ok), str(tmp_path)).description == "y"


def test_oversized_file_is_refused_before_parsing(tmp_path):
    path = write(tmp_path, GOOD + "# " + "x" * (1 << 20) + "\n")
    assert load_error(path, tmp_path) == f"{path}: (top level): larger than 1024 KiB; a spec is a short YAML file"


# --- ${VAR}: values, never structure; recorded unexpanded -----------------------------------------

def test_a_reference_fills_one_value_and_cannot_add_fields(tmp_path, monkeypatch):
    injected = ("x\nestimator: {class_path: sklearn.ensemble.RandomForestClassifier}\n"
                "promotion: {absolute_floor: 0}")
    monkeypatch.setenv("CHURN_DESCRIPTION", injected)
    spec = load_spec(write(tmp_path, GOOD + "description: ${CHURN_DESCRIPTION}\n"), str(tmp_path))
    assert spec.description == injected
    assert spec.estimator.class_path == "sklearn.linear_model.LogisticRegression"
    assert spec.promotion.absolute_floor is None


def test_expanded_values_are_never_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN_TOKEN", "tok-7f3a9c1e")
    monkeypatch.setenv("CHURN_SOLVER", "liblinear")
    text = GOOD.replace("source: {uri: data/}", 'source: {uri: "s3://bucket/${CHURN_TOKEN}/daily"}').replace(
        "class_path: sklearn.linear_model.LogisticRegression}",
        'class_path: sklearn.linear_model.LogisticRegression, params: {solver: "${CHURN_SOLVER}"}}')
    spec = load_spec(write(tmp_path, text), str(tmp_path))
    assert spec.source.uri == "s3://bucket/tok-7f3a9c1e/daily"  # the run uses the value ...
    assert spec.estimator.params == {"solver": "liblinear"}
    assert spec.as_written("source", "uri") == "s3://bucket/${CHURN_TOKEN}/daily"  # ... records the reference
    assert spec.as_written("estimator", "params", "solver") == "${CHURN_SOLVER}"
    assert spec.as_written("timestamp_column") == "ts"
    for recorded in (spec.to_yaml(), spec.canonical_json()):
        assert "tok-7f3a9c1e" not in recorded and "${CHURN_TOKEN}" in recorded
    sha = spec.sha256
    # The recorded spec resolves again from the reader's environment (what `mlplatform reproduce` does).
    monkeypatch.setenv("CHURN_TOKEN", "tok-rotated")
    again = parse_spec(spec.to_yaml(), "recorded spec.yaml")
    assert again.source.uri == "s3://bucket/tok-rotated/daily" and again.estimator.params == {"solver": "liblinear"}
    assert again.sha256 == sha == load_spec(write(tmp_path, text), str(tmp_path)).sha256


def test_recorded_spec_resolves_mlplatform_home_from_the_reader(tmp_path, monkeypatch):
    spec = load_spec(examples_models_dir() / "customer_churn.yaml", state_dir=str(tmp_path / "a"))
    assert spec.source.uri == f"{tmp_path}/a/example-data/customer_churn"
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path / "b"))
    assert parse_spec(spec.to_yaml()).source.uri == f"{tmp_path}/b/example-data/customer_churn"


def test_errors_show_references_not_their_values(tmp_path, monkeypatch):
    monkeypatch.setenv("CHURN_ESTIMATOR", "acme_secret_pkg.Model")
    msg = load_error(spec_with(tmp_path, ("sklearn.linear_model.LogisticRegression", '"${CHURN_ESTIMATOR}"')),
                     tmp_path)
    assert "'${CHURN_ESTIMATOR}' is not an allowed estimator" in msg and "acme_secret_pkg" not in msg


def test_unquoted_reference_in_flow_mapping_gets_a_hint(tmp_path):
    msg = load_error(spec_with(tmp_path, ("uri: data/", "uri: s3://${CHURN_BUCKET}/daily")), tmp_path)
    assert "(top level): not valid YAML" in msg and "must be quoted" in msg
