"""What the official Dagster Helm chart (1.13.x) makes of infra/helm/values.yaml, reproduced offline.

Neither helm nor the chart can be fetched here, so this module holds the part of the chart the platform
relies on, transcribed from the dagster-io/dagster repository:

* ``CHART_KEYS``: the keys the chart's values schema accepts in every section the values file uses
  (``helm/dagster/schema/schema/charts/dagster/values.py`` and ``subschema/{global_,service_account,
  postgresql,webserver,daemon,run_launcher,compute_log_manager,telemetry}.py``,
  ``charts/dagster_user_deployments/subschema/user_deployments.py``; the pydantic-2 versions of 1.13).
  Values under a key missing from the map are Kubernetes objects (securityContext, volumes, resources,
  ...) and are checked against the Kubernetes schema instead (``pod_specs_from_values``).
* ``instance_config``: the dagster.yaml sections ``templates/configmap-instance.yaml`` and
  ``templates/helpers/instance/_{run-launcher,run-coordinator,compute-log-manager,postgresql}.tpl`` render.
* ``pod_specs_from_values``: the pod specs ``deployment-user.yaml``, ``_deployment-webserver.tpl`` and
  ``deployment-daemon.yaml`` build from the values (the parts the values set; the chart adds its own
  dagster.yaml/workspace mounts and init containers, which take the same security contexts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
VALUES_PATH = REPO / "infra" / "helm" / "values.yaml"
RELEASE = "dagster"
FULLNAME = "dagster"  # the chart's dagster.fullname: the release name, since it contains the chart's name
NAMESPACE = "mlplatform"
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's default global.dagsterHome

_K8S_POD_FIELDS = {"nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext", "resources",
                   "livenessProbe", "readinessProbe", "startupProbe", "annotations", "labels", "volumeMounts",
                   "volumes", "schedulerName", "env", "envConfigMaps", "envSecrets"}

# Path (dots; "[]" for list items) -> keys the chart's schema allows there.
CHART_KEYS: dict[str, set[str]] = {
    "": {"dagsterWebserver", "dagster-user-deployments", "postgresql", "generatePostgresqlPasswordSecret",
         "generateCeleryConfigSecret", "rabbitmq", "redis", "flower", "ingress", "imagePullSecrets",
         "computeLogManager", "scheduler", "runLauncher", "pythonLogs", "dagsterDaemon", "busybox", "migrate",
         "telemetry", "serviceAccount", "global", "retention", "concurrency", "additionalInstanceConfig"},
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName", "celeryConfigSecretName",
               "dagsterInstanceConfigMap"},
    "serviceAccount": {"create", "name", "annotations"},
    "postgresql": {"postgresqlScheme", "image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams", "service"},
    "postgresql.service": {"port"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": _K8S_POD_FIELDS | {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "deploymentNamespace", "port", "initContainers", "sidecarContainers"},
    "dagster-user-deployments.deployments[].image": {"repository", "tag", "pullPolicy"},
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"enabled"},
    "dagsterWebserver": _K8S_POD_FIELDS | {
        "replicaCount", "image", "nameOverride", "pathPrefix", "service", "workspace", "deploymentLabels",
        "checkDbReadyInitContainer", "enableReadOnly", "dbStatementTimeout", "dbPoolRecycle", "dbPoolMaxOverflow",
        "logLevel", "logFormat", "initContainerResources", "extraContainers", "extraPrependedInitContainers"},
    "dagsterDaemon": _K8S_POD_FIELDS | {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "deploymentLabels", "checkDbReadyInitContainer",
        "runMonitoring", "runRetries", "sensors", "schedules", "backfills", "logFormat", "initContainerResources",
        "extraContainers", "extraPrependedInitContainers"},
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds", "dequeueNumWorkers",
        "dequeueUseThreads", "blockOpConcurrencyLimitedRuns"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[]": {"key", "value", "limit"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits[].value": {
        "applyLimitPerUniqueValue"},
    # A free-form map in the schema; these are the keys templates/configmap-instance.yaml reads.
    "dagsterDaemon.runMonitoring": {"enabled", "startTimeoutSeconds", "cancelTimeoutSeconds", "maxResumeRunAttempts",
                                    "pollIntervalSeconds", "freeSlotsAfterRunEndSeconds"},
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile", "envConfigMaps",
        "envSecrets", "envVars", "volumeMounts", "volumes", "labels", "failPodOnRunFailure", "resources",
        "schedulerName", "securityContext", "runK8sConfig"},
    "runLauncher.config.k8sRunLauncher.runK8sConfig": {"containerConfig", "podSpecConfig", "podTemplateSpecMetadata",
                                                       "jobSpecConfig", "jobMetadata"},
    "computeLogManager": {"type", "config"},
    "computeLogManager.config": {"azureBlobComputeLogManager", "gcsComputeLogManager", "s3ComputeLogManager",
                                 "customComputeLogManager"},
    "computeLogManager.config.s3ComputeLogManager": {
        "bucket", "localDir", "prefix", "useSsl", "verify", "verifyCertPath", "endpointUrl", "skipEmptyFiles",
        "uploadInterval", "uploadExtraArgs", "showUrlOnly", "region"},
    "telemetry": {"enabled"},
}


def load_values() -> dict:
    return yaml.safe_load(VALUES_PATH.read_text())


def unknown_keys(values: dict) -> list[str]:
    """Every key of ``values`` that the chart's schema does not accept where it stands."""
    found: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item, f"{path}[]")
            return
        if not isinstance(node, dict) or path not in CHART_KEYS:
            return
        for key, child in node.items():
            if key not in CHART_KEYS[path]:
                found.append(f"{path}.{key}" if path else key)
            walk(child, f"{path}.{key}" if path else key)

    walk(values, "")
    return found


