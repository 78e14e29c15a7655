"""The one configuration module: every variable declared there, cast, checked at start, documented."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlplatform_assets.lib import config
from mlplatform_assets.lib.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "mlplatform_assets"


def test_docs_table_is_the_generated_one():
    doc = (REPO / "docs" / "configuration.md").read_text()
    table = doc.split("<!-- BEGIN GENERATED TABLE -->\n", 1)[1].split("<!-- END GENERATED TABLE -->", 1)[0]
    assert table == config.variables_markdown(), "regenerate the table in docs/configuration.md"


def _environment_reads(path: Path) -> list[str]:
    """``os.environ.get(...)``/``os.environ[...]``/``os.getenv(...)`` reads in a module (writes excluded)."""
    tree = ast.parse(path.read_text())
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if f.attr == "getenv" or (f.attr in ("get", "items", "copy") and ast.unparse(f.value) == "os.environ"):
                reads.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:80]}")
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ" \
                and isinstance(node.ctx, ast.Load):
            reads.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:80]}")
    return reads


# Modules that legitimately touch os.environ for something other than reading configuration.
NOT_CONFIGURATION = {
    # save/restore MLflow's process globals around one call
    "mlplatform_assets/lib/model/registry.py", "mlplatform_assets/lib/serving/testing.py",
    # hands the environment on to child processes (minus the platform's own variables)
    "mlplatform_assets/stack/__init__.py",
}


def test_no_module_but_config_reads_the_environment():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(REPO))
        if rel == "mlplatform_assets/lib/config.py" or rel in NOT_CONFIGURATION:
            continue
        offenders += _environment_reads(path)
    assert offenders == []


def test_every_variable_named_in_the_code_is_declared():
    declared = {v.name for v in config.all_variables()}
    named = set()
    for path in PACKAGE.rglob("*.py"):
        named |= set(re.findall(r"[\"'](MLPLATFORM_[A-Z0-9_]+)[\"']", path.read_text()))
    # Set by the platform for child processes it starts, never read as configuration.
    named -= {"MLPLATFORM_"}
    assert sorted(named - declared) == []


@pytest.mark.parametrize("variable, value, accepts", [
    ("MLPLATFORM_TRAIN_THREADS", "many", "a whole number >= 1"),
    ("MLPLATFORM_TRAIN_THREADS", "0", "a whole number >= 1"),
    ("MLPLATFORM_SENSOR_INTERVAL_S", "2.5", "a whole number of seconds >= 1"),
    ("MLPLATFORM_SENSORS_DEFAULT", "sometimes", "running or stopped"),
    ("MLPLATFORM_MLFLOW_UI_URL", "mlflow.example.com", "an http(s) URL"),
    ("AWS_ENDPOINT_URL", "localhost:9000", "an http(s) URL"),
    ("MLPLATFORM_SERVING_MAX_ROWS", "lots", "a whole number >= 0"),
    ("MLPLATFORM_SERVING_PREDICTION_LOG", "perhaps", "on or off"),
    ("MLPLATFORM_ALERT_MAX_ATTEMPTS", "inf", "an integer >= 1"),
])
def test_a_bad_value_fails_at_start_naming_the_variable_and_what_it_accepts(variable, value, accepts):
    with pytest.raises(ConfigError) as info:
        load_config({variable: value})
    assert f"{variable}={value!r} is invalid: expected {accepts}" in str(info.value)


def test_every_problem_is_reported_at_once_and_secrets_are_not_repeated():
    with pytest.raises(ConfigError) as info:
        load_config({"MLPLATFORM_TRAIN_THREADS": "x", "MLPLATFORM_NEW_DATA_MAX_PER_TICK": "-1",
                     "MLPLATFORM_ALERT_WEBHOOK_URL": "https://hooks.example.com/T0/SECRET-TOKEN",
                     "MLPLATFORM_API_KEYS": "k1,k2"})
    message = str(info.value)
    assert "MLPLATFORM_TRAIN_THREADS" in message and "MLPLATFORM_NEW_DATA_MAX_PER_TICK" in message
    assert "SECRET-TOKEN" not in message and "k1" not in message


@pytest.mark.parametrize("variable, raw, value", [
    ("MLPLATFORM_TRAIN_THREADS", None, 1),
    ("MLPLATFORM_TRAIN_THREADS", " 4 ", 4),
    ("MLPLATFORM_TRAIN_THREADS", "", 1),
    ("MLPLATFORM_SENSOR_INTERVAL_S", "60", 60),
    ("MLPLATFORM_SENSORS_DEFAULT", "RUNNING", "running"),
    ("MLPLATFORM_TRUSTED_MODULES", "acme_features, acme.models ,", ("acme_features", "acme.models")),
    ("MLPLATFORM_NEW_DATA_MAX_PER_TICK", None, 10),
])
def test_values_are_cast_and_defaults_apply(variable, raw, value):
    env = {} if raw is None else {variable: raw}
    assert config.read(variable, env) == value


def test_the_cli_stops_with_the_message_and_exit_code_2():
    res = subprocess.run([sys.executable, "-m", "mlplatform_assets.cli", "config"], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "MLPLATFORM_HOME": "/nonexistent-never-created",
                              "MLPLATFORM_SENSORS_DEFAULT": "sometimes"}, timeout=120)
    assert res.returncode == 2
    assert "MLPLATFORM_SENSORS_DEFAULT='sometimes' is invalid: expected running or stopped" in res.stderr
    assert not Path("/nonexistent-never-created").exists()
