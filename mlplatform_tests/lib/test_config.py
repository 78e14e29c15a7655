"""Configuration: defaults under one state directory, overrides by environment only, no side effects."""

import json
from pathlib import Path

from mlplatform_assets.cli import main
from mlplatform_assets.lib.config import examples_models_dir, load_config


def test_defaults_live_under_the_state_dir(tmp_path):
    cfg = load_config({"MLPLATFORM_HOME": str(tmp_path / "st")})
    home = tmp_path / "st"
    assert cfg.mlflow_tracking_uri == f"sqlite:///{home}/mlflow/mlflow.db"
    assert cfg.dagster_home == str(home / "dagster")
    assert cfg.artifact_root == (home / "mlflow" / "artifacts").as_uri()
    assert cfg.models_dir == str(examples_models_dir())
    assert not home.exists()  # resolving the configuration creates nothing


def test_environment_overrides(tmp_path):
    cfg = load_config({"MLPLATFORM_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                       "MLPLATFORM_DATA_URI": "s3://bucket/data", "DAGSTER_HOME": "/opt/dagster",
                       "MLPLATFORM_ARTIFACT_ROOT": "s3://bucket/artifacts"})
    assert cfg.mlflow_tracking_uri == cfg.mlflow_registry_uri == "http://mlflow:5000"
    assert (cfg.data_uri, cfg.dagster_home, cfg.artifact_root) == ("s3://bucket/data", "/opt/dagster",
                                                                   "s3://bucket/artifacts")


def test_config_cli_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLPLATFORM_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["config", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mlflow_tracking_uri"] == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert data["state_dir"] == str(tmp_path) and Path(data["models_dir"]).is_dir()


def test_artifact_root_against_a_tracking_server_is_the_servers_own(tmp_path):
    # A tracking server keeps artifacts in its own (proxied) store: no client-side root, so experiments are
    # created without a location and model files never land on the client's disk.
    for uri in ("http://mlflow:5000", "https://mlflow.example.com"):
        cfg = load_config({"MLPLATFORM_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": uri})
        assert cfg.artifact_root is None, uri
    # An explicit root still wins (direct S3 writes), and stores the client opens itself keep a local default.
    cfg = load_config({"MLPLATFORM_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow:5000",
                       "MLPLATFORM_ARTIFACT_ROOT": "s3://bucket/mlflow"})
    assert cfg.artifact_root == "s3://bucket/mlflow"
    cfg = load_config({"MLPLATFORM_HOME": str(tmp_path),
                       "MLFLOW_TRACKING_URI": "postgresql+psycopg2://u:p@db:5432/mlflow"})
    assert cfg.artifact_root == (tmp_path / "mlflow" / "artifacts").as_uri()
