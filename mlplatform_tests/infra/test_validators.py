"""External validators over infra/: kubernetes-validate (strict, against a pinned Kubernetes version) on every
manifest and on the pods the Helm values and the run launcher produce, and checkov with zero failed checks.

Both tools live in their own virtualenv (their pinned dependencies clash with the platform's):
.ci/run creates .ci/.venv-validators; on PATH works too. Without them these tests are skipped locally and
fail under CI=true."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlplatform_tests.infra import chart, pods

REPO = chart.REPO
VALIDATORS_VENV = REPO / ".ci" / ".venv-validators"
KUBERNETES_VERSION = "1.31.0"


def _tool(name: str) -> str:
    for candidate in (VALIDATORS_VENV / "bin" / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    message = (f"{name} not found in {VALIDATORS_VENV.relative_to(REPO)}/bin or on PATH "
               "(.ci/run creates that virtualenv; its 'validators' step shows the pinned versions)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _operator_objects() -> list[dict]:
    """Prometheus Operator objects (PrometheusRule, ServiceMonitor): CRDs that kubernetes-validate has no schema
    for (it warns and skips them); test_prometheus_rules.py checks their structure."""
    return [o for o in pods.k8s_objects() if o["apiVersion"].startswith("monitoring.coreos.com/")]


def _kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION,
                           *map(str, paths)], capture_output=True, text=True, timeout=300)


def test_manifests_pass_strict_kubernetes_schema_validation():
    manifests = sorted((REPO / "infra" / "k8s").glob("*.yaml"))
    result = _kubernetes_validate(*manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    validated = result.stdout.count(" passed for resource ")
    crds = _operator_objects()
    assert validated == len(pods.k8s_objects()) - len(crds), result.stdout
    assert result.stdout.count("Couldn't find schema for kind") + result.stderr.count(
        "Couldn't find schema for kind") == len(crds), result.stdout + result.stderr


def test_pods_from_the_helm_values_and_the_run_launcher_pass_strict_validation(tmp_path):
    """The Kubernetes objects inside the Helm values (security contexts, volumes, resources, ...) are only
    ever checked by the API server: validate them in the pods the chart and dagster-k8s build from them."""
    values = chart.load_values()
    rendered = [*chart.pod_specs_from_values(values).values(), chart.run_job(values, tmp_path)]
    path = tmp_path / "rendered.yaml"
    path.write_text(yaml.safe_dump_all(rendered))
    result = _kubernetes_validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed for resource ") == len(rendered), result.stdout


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    """The validator is strict: a misspelt field (which the API server would drop or reject) fails it."""
    [serving] = [o for o in pods.k8s_objects()
                 if o["kind"] == "Deployment" and o["metadata"]["name"] == "serving-customer-churn"]
    serving["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(serving))
    result = _kubernetes_validate(path)
    assert result.returncode != 0
    assert "readOnlyRootFileSystem" in result.stdout + result.stderr


@pytest.mark.slow
def test_checkov_finds_no_failed_check_and_every_skip_has_a_reason():
    result = subprocess.run([_tool("checkov"), "--directory", "infra", "--skip-download", "--output", "json"],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r for r in reports}
    # It really scanned: every manifest object (plus the pod of each workload) and the Dockerfile.
    assert by_type["kubernetes"]["summary"]["resource_count"] == len(pods.k8s_objects()) + len(pods.manifest_pods())
    assert by_type["dockerfile"]["summary"]["resource_count"] == 1
    for report in reports:
        summary = report["summary"]
        assert summary["failed"] == 0 and summary["parsing_errors"] == 0, report["results"].get("failed_checks")
        for skipped in report["results"].get("skipped_checks", []):
            reason = (skipped["check_result"].get("suppress_comment") or "").strip()
            assert len(reason) > 20, (skipped["check_id"], skipped["file_path"])