def _names(refs: list[dict] | None) -> list[str]:
    return [ref["name"] for ref in refs or [] if "name" in ref]


def instance_config(values: dict) -> dict:
    """The dagster.yaml the chart renders into its ``<release>-instance`` ConfigMap (the sections these values
    influence, plus the PostgreSQL storage)."""
    pg = values["postgresql"]
    pg_config = {"postgres_db": {
        "username": pg["postgresqlUsername"], "password": {"env": "DAGSTER_PG_PASSWORD"},
        "hostname": pg["postgresqlHost"], "db_name": pg["postgresqlDatabase"],
        "port": pg.get("service", {}).get("port", 5432), "params": pg.get("postgresqlParams", {}),
        **({"scheme": pg["postgresqlScheme"]} if pg.get("postgresqlScheme") else {})}}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    run_k8s_config = {snake: launcher["runK8sConfig"][camel] for camel, snake in (
        ("containerConfig", "container_config"), ("podSpecConfig", "pod_spec_config"),
        ("podTemplateSpecMetadata", "pod_template_spec_metadata"), ("jobSpecConfig", "job_spec_config"),
        ("jobMetadata", "job_metadata")) if launcher.get("runK8sConfig", {}).get(camel)}
    launcher_config = {
        "load_incluster_config": launcher.get("loadInclusterConfig", True),
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": values["global"].get("dagsterHome", CHART_DAGSTER_HOME),
        "instance_config_map": f"{FULLNAME}-instance",
        "postgres_password_secret": values["global"]["postgresqlSecretName"],
        **({"env_config_maps": _names(launcher.get("envConfigMaps"))} if launcher.get("envConfigMaps") else {}),
        **({"env_secrets": _names(launcher.get("envSecrets"))} if launcher.get("envSecrets") else {}),
        **{snake: launcher[camel] for camel, snake in (
            ("envVars", "env_vars"), ("volumeMounts", "volume_mounts"), ("volumes", "volumes"), ("labels", "labels"),
            ("resources", "resources"), ("schedulerName", "scheduler_name"),
            ("securityContext", "security_context")) if launcher.get(camel)},
        **({"fail_pod_on_run_failure": True} if launcher.get("failPodOnRunFailure") else {}),
        **({"run_k8s_config": run_k8s_config} if run_k8s_config else {}),
    }
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    s3_logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    return {
        "schedule_storage": {"module": "dagster_postgres.schedule_storage", "class": "PostgresScheduleStorage",
                             "config": pg_config},
        "run_storage": {"module": "dagster_postgres.run_storage", "class": "PostgresRunStorage", "config": pg_config},
        "event_log_storage": {"module": "dagster_postgres.event_log", "class": "PostgresEventLogStorage",
                              "config": pg_config},
        "run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher", "config": launcher_config},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator", "config": {
            "max_concurrent_runs": queued["maxConcurrentRuns"],
            "tag_concurrency_limits": queued["tagConcurrencyLimits"]}},
        "compute_logs": {"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager", "config": {
            "bucket": s3_logs["bucket"], "prefix": s3_logs["prefix"], "verify": s3_logs.get("verify") is not False,
            "region": s3_logs["region"]}},
        "run_monitoring": {
            "enabled": monitoring["enabled"],
            "start_timeout_seconds": monitoring["startTimeoutSeconds"],
            "max_resume_run_attempts": monitoring["maxResumeRunAttempts"],
            "poll_interval_seconds": monitoring["pollIntervalSeconds"]},
        "telemetry": {"enabled": values["telemetry"]["enabled"]},
    }


