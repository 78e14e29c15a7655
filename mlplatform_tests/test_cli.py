"""CLI commands that do not need a trained model."""

import datetime as dt
import sys
from pathlib import Path

import pandas as pd
import pytest

from mlplatform_assets.cli import lifecycle_window, main
from mlplatform_assets.lib.config import examples_models_dir
from mlplatform_assets.lib.data import example_data
from mlplatform_assets.lib.spec import SpecError, load_spec
from mlplatform_tests.lib.test_spec import BILLION_LAUGHS, GOOD


def test_example_data_writes_normal_and_drifted_days(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    monkeypatch.delenv("MLPLATFORM_MODELS_DIR", raising=False)
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-01", "--end", "2026-11-02"]) == 0
    assert "wrote 2 day file(s)" in capsys.readouterr().out
    src = tmp_path / "example-data" / "customer_churn"
    normal = pd.read_parquet(src / "2026-11-02.parquet")
    # Existing days are kept unless --overwrite; --drift switches the generator's drift on.
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-02", "--drift"]) == 0
    assert "wrote 0 day file(s)" in capsys.readouterr().out
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-02", "--drift",
                 "--overwrite"]) == 0
    drifted = pd.read_parquet(src / "2026-11-02.parquet")
    assert drifted["monthly_charges"].mean() > 1.2 * normal["monthly_charges"].mean()
    assert "overseas" in set(drifted["region"]) and "overseas" not in set(normal["region"])


def test_unknown_model_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    monkeypatch.delenv("MLPLATFORM_MODELS_DIR", raising=False)
    assert main(["example-data", "--model", "nope", "--start", "2026-11-01"]) == 2
    assert "unknown model(s) ['nope']" in capsys.readouterr().err


# --- validate-spec catches what used to fail only later (exit 2, "<file>: <field>: <problem>") ------

