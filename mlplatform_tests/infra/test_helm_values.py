"""infra/helm/values.yaml against what the Dagster chart does with it (reproduced in chart.py: no helm here):
every key is one the chart's schema accepts, the dagster.yaml the chart renders passes Dagster's own
config schemas, and the run pod dagster-k8s builds from it has the intended resources, security and
environment."""

from __future__ import annotations

import copy

import pytest
import yaml

from mlplatform_tests.infra import chart


@pytest.fixture(scope="module")
def values() -> dict:
    return chart.load_values()


@pytest.fixture(scope="module")
def run_pod(values, tmp_path_factory) -> dict:
    return chart.run_job(values, tmp_path_factory.mktemp("kubeconfig"))["spec"]["template"]


def test_every_key_is_one_the_chart_reads(values):
    assert chart.unknown_keys(values) == []


def test_key_check_catches_a_misplaced_key(values):
    broken = copy.deepcopy(values)
    broken["dagsterWebserver"]["envSecret"] = [{"name": "typo"}]  # singular: the chart would ignore it
    broken["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["podSpec"] = {}
    assert chart.unknown_keys(broken) == ["dagsterWebserver.envSecret", "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpec"]


def test_rendered_instance_passes_dagsters_schemas(values, tmp_path):
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_k8s import K8sRunLauncher

    instance = chart.instance_config(values)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    config, _ = dagster_instance_config(str(tmp_path))  # raises on any schema error (run_monitoring included)
    for section, cls in (("run_launcher", K8sRunLauncher), ("run_coordinator", QueuedRunCoordinator),
                         ("compute_logs", S3ComputeLogManager)):
        assert config[section]["class"] == cls.__name__
        result = process_config(cls.config_type(), config[section]["config"])
        assert result.success, (section, result.errors)


def test_training_runs_are_serialised_per_model_and_dead_runs_fail(values):
    instance = chart.instance_config(values)
    limits = instance["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert limits == [{"key": "mlplatform/training", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    monitoring = instance["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["max_resume_run_attempts"] == 0  # a dead run is marked failed, not resumed
    assert monitoring["start_timeout_seconds"] >= 180


def test_run_pods_get_training_resources_not_the_code_servers(values, run_pod):
    """includeConfigInLaunchedRuns would hand the code server's resources to every run pod, where they win over
    the run launcher's: it must stay off, and the rendered run pod must carry the launcher's."""
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is False
    [container] = run_pod["spec"]["containers"]
    wanted = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]["containerConfig"]["resources"]
    assert container["resources"] == wanted
    assert container["resources"] != deployment["resources"]


def test_run_pods_get_the_code_servers_environment_and_scratch_volumes(values, run_pod):
    [deployment] = values["dagster-user-deployments"]["deployments"]
    [container] = run_pod["spec"]["containers"]
    assert container["image"] == f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    env_from = [next(iter(ref.values()))["name"] for ref in container["envFrom"]]
    assert env_from == [r["name"] for r in deployment["envConfigMaps"] + deployment["envSecrets"]]
    assert container["volumeMounts"] == deployment["volumeMounts"]
    assert run_pod["spec"]["volumes"] == deployment["volumes"]
    assert run_pod["metadata"]["labels"]["mlplatform/component"] == "run-worker"
    # The security contexts the chart does not pass through includeConfigInLaunchedRuns are set on the launcher.
    assert run_pod["spec"]["securityContext"] == deployment["podSecurityContext"]
    assert container["securityContext"] == deployment["securityContext"]


def test_webserver_and_daemon_can_read_and_write_s3_compute_logs(values):
    instance = chart.instance_config(values)
    assert instance["compute_logs"]["class"] == "S3ComputeLogManager"
    for section in ("dagsterWebserver", "dagsterDaemon"):
        assert {s["name"] for s in values[section]["envSecrets"]} == {"mlplatform-aws"}, section
    # IRSA alternative documented on the one service account every Dagster pod uses.
    assert values["global"]["serviceAccountName"] == instance["run_launcher"]["config"]["service_account_name"]
    assert "eks.amazonaws.com/role-arn" in chart.VALUES_PATH.read_text()


def test_the_webserver_can_bind_its_port_as_non_root(values):
    """The chart binds the UI to service.port (80 unless set): below 1024 a non-root process needs the
    ip_unprivileged_port_start sysctl (containerd 1.x does not set it)."""
    port = (values["dagsterWebserver"].get("service") or {}).get("port", 80)
    pod = chart.pod_specs_from_values(values)["webserver"]
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    if port < 1024:
        sysctls = {s["name"]: int(s["value"]) for s in pod["spec"]["securityContext"]["sysctls"]}
        assert sysctls["net.ipv4.ip_unprivileged_port_start"] <= port
