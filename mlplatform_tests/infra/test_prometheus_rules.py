"""Alert rules, their PrometheusRule manifest and the Grafana dashboard: promtool checks and unit-tests the rules
(every alert firing and not firing), every runbook link resolves, and every metric a rule or panel queries is
one the serving endpoint or the model-health exporter really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from mlplatform_tests.infra import chart, exported_metrics

REPO = chart.REPO
PROMETHEUS = REPO / "infra" / "prometheus"
RULES = PROMETHEUS / "rules.yaml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yaml"))
MANIFEST = REPO / "infra" / "k8s" / "prometheusrule.yaml"
DASHBOARD = REPO / "infra" / "grafana" / "mlplatform-dashboard.json"
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = "https://github.com/mlplatform/mlplatform/blob/main/docs/runbook.md#"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found on PATH (Debian/Ubuntu: apt-get install prometheus; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> set[str]:
    return (exported_metrics.serving_metric_names(tmp_path_factory.mktemp("serving"))
            | exported_metrics.exporter_metric_names() | exported_metrics.PROMETHEUS_SERIES)


# --- PromQL: the metric names an expression selects ------------------------------------------------------------
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL (or Grafana-templated PromQL) expression: identifiers that are not
    function calls, keywords, label names (inside ``{}`` or a ``by``/``on``/... list), durations or numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations, [$__range]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_KEYWORDS or re.fullmatch(r"\d+[smhdwy]", name):
            continue
        names.add(name)
    return names


def test_metric_name_parser():
    expr = ('histogram_quantile(0.99, sum by (namespace, le) (rate(a_bucket{job="x", route=~"/v1/.+"}[5m]))) > 0.5 '
            'or absent(up{job="y"}) unless on (model) b_total offset 1h / (time() - c) * 3600 > bool 2')
    assert metric_names(expr) == {"a_bucket", "up", "b_total", "c"}
    assert metric_names('sum(rate(d{service=~"$service"}[$__rate_interval])) / 1e3') == {"d"}


# --- promtool ---------------------------------------------------------------------------------------------------
def test_promtool_check_rules_accepts_the_rules():
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass_and_cover_every_alert_firing_and_not_firing():
    result = subprocess.run([_promtool(), "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=PROMETHEUS / "tests")
    print(result.stdout)  # the unit-test report, for the CI log
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path):
    """The unit tests have teeth: loosening one threshold makes them fail."""
    broken = RULES.read_text().replace("> 36 * 3600", "> 30 * 3600")
    assert broken != RULES.read_text()
    (tmp_path / "rules.yaml").write_text(broken)
    (tmp_path / "tests").mkdir()
    freshness = PROMETHEUS / "tests" / "freshness_test.yaml"
    (tmp_path / "tests" / freshness.name).write_text(freshness.read_text())
    result = subprocess.run([_promtool(), "test", "rules", freshness.name], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path / "tests")
    assert result.returncode != 0 and "MlplatformNoNewData" in result.stdout + result.stderr


# --- the rules themselves ---------------------------------------------------------------------------------------
def test_every_alert_has_severity_summary_description_and_a_runbook_section():
    anchors = {re.sub(r"[^a-z0-9_ -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    for alert in _alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]
        url = alert["annotations"]["runbook_url"]
        assert url == RUNBOOK_URL + alert["alert"].lower(), url
        assert url.split("#", 1)[1] in anchors, f"{url}: no such section in docs/runbook.md"


def test_every_metric_a_rule_queries_is_exported(exported):
    for alert in _alerts():
        used = metric_names(alert["expr"])
        assert used, alert["alert"]
        assert used <= exported, (alert["alert"], used - exported)


def test_prometheusrule_manifest_is_generated_from_the_rules():
    result = subprocess.run([sys.executable, str(PROMETHEUS / "render_prometheusrule.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_prometheusrule_manifest_structure():
    """kubernetes-validate has no schema for the CRD: check what the Prometheus Operator's schema requires."""
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"} and set(manifest["spec"]) == {"groups"}
    assert manifest["metadata"]["namespace"] == "mlplatform"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", manifest["metadata"]["name"])
    group_names = [g["name"] for g in manifest["spec"]["groups"]]
    assert len(group_names) == len(set(group_names))
    for group in manifest["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert ("alert" in rule) != ("record" in rule) and isinstance(rule["expr"], str)
            assert all(isinstance(v, str) for v in {**rule.get("labels", {}), **rule.get("annotations", {})}.values())
            if "for" in rule:
                assert re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", rule["for"]), rule["for"]


# --- the Grafana dashboard --------------------------------------------------------------------------------------
def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_dashboard_parses_and_covers_what_the_issue_asks():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 39 and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"model", "service"} <= set(variables)
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Serving", "Model health", "Cost"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used = {name for p in _panels(dashboard) for t in p["targets"] for name in metric_names(t["expr"])}
    for needed in ("mlplatform_serving_requests_total", "mlplatform_serving_request_duration_seconds_bucket",
                   "mlplatform_serving_model_version", "mlplatform_serving_batch_rows_bucket",
                   "mlplatform_model_drift_share", "mlplatform_model_realized_quality", "mlplatform_model_quality_floor",
                   "process_cpu_seconds_total"):
        assert needed in used, needed


def test_every_dashboard_query_uses_exported_metrics(exported):
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used and used <= exported, (panel["title"], used - exported)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            [metric] = re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)", variable["definition"])
            assert metric in exported, variable["name"]


def test_every_job_the_rules_select_is_scraped_by_one_servicemonitor():
    """Each job="..." a rule or the dashboard selects (mlplatform-serving, mlplatform-exporter) is the job label
    exactly one ServiceMonitor sets, on Services of infra/k8s that have its endpoint port and whose pods serve
    that port; no Service is scraped under two jobs (kubernetes-validate has no schema for the CRD: its
    structure is checked here)."""
    objects = [d for p in sorted((REPO / "infra" / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())
               if d]
    monitors = [o for o in objects if o["kind"] == "ServiceMonitor"]
    services = [o for o in objects if o["kind"] == "Service"]
    workloads = [o for o in objects if o["kind"] == "Deployment"]
    jobs: dict[str, str] = {}
    scraped: list[str] = []
    for monitor in monitors:
        name = monitor["metadata"]["name"]
        assert (monitor["apiVersion"], monitor["metadata"]["labels"]["role"]) == ("monitoring.coreos.com/v1",
                                                                                  "scrape-config"), name
        assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [chart.NAMESPACE], name
        [endpoint] = monitor["spec"]["endpoints"]
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings"}
        assert endpoint["path"] == "/metrics"
        [job] = [r["replacement"] for r in endpoint.get("relabelings", [])
                 if r.get("targetLabel") == "job" and r.get("action") == "replace"]
        assert job not in jobs, (job, name, jobs.get(job))
        jobs[job] = name
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert selected, name
        for service in selected:
            [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
            [workload] = [w for w in workloads
                          if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()]
            container_ports = {p["name"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
            assert port["targetPort"] in container_ports, (name, service["metadata"]["name"])
            scraped.append(service["metadata"]["name"])
    assert len(scraped) == len(set(scraped)), scraped
    selected_jobs = set(re.findall(r'job="([^"]+)"', RULES.read_text() + DASHBOARD.read_text().replace('\\"', '"')))
    assert selected_jobs == set(jobs) == {"mlplatform-serving", "mlplatform-exporter"}, (selected_jobs, jobs)
    assert {"serving-customer-churn", "mlplatform-exporter"} <= set(scraped)