def _init_containers(section: dict, user_deployment: str) -> list[dict]:
    """The webserver's and the daemon's init containers: they wait for PostgreSQL and the code server's
    Service, and take the section's container securityContext."""
    return [
        {"name": "check-db-ready", "image": "library/postgres:14.6", "command": ["sh", "-c", "pg_isready"],
         "securityContext": section.get("securityContext") or {}},
        {"name": f"init-user-deployment-{user_deployment}", "image": "library/busybox:1.28",
         "command": ["sh", "-c", f"until nslookup {user_deployment}; do sleep 2; done"],
         "securityContext": section.get("securityContext") or {}},
    ]


def _pod(name: str, section: dict, image: str, mounts_extra: list[dict], volumes_extra: list[dict],
         labels: dict, ports: list[dict], init_containers: list[dict]) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {**labels, **(section.get("labels") or {})}},
        "spec": {
            "securityContext": section.get("podSecurityContext") or {},
            **({"initContainers": init_containers} if init_containers else {}),
            "containers": [{
                "name": "dagster", "image": image,
                "securityContext": section.get("securityContext") or {},
                "resources": section.get("resources") or {},
                "envFrom": [{"configMapRef": ref} for ref in section.get("envConfigMaps") or []]
                + [{"secretRef": ref} for ref in section.get("envSecrets") or []],
                "volumeMounts": mounts_extra + (section.get("volumeMounts") or []),
                **({"ports": ports} if ports else {}),
            }],
            "volumes": volumes_extra + (section.get("volumes") or []),
        },
    }


def pod_specs_from_values(values: dict) -> dict[str, dict]:
    """The code server, webserver and daemon Pods the chart builds from these values (as Pod objects)."""
    [deployment] = values["dagster-user-deployments"]["deployments"]
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    instance_volume = [{"name": "dagster-instance", "configMap": {"name": f"{FULLNAME}-instance"}}]
    instance_mount = [{"name": "dagster-instance", "mountPath": f"{CHART_DAGSTER_HOME}/dagster.yaml",
                       "subPath": "dagster.yaml"}]
    chart_labels = {"app.kubernetes.io/name": "dagster", "app.kubernetes.io/instance": RELEASE}
    chart_image = "docker.io/dagster/dagster-celery-k8s:1.13.27"
    # The chart names the webserver's port "http" and binds it to service.port (default 80); the code
    # server's container declares no port (its Service targets deployments[].port).
    webserver_port = (values["dagsterWebserver"].get("service") or {}).get("port", 80)
    webserver, daemon = values["dagsterWebserver"], values["dagsterDaemon"]
    return {
        "code-server": _pod("code-server", deployment, image, [], [],
                            {**chart_labels, "component": "user-deployments"}, [], []),
        "webserver": _pod("webserver", webserver, chart_image, instance_mount, instance_volume,
                          {**chart_labels, "component": "dagster-webserver"},
                          [{"name": "http", "containerPort": webserver_port, "protocol": "TCP"}],
                          _init_containers(webserver, deployment["name"])),
        "daemon": _pod("daemon", daemon, chart_image, instance_mount, instance_volume,
                       {**chart_labels, "component": "dagster-daemon"}, [],
                       _init_containers(daemon, deployment["name"])),
    }


def run_job(values: dict, kubeconfig_dir: Path) -> dict:
    """The Kubernetes Job the K8sRunLauncher (dagster-k8s, configured as the chart configures it) creates for
    a run, serialized as the API server receives it."""
    import kubernetes
    from dagster import DagsterRun
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job

    config = dict(instance_config(values)["run_launcher"]["config"])
    # Outside a cluster the launcher loads a kubeconfig instead; it only reads it (nothing is contacted).
    kubeconfig = kubeconfig_dir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "users": [{"name": "test", "user": {"token": "unused"}}]}))
    config.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    processed = process_config(K8sRunLauncher.config_type(), config)
    if not processed.success:
        raise ValueError(f"K8sRunLauncher rejects the rendered config: {processed.errors}")
    launcher = K8sRunLauncher.from_config_value(None, processed.value)

    run = DagsterRun(job_name="__ASSET_JOB", run_id="0c1d2e3f-0000-4000-8000-000000000001")
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    [deployment] = values["dagster-user-deployments"]["deployments"]
    job_config = context.get_k8s_job_config(
        job_image=f"{deployment['image']['repository']}:{deployment['image']['tag']}", run_launcher=launcher)
    job = construct_dagster_k8s_job(
        job_config=job_config, args=["dagster", "api", "execute_run", "{}"], job_name="dagster-run-0c1d2e3f",
        pod_name="dagster-run-0c1d2e3f", component="run_worker", user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": "__ASSET_JOB", "dagster/run-id": run.run_id})
    rendered = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    rendered.setdefault("metadata", {})["namespace"] = launcher.job_namespace
    return rendered