def _spec_file(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "churn.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


VALIDATE_CASES = {
    "non-utf8": (GOOD.replace("churn", "caf\xe9").encode("latin-1"), "(top level)", "not UTF-8 text"),
    "deep": (GOOD + "description: " + "[" * 5000 + "]" * 5000 + "\n", "(top level)", "nested deeper than 50 levels"),
    "alias-bomb": (BILLION_LAUGHS + GOOD, "(top level)", "expands to more than 100000 values"),
    "cron": (GOOD + "schedule: {cron: '0 25 * * *'}\n", "schedule.cron", "'0 25 * * *' is not a valid cron"),
    "future": (GOOD.replace("partition_start: 2026-01-01", "partition_start: 2999-12-31"), "partition_start",
               "2999-12-31 is in the future"),
    "param-type": (GOOD.replace("LogisticRegression}", "LogisticRegression, params: {max_iter: '300'}}"),
                   "estimator.params", "The 'max_iter' parameter of LogisticRegression must be an int"),
    "param-unknown": (GOOD.replace("LogisticRegression}", "LogisticRegression, params: {max_iters: 300}}"),
                      "estimator.params", "unknown parameter(s) ['max_iters']"),
    "not-estimator": (GOOD.replace("sklearn.linear_model.LogisticRegression", "sklearn.neighbors.KDTree"),
                      "estimator.class_path", "'sklearn.neighbors.KDTree' is not an estimator"),
    "file-pattern": (GOOD.replace("source: {uri: data/}", "source: {uri: data/, file_pattern: '../../{date}.csv'}"),
                     "source.file_pattern", "must not contain '..'"),
    "endpoint": (GOOD + "serving: {endpoints: ['file:///etc/passwd']}\n", "serving.endpoints.0",
                 "must be an http:// or https:// URL"),
}


@pytest.mark.parametrize("case", sorted(VALIDATE_CASES))
def test_validate_spec_reports_file_field_and_problem(tmp_path, capsys, case):
    content, field, problem = VALIDATE_CASES[case]
    path = _spec_file(tmp_path, content)
    assert main(["validate-spec", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{path}: {field}: " in captured.err and problem in captured.err, captured.err
    assert "Traceback" not in captured.err and "OK" not in captured.out


def test_validate_spec_never_imports_a_module_it_does_not_trust(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "side-effect.marker"
    (tmp_path / "spec_side_effect.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _spec_file(tmp_path, GOOD.replace("sklearn.linear_model.LogisticRegression", "spec_side_effect.Model"))
    assert main(["validate-spec", str(path)]) == 2
    assert "estimator.class_path: 'spec_side_effect.Model' is not an allowed estimator" in capsys.readouterr().err
    assert not marker.exists() and "spec_side_effect" not in sys.modules


def test_validate_spec_reports_every_file_and_passes_the_examples(tmp_path, capsys):
    bad = _spec_file(tmp_path, GOOD.replace("roc_auc", "auc"))
    examples = sorted(str(p) for p in examples_models_dir().glob("*.yaml"))
    assert main(["validate-spec", str(bad), *examples]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: metrics.primary: unknown metric 'auc'" in captured.err
    assert all(f"{p}: OK" in captured.out for p in examples)
    assert main(["validate-spec", *examples]) == 0


# --- example data is written only under MLPLATFORM_HOME ------------------------------------------------

def _example_spec(models: Path, uri: str, pattern: str = "{date}.parquet") -> None:
    text = (examples_models_dir() / "customer_churn.yaml").read_text()
    text = text.replace("uri: ${MLPLATFORM_HOME}/example-data/customer_churn", f"uri: {uri}")
    (models / "customer_churn.yaml").write_text(text.replace('file_pattern: "{date}.parquet"',
                                                             f'file_pattern: "{pattern}"'))


def test_example_data_outside_mlplatform_home_is_refused(tmp_path, monkeypatch, capsys):
    home, models, elsewhere = tmp_path / "home", tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir()
    monkeypatch.setenv("MLPLATFORM_HOME", str(home))
    monkeypatch.setenv("MLPLATFORM_MODELS_DIR", str(models))
    _example_spec(models, str(elsewhere))
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-01"]) == 2
    assert "customer_churn: source.uri: refusing to write example data" in capsys.readouterr().err
    assert not elsewhere.exists()
    # The lifecycle's window generates the same way, so it refuses too (before any Dagster run).
    spec = load_spec(models / "customer_churn.yaml", str(home))
    with pytest.raises(SpecError, match="refusing to write example data"):
        lifecycle_window(spec, end=dt.date(2026, 11, 1), state_dir=str(home))
    assert not elsewhere.exists()
    # A file_pattern that climbs out of the source never gets that far: the spec is invalid.
    _example_spec(models, "${MLPLATFORM_HOME}/example-data/customer_churn", pattern="../../../{date}.parquet")
    assert main(["example-data", "--model", "customer_churn", "--start", "2026-11-01"]) == 2
    assert "source.file_pattern: must not contain '..'" in capsys.readouterr().err
    assert list(tmp_path.rglob("*.parquet")) == []


def test_example_generator_confines_files_to_its_directory(tmp_path):
    target = tmp_path / "home" / "source"
    with pytest.raises(ValueError, match="refusing to write example data"):
        example_data.write_example_days("customer_churn", target, [dt.date(2026, 11, 1)], "../{date}.parquet", rows=20)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "source").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(ValueError, match="outside"):
        example_data.write_example_days("customer_churn", target, [dt.date(2026, 11, 1)], rows=20,
                                        allowed_root=tmp_path / "home")
    assert list(tmp_path.rglob("*.parquet")) == []
    written = example_data.write_example_days("customer_churn", tmp_path / "home" / "real", [dt.date(2026, 11, 1)],
                                              "daily/{date}.parquet", rows=20, allowed_root=tmp_path / "home")
    assert written == [tmp_path / "home" / "real" / "daily" / "2026-11-01.parquet"] and written[0].is_file()
