"""The deployment files in infra/ cannot be deployed here (no cluster, no Docker engine). These tests check
what can be checked offline: every YAML parses, dagster.yaml passes Dagster's instance schema and resolves
its secrets from the environment, and the manifests agree with the code (commands the CLIs accept, probe
paths the serving app routes, env var names the config reads, the code location workspace.yaml names).
The Helm values, Pod Security, NetworkPolicies and the external validators have their own test files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

from mlplatform_tests.infra import chart, pods

REPO = chart.REPO
INFRA = REPO / "infra"
YAML_FILES = sorted([*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")])
NAMESPACE = "mlplatform"


def _deployment(name: str) -> dict:
    [dep] = [o for o in pods.k8s_objects() if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return dep


def _object(kind: str, name: str) -> dict:
    [obj] = [o for o in pods.k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def _config_env_names() -> set[str]:
    """Every environment variable name the platform reads (string literals in the package)."""
    names: set[str] = set()
    for py in (REPO / "mlplatform_assets").rglob("*.py"):
        names |= set(re.findall(r'"((?:MLPLATFORM|MLFLOW|AWS|DAGSTER)_[A-Z0-9_]+)"', py.read_text()))
    return names


def _platform_env() -> dict[str, str]:
    return _object("ConfigMap", "mlplatform-env")["data"]


def test_infra_files_exist():
    for rel in ("dagster.yaml", "helm/values.yaml", "k8s/namespace.yaml", "k8s/platform-env.yaml", "k8s/mlflow.yaml",
                "k8s/serving.yaml", "k8s/exporter.yaml", "k8s/networkpolicies.yaml", "Dockerfile", "healthcheck.py", "README.md"):
        assert (INFRA / rel).is_file(), rel
    assert (REPO / ".dockerignore").is_file()
    assert len(YAML_FILES) >= 6


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path: Path):
    docs = pods.docs(path)
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


def test_platform_env_configmap_names_only_variables_the_code_reads():
    env = _platform_env()
    assert set(env) <= _config_env_names(), set(env) - _config_env_names()
    # Secrets only by reference: no credential-looking variable carries a literal value.
    assert not [k for k in env if re.search(r"SECRET|PASSWORD|TOKEN|KEY_ID", k)]
    for key in ("MLPLATFORM_DATA_URI", "MLPLATFORM_ARTIFACT_ROOT", "MLPLATFORM_PREDICTION_LOG_URI"):
        assert env[key].startswith("s3://"), key
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # The address MLflow clients use must be the MLflow Service.
    service = _object("Service", "mlflow")
    assert [p["port"] for p in service["spec"]["ports"]] == [5000]


def test_helm_values_match_the_code_location():
    values = chart.load_values()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    workspace = yaml.safe_load((REPO / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    [dep] = values["dagster-user-deployments"]["deployments"]
    args = dep["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == pyproject["tool"]["dagster"]["module_name"] == workspace["module_name"]
    assert args[args.index("--location-name") + 1] == workspace["location_name"]

    env = _platform_env()
    assert {c["name"] for c in dep["envConfigMaps"]} == {"mlplatform-env"}
    assert {s["name"] for s in dep["envSecrets"]} >= {"mlplatform-aws"}
    mounts = {m["mountPath"]: m["name"] for m in dep["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["volumes"]}
    assert volumes[mounts[env["MLPLATFORM_MODELS_DIR"]]]["configMap"]["name"] == "mlplatform-model-specs"
    assert "emptyDir" in volumes[mounts[env["MLPLATFORM_HOME"]]]
    assert "emptyDir" in volumes[mounts["/tmp"]]

    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert "postgresqlPassword" not in values["postgresql"] and values["generatePostgresqlPasswordSecret"] is False
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_no_shared_filesystem_anywhere(tmp_path):
    """No PersistentVolumeClaim and no shared volume: MLPLATFORM_HOME is per-pod scratch (emptyDir) in every pod
    that sets it, so any pod can be replaced at any time and nothing waits for a ReadWriteMany class."""
    assert not [o for o in pods.k8s_objects() if o["kind"] == "PersistentVolumeClaim"]
    assert "persistentVolumeClaim" not in (INFRA / "helm" / "values.yaml").read_text()
    home = _platform_env()["MLPLATFORM_HOME"]
    checked = []
    for name, pod in pods.all_pods(tmp_path).items():
        spec = pod["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        assert not [v for v in volumes.values() if "persistentVolumeClaim" in v or "hostPath" in v], name
        for container in spec["containers"]:
            env_maps = {ref["configMapRef"]["name"] for ref in container.get("envFrom") or [] if "configMapRef" in ref}
            if "mlplatform-env" not in env_maps:
                continue
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
            assert "emptyDir" in volumes[mounts[home]], name
            checked.append(name)
    assert set(checked) == {"serving-customer-churn", "mlplatform-exporter", "code-server", "run-worker"}


def test_k8s_objects_are_consistent():
    objects = pods.k8s_objects()
    for o in objects:
        assert {"apiVersion", "kind", "metadata"} <= set(o) and o["metadata"].get("name"), o
        if o["kind"] != "Namespace":  # nothing lands in "default" by accident
            assert o["metadata"].get("namespace") == NAMESPACE, (o["kind"], o["metadata"]["name"])
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    for dep in deployments:
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), dep["metadata"]["name"]
    for svc in (o for o in objects if o["kind"] == "Service"):
        [dep] = [d for d in deployments
                 if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        port_names = {p["name"] for c in dep["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
        matched = [d for d in deployments
                   if pdb["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, pdb["metadata"]["name"]
    for hpa in (o for o in objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        dep = _object(target["kind"], target["name"])
        # The HPA owns the replica count: a fixed `replicas` would be reset by every `kubectl apply`.
        assert "replicas" not in dep["spec"], target["name"]
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        # Utilization is relative to the CPU request: every container must have one.
        for c in dep["spec"]["template"]["spec"]["containers"]:
            assert c["resources"]["requests"]["cpu"], target["name"]


def test_serving_deployment_runs_the_cli_with_real_probe_paths():
    from mlplatform_assets.cli import build_parser
    from mlplatform_assets.lib.serving import app
    from mlplatform_assets.lib.serving.metrics import ServingMetrics

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
    assert [ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref] == ["mlplatform-env"]
    # The metric the HPA comment recommends is one the server exports.
    metrics = ServingMetrics("customer_churn")
    exported = {m.name for m in metrics.registry.collect()}
    recommended = re.findall(r"metric: \{name: (\w+)\}", (INFRA / "k8s" / "serving.yaml").read_text())
    assert recommended and set(recommended) <= exported, (recommended, exported)


def test_serving_shuts_down_without_dropping_requests_or_predictions():
    """preStop keeps the pod serving while endpoints are removed; the grace period covers preStop + the
    server's drain (with the pod's own settings) + the prediction-log flush, so SIGKILL cuts neither short."""
    from mlplatform_assets.lib.serving.settings import ServingSettings

    spec = _deployment("serving-customer-churn")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    assert 3 <= pre_stop_s <= 10
    pod_env = {**_platform_env(), **{e["name"]: e["value"] for e in container["env"]}}
    settings = ServingSettings.resolve("customer_churn", environ=pod_env)
    # The manifest budgets 30 s of draining (the server's drain setting must stay within it) and 15 s for the
    # prediction-log flush, after preStop.
    drain_budget_s, flush_budget_s = 30, 15
    assert settings.drain_timeout_s <= drain_budget_s
    assert spec["terminationGracePeriodSeconds"] > pre_stop_s + drain_budget_s + flush_budget_s


def test_serving_spreads_over_nodes_hard_and_zones_soft():
    spec = _deployment("serving-customer-churn")["spec"]["template"]
    labels = spec["metadata"]["labels"]
    constraints = {c["topologyKey"]: c for c in spec["spec"]["topologySpreadConstraints"]}
    assert constraints["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert constraints["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    for c in constraints.values():
        assert c["labelSelector"]["matchLabels"].items() <= labels.items()


def test_exporter_deployment_runs_the_cli_on_the_charts_dagster_instance():
    """The exporter's command is one the CLI accepts, its probes use the path that reads no store, and it opens
    the Dagster instance the chart renders: that ConfigMap at $DAGSTER_HOME/dagster.yaml (a writable emptyDir
    around it) and the password from the Secret and variable that dagster.yaml names."""
    from mlplatform_assets.cli import build_parser
    from mlplatform_assets.commands.exporter import HEALTH_PATH

    dep = _deployment("mlplatform-exporter")
    assert dep["spec"]["replicas"] == 1
    spec = dep["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False
    [container] = spec["containers"]
    command = container["command"]
    assert command[:2] == ["mlplatform", "exporter"]
    args = build_parser().parse_args(command[1:])
    assert (args.host, args.port) == ("0.0.0.0", 9108)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": args.port}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": HEALTH_PATH, "port": "metrics"}, probe

    values = chart.load_values()
    env = {e["name"]: e for e in container["env"]}
    [password] = {v["config"]["postgres_db"]["password"]["env"] for k, v in chart.instance_config(values).items()
                  if k.endswith("_storage")}
    assert env[password]["valueFrom"]["secretKeyRef"] == {"name": values["global"]["postgresqlSecretName"],
                                                          "key": "postgresql-password"}
    assert set(env) - {password} <= _config_env_names(), set(env) - _config_env_names()
    home = env["DAGSTER_HOME"]["value"]
    assert home == values["global"].get("dagsterHome", chart.CHART_DAGSTER_HOME)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    instance_mount = mounts[f"{home}/dagster.yaml"]
    assert instance_mount["subPath"] == "dagster.yaml"
    assert volumes[instance_mount["name"]]["configMap"]["name"] == f"{chart.FULLNAME}-instance"
    assert "emptyDir" in volumes[mounts[home]["name"]]
    platform_env = _platform_env()
    assert volumes[mounts[platform_env["MLPLATFORM_MODELS_DIR"]]["name"]]["configMap"]["name"] == "mlplatform-model-specs"
    assert [ref["configMapRef"]["name"] for ref in container["envFrom"] if "configMapRef" in ref] == ["mlplatform-env"]
    assert {ref["secretRef"]["name"] for ref in container["envFrom"] if "secretRef" in ref} == {
        s["name"] for s in values["dagster-user-deployments"]["deployments"][0]["envSecrets"]}


def test_mlflow_deployment_args_are_accepted_by_mlflow_server():
    from mlflow.cli import server

    dep = _deployment("mlflow")
    [container] = dep["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["mlflow", "server"]
    ctx = server.make_context("server", list(container["args"]))  # click parses, nothing is started
    assert ctx.params["backend_store_uri"] == "$(MLFLOW_BACKEND_STORE_URI)"  # expanded by Kubernetes
    assert ctx.params["default_artifact_root"].startswith("s3://")
    assert ctx.params["default_artifact_root"] == _platform_env()["MLPLATFORM_ARTIFACT_ROOT"]
    assert ctx.params["port"] == 5000
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]
    # In-cluster clients use http://mlflow:5000: that Host header must pass MLflow's DNS-rebinding check.
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert is_allowed_host_header(allowed, "mlflow:5000")
    assert not is_allowed_host_header(allowed, "attacker.example.org")


# --- Dockerfile -------------------------------------------------------------------------------------------

DOCKERFILE = (INFRA / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^([A-Z]+)\s+(.*)$", joined, re.M)]


def test_dockerfile_installs_dependencies_before_copying_the_code():
    steps = _instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    copies = [(i, args) for i, (op, args) in enumerate(steps) if op == "COPY"]
    runs = [(i, args) for i, (op, args) in enumerate(steps) if op == "RUN"]
    [(deps_copy, deps_args)] = [(i, a) for i, a in copies if a.split()[:-1] == ["pyproject.toml"]]
    [(deps_install, _)] = [(i, a) for i, a in runs if "pip install -r" in a]
    [(code_copy, _)] = [(i, a) for i, a in copies if a.split()[0] == "mlplatform_assets"]
    [(code_install, code_args)] = [(i, a) for i, a in runs if "pip install --no-deps ." in a]
    # Only pyproject.toml reaches the dependency layer: code changes leave it cached.
    assert deps_copy < deps_install < code_copy < code_install
    assert not [a for i, a in copies if i < deps_install and i != deps_copy]
    assert "pip check" in code_args
    for _, line in copies:  # the build context is the repository root
        for src in line.split()[:-1]:
            assert (REPO / src).exists(), src


def test_dockerfile_dependency_list_is_pyprojects(tmp_path):
    """Run the Dockerfile's own extraction command on this pyproject.toml: it must print exactly
    [project.dependencies] (dagster-k8s included: run pods import it to load the instance)."""
    [install] = [args for op, args in _instructions() if op == "RUN" and "pip install -r" in args]
    code = re.search(r'python -c "(.+?)"\s*>', install).group(1)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out.stdout.split("\n")[:-1] == dependencies
    assert "dagster-k8s==0.29.27" in dependencies
    dagster_version = next(d for d in dependencies if d.startswith("dagster=="))
    assert dagster_version == "dagster==1.13.27"  # dagster-k8s 0.29.27 pairs with dagster 1.13.27


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_serves_the_code_location():
    steps = _instructions()
    users = [args for op, args in steps if op == "USER"]
    assert users == ["10001:10001"]
    assert "useradd --uid 10001" in DOCKERFILE
    [healthcheck] = [args for op, args in steps if op == "HEALTHCHECK"]
    probe = yaml.safe_load(healthcheck.split("CMD", 1)[1].strip())  # JSON form
    assert probe[0] == "python" and probe[1] == "/opt/mlplatform/healthcheck.py"
    assert ("COPY", "infra/healthcheck.py /opt/mlplatform/healthcheck.py") in steps
    cmd = yaml.safe_load(next(args for op, args in steps if op == "CMD"))  # JSON-form CMD
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert cmd[cmd.index("--module-name") + 1] == "mlplatform_assets.definitions"


def _dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as a regex (Go filepath.Match rules, plus ** for any number of directories)."""
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (the last matching pattern wins; ! re-includes;
    a matched directory excludes everything under it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _dockerignore_regex(raw[1:] if negate else raw)
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_small_but_not_what_the_image_copies():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for must_ignore in (".git/config", ".mlplatform/dagster/runs.db", "mlplatform_assets/__pycache__/x.pyc",
                        ".ci/.venv-validators/bin/checkov", ".pytest_cache/v", "mlruns/0/meta.yaml",
                        "mlplatform_tests/conftest.py", "benchmarks/serving.py"):
        assert _dockerignored(must_ignore, patterns), must_ignore
    copied = [src for op, args in _instructions() if op == "COPY" for src in args.split()[:-1]]
    for src in copied:
        assert not _dockerignored(src, patterns), src
    for py in (REPO / "mlplatform_assets").rglob("*.py"):
        assert not _dockerignored(str(py.relative_to(REPO)), patterns), py
