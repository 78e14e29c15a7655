"""Every pod the platform runs (manifests, the chart's Dagster pods from the Helm values, a run pod built by
dagster-k8s) passes Pod Security "restricted" with a read-only root filesystem, and the NetworkPolicies let
exactly the intended connections through."""

from __future__ import annotations

import copy

import pytest

from mlplatform_tests.infra import pods

EXPECTED_PODS = {"mlflow", "serving-customer-churn", "mlplatform-exporter", "code-server", "webserver", "daemon",
                 "run-worker"}
MLFLOW_CLIENTS = {"code-server", "run-worker", "serving-customer-churn", "mlplatform-exporter"}
# How the Prometheus Operator labels its Prometheus pods, in the namespace networkpolicies.yaml names.
PROMETHEUS_POD = {"app.kubernetes.io/name": "prometheus", "app.kubernetes.io/managed-by": "prometheus-operator"}
MONITORING_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}


@pytest.fixture(scope="module")
def all_pods(tmp_path_factory) -> dict[str, dict]:
    return pods.all_pods(tmp_path_factory.mktemp("kubeconfig"))


@pytest.fixture(scope="module")
def policies() -> list[dict]:
    return [o for o in pods.k8s_objects() if o["kind"] == "NetworkPolicy"]


def test_every_pod_is_accounted_for(all_pods):
    assert set(all_pods) == EXPECTED_PODS


@pytest.mark.parametrize("name", sorted(EXPECTED_PODS))
def test_pod_passes_pod_security_restricted(all_pods, name):
    assert pods.restricted_violations(all_pods[name]["spec"]) == []


@pytest.mark.parametrize("name", sorted(EXPECTED_PODS))
def test_pod_has_a_read_only_root_and_a_writable_tmp(all_pods, name):
    spec = all_pods[name]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for container in spec["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["runAsUser"] == 10001
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
        assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_restricted_check_rejects_what_the_profile_forbids(all_pods):
    """The checker itself: each change below alone makes a compliant pod non-compliant."""
    good = all_pods["serving-customer-churn"]["spec"]
    breakages = {
        "allowPrivilegeEscalation": lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
        "runAsNonRoot": lambda s: (s["securityContext"].pop("runAsNonRoot"),
                                   s["containers"][0]["securityContext"].pop("runAsNonRoot")),
        "capabilities": lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
        "seccomp": lambda s: (s["securityContext"].pop("seccompProfile"),
                              s["containers"][0]["securityContext"].pop("seccompProfile")),
        "hostPath": lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
        "hostNetwork": lambda s: s.update(hostNetwork=True),
        "sysctl": lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
    }
    for what, breakage in breakages.items():
        spec = copy.deepcopy(good)
        breakage(spec)
        assert pods.restricted_violations(spec), what


def test_mlflow_is_reachable_only_from_its_clients(all_pods, policies):
    mlflow = all_pods["mlflow"]
    for name, pod in all_pods.items():
        if name == "mlflow":
            continue
        labels = pod["metadata"]["labels"]
        assert pods.ingress_allowed(policies, labels, mlflow, "http") == (name in MLFLOW_CLIENTS), name
        # The same labels in another namespace are not a client.
        assert not pods.ingress_allowed(policies, labels, mlflow, "http", source_namespace=MONITORING_NAMESPACE)
    assert not pods.ingress_allowed(policies, None, mlflow, 5000)  # nothing from outside the namespace


def test_clients_of_mlflow_are_the_pods_configured_to_use_it(all_pods):
    """The policy's client list and the pods that get MLFLOW_TRACKING_URI (the mlplatform-env ConfigMap) agree."""
    configured = {name for name, pod in all_pods.items() for c in pod["spec"]["containers"]
                  for ref in c.get("envFrom") or [] if ref.get("configMapRef", {}).get("name") == "mlplatform-env"}
    assert configured == MLFLOW_CLIENTS


def test_code_server_is_reachable_only_from_the_webserver_and_daemon(all_pods, policies):
    [deployment_port] = {d["port"] for d in pods.chart.load_values()["dagster-user-deployments"]["deployments"]}
    code_server = all_pods["code-server"]
    for name, pod in all_pods.items():
        if name == "code-server":
            continue
        allowed = pods.ingress_allowed(policies, pod["metadata"]["labels"], code_server, deployment_port)
        assert allowed == (name in {"webserver", "daemon"}), name
    webserver_labels = all_pods["webserver"]["metadata"]["labels"]
    assert not pods.ingress_allowed(policies, webserver_labels, code_server, deployment_port + 1)


def test_serving_and_the_ui_take_traffic_on_their_http_port_only(all_pods, policies):
    for name in ("serving-customer-churn", "webserver"):
        pod = all_pods[name]
        assert pods.ingress_allowed(policies, None, pod, "http"), name
        assert not pods.ingress_allowed(policies, None, pod, 22), name


@pytest.mark.parametrize("name", ["daemon", "run-worker"])
def test_pods_without_a_server_take_no_traffic(all_pods, policies, name):
    for port in (80, 3000, 3030, 8080):
        assert not pods.ingress_allowed(policies, None, all_pods[name], port)
        assert not pods.ingress_allowed(policies, all_pods["webserver"]["metadata"]["labels"], all_pods[name], port)


def test_exporter_takes_scrapes_from_prometheus_only_on_its_metrics_port(all_pods, policies):
    exporter = all_pods["mlplatform-exporter"]
    assert pods.ingress_allowed(policies, PROMETHEUS_POD, exporter, "metrics", source_namespace=MONITORING_NAMESPACE)
    assert pods.ingress_allowed(policies, PROMETHEUS_POD, exporter, 9108, source_namespace=MONITORING_NAMESPACE)
    assert not pods.ingress_allowed(policies, PROMETHEUS_POD, exporter, 8080, source_namespace=MONITORING_NAMESPACE)
    # Another pod of the monitoring namespace, a Prometheus elsewhere, the platform's own pods, outside traffic.
    grafana = {"app.kubernetes.io/name": "grafana"}
    assert not pods.ingress_allowed(policies, grafana, exporter, 9108, source_namespace=MONITORING_NAMESPACE)
    assert not pods.ingress_allowed(policies, PROMETHEUS_POD, exporter, 9108,
                                    source_namespace={"kubernetes.io/metadata.name": "default"})
    assert not pods.ingress_allowed(policies, PROMETHEUS_POD, exporter, 9108)
    for name, pod in all_pods.items():
        assert not pods.ingress_allowed(policies, pod["metadata"]["labels"], exporter, "metrics"), name
    assert not pods.ingress_allowed(policies, None, exporter, 9108)
