"""The deployment files in infra/ cannot be deployed here (no cluster, no Docker engine). These tests check
what can be checked offline: every YAML parses, dagster.yaml passes Dagster's instance schema and resolves
its secrets from the environment, and the manifests agree with the code (commands the CLIs accept, probe
paths the serving app routes, env var names the config reads, the code location workspace.yaml names)."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
YAML_FILES = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _k8s_objects() -> list[dict]:
    return [d for p in sorted((INFRA / "k8s").glob("*.yaml")) for d in _docs(p)]


def _deployment(name: str) -> dict:
    [dep] = [o for o in _k8s_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return dep


def _config_env_names() -> set[str]:
    """Every environment variable name the platform reads (string literals in the package)."""
    names: set[str] = set()
    for py in (REPO / "mlplatform_assets").rglob("*.py"):
        names |= set(re.findall(r'"((?:MLPLATFORM|MLFLOW|AWS|DAGSTER)_[A-Z0-9_]+)"', py.read_text()))
    return names


def test_infra_files_exist():
    for rel in ("dagster.yaml", "helm/values.yaml", "k8s/mlflow.yaml", "k8s/serving.yaml", "Dockerfile", "README.md"):
        assert (INFRA / rel).is_file(), rel
    assert len(YAML_FILES) >= 4


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path: Path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


def test_dagster_yaml_passes_instance_schema_and_reads_secrets_from_env(tmp_path, monkeypatch):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.storage.config import pg_config
    from dagster_postgres.utils import pg_url_from_config

    text = (INFRA / "dagster.yaml").read_text()
    assert "password:\n        env: DAGSTER_PG_PASSWORD" in text  # the secret is never a literal
    shutil.copy(INFRA / "dagster.yaml", tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))  # raises on any schema error
    assert custom_class is None
    assert config["run_launcher"]["class"] == "DefaultRunLauncher"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"

    env = {"DAGSTER_PG_HOST": "db.internal", "DAGSTER_PG_PORT": "6543", "DAGSTER_PG_USERNAME": "dagster",
           "DAGSTER_PG_PASSWORD": "s3cr:t@", "DAGSTER_PG_DB": "dagster_prod"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    resolved = process_config(pg_config(), config["storage"]["postgres"])
    assert resolved.success, resolved.errors
    assert pg_url_from_config(resolved.value) == "postgresql+psycopg2://dagster:s3cr%3At%40@db.internal:6543/dagster_prod"

    monkeypatch.delenv("DAGSTER_PG_PASSWORD")
    assert not process_config(pg_config(), config["storage"]["postgres"]).success


def test_helm_values_match_the_code_location():
    values = _docs(INFRA / "helm" / "values.yaml")[0]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    [dep] = values["dagster-user-deployments"]["deployments"]
    args = dep["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == pyproject["tool"]["dagster"]["module_name"] == workspace["module_name"]
    assert args[args.index("--location-name") + 1] == workspace["location_name"]
    assert dep["includeConfigInLaunchedRuns"]["enabled"] is True

    env = {e["name"]: e.get("value") for e in dep["env"]}
    assert env["MLPLATFORM_DATA_URI"].startswith("s3://")
    assert env["MLPLATFORM_ARTIFACT_ROOT"].startswith("s3://")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert set(env) <= _config_env_names(), set(env) - _config_env_names()
    # Secrets only by reference: no credential-looking variable carries a literal value.
    assert not [k for k in env if re.search(r"SECRET|PASSWORD|TOKEN|KEY_ID", k)]
    assert {s["name"] for s in dep["envSecrets"]} >= {"mlplatform-aws"}
    mounts = {m["mountPath"] for m in dep["volumeMounts"]}
    assert env["MLPLATFORM_MODELS_DIR"] in mounts and env["MLPLATFORM_HOME"] in mounts

    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert "postgresqlPassword" not in values["postgresql"] and values["generatePostgresqlPasswordSecret"] is False
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_k8s_objects_are_consistent():
    objects = _k8s_objects()
    for o in objects:
        assert {"apiVersion", "kind", "metadata"} <= set(o) and o["metadata"].get("name"), o
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), dep["metadata"]["name"]
    for svc in (o for o in objects if o["kind"] == "Service"):
        [dep] = [d for d in deployments
                 if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        port_names = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


def test_serving_deployment_runs_the_cli_with_real_probe_paths():
    from mlplatform_assets.cli import build_parser
    from mlplatform_assets.lib.serving import app

    dep = _deployment("serving-customer-churn")
    [container] = dep["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:2] == ["mlplatform", "serve"]
    args = build_parser().parse_args(command[1:])  # the real CLI accepts it
    assert (args.model, args.host, args.port) == ("customer_churn", "0.0.0.0", 8080)
    assert container["readinessProbe"]["httpGet"]["path"] == app.R_READY == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == app.R_HEALTH == "/healthz"
    assert {p["containerPort"] for p in container["ports"]} == {8080}
    env_names = {e["name"] for e in container["env"]}
    assert env_names <= _config_env_names(), env_names - _config_env_names()
    assert next(e["value"] for e in container["env"] if e["name"] == "MLFLOW_TRACKING_URI") == "http://mlflow:5000"


def test_mlflow_deployment_args_are_accepted_by_mlflow_server():
    from mlflow.cli import server

    dep = _deployment("mlflow")
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlflow", "server"]
    ctx = server.make_context("server", list(container["args"]))  # click parses, nothing is started
    assert ctx.params["backend_store_uri"] == "$(MLFLOW_BACKEND_STORE_URI)"  # expanded by Kubernetes
    assert ctx.params["default_artifact_root"].startswith("s3://")
    assert ctx.params["port"] == 5000
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]
    # In-cluster clients use http://mlflow:5000: that Host header must pass MLflow's DNS-rebinding check.
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert is_allowed_host_header(allowed, "mlflow:5000")
    assert not is_allowed_host_header(allowed, "attacker.example.org")


def test_dockerfile_installs_the_package_and_serves_the_code_location():
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.", text, re.M)
    cmd = yaml.safe_load(re.search(r"^CMD (.+)$", text, re.M).group(1))  # JSON-form CMD
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("--module-name") + 1] == "mlplatform_assets.definitions"
    for line in re.findall(r"^COPY (.+)$", text, re.M):  # the build context is the repository root
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), src
