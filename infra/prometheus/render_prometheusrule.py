#!/usr/bin/env python3
"""Write infra/k8s/prometheusrule.yaml (a Prometheus Operator PrometheusRule) from infra/prometheus/rules.yaml.

rules.yaml is the source: promtool checks and unit-tests it; the PrometheusRule carries exactly its groups.
Run after editing rules.yaml (``python infra/prometheus/render_prometheusrule.py``); ``--check`` exits 1 when
the committed manifest is out of date (mlplatform_tests/infra/test_prometheus_rules.py runs the same check).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

INFRA = Path(__file__).resolve().parents[1]
RULES = INFRA / "prometheus" / "rules.yaml"
MANIFEST = INFRA / "k8s" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from infra/prometheus/rules.yaml by infra/prometheus/render_prometheusrule.py: edit rules.yaml, then
# run that script (a test fails while the two differ).
#
# For the Prometheus Operator (kube-prometheus-stack): its Prometheus must select this object (ruleSelector /
# ruleNamespaceSelector; the label `role: alert-rules` below is what docs/monitoring.md has the selector match).
"""


def render(rules_text: str) -> str:
    groups = yaml.safe_load(rules_text)["groups"]
    manifest = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "mlplatform", "namespace": "mlplatform",
                     "labels": {"app.kubernetes.io/part-of": "mlplatform", "role": "alert-rules"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(manifest, sort_keys=False, width=1000, allow_unicode=True)


def main(argv: list[str]) -> int:
    text = render(RULES.read_text())
    if "--check" in argv:
        if not MANIFEST.exists() or MANIFEST.read_text() != text:
            print(f"{MANIFEST} is out of date: run python {Path(__file__).relative_to(INFRA.parent)}", file=sys.stderr)
            return 1
        return 0
    MANIFEST.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
