"""End to end on the real MLflow store: evaluation logs permutation importance against the champion, and
``mlplatform explain`` explains a version's prediction for a --row and for a logged --request-id."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pytest

from mlplatform_assets.cli import main
from mlplatform_assets.commands.explain import logged_row
from mlplatform_assets.lib.model.explain import ExplainError
from mlplatform_assets.lib.serving.predlog import LogChunk, PredictionLogWriter

ROW = {"tenure_months": 2, "monthly_charges": 99.0, "total_charges": 198.0, "usage_gb": 3.0, "support_calls": 6,
       "days_since_last_login": 40, "age": 30, "plan": "basic", "contract": "month-to-month",
       "payment_method": "electronic_check", "region": "north"}


def log_request(root: str, model: str, version: str, request_id: str, rows: list[dict]) -> None:
    """Log a request the way the server does (PredictionLogWriter, one row per input row)."""
    ts = int(datetime(2026, 6, 11, 9, tzinfo=timezone.utc).timestamp() * 1e6)
    kinds = {k: "string" if isinstance(v, str) else "double" for k, v in rows[0].items()}
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    writer = PredictionLogWriter(root, model, flush_interval_s=60)
    writer.start()
    writer.submit(LogChunk(columns, kinds, len(rows), {
        "request_id": [request_id] * len(rows), "row": list(range(len(rows))), "timestamp_us": [ts] * len(rows),
        "model_name": model, "model_version": version, "prediction": np.ones(len(rows), dtype=int),
        "probabilities": np.tile([0.2, 0.8], (len(rows), 1))}))
    writer.close()


def test_logged_rows_come_back_as_the_inputs(tmp_path):
    log_request(str(tmp_path), "m", "7", "req-1", [ROW, {**ROW, "plan": "pro"}])
    with pytest.raises(ExplainError, match="holds 2 rows; choose one with --row-index 0..1"):
        logged_row(str(tmp_path), "m", "req-1", None)
    values, version = logged_row(str(tmp_path), "m", "req-1", 1)
    assert version == "7" and values == {**ROW, "plan": "pro", "tenure_months": 2.0, "support_calls": 6.0,
                                         "days_since_last_login": 40.0, "age": 30.0}
    with pytest.raises(ExplainError, match="request id 'nope' is not in m's prediction log"):
        logged_row(str(tmp_path), "m", "nope", None)


def test_importance_against_the_champion_and_explain_from_the_cli(small_churn_spec, platform_env, capsys, tmp_path):
    from mlplatform_assets.lib.data.storage import ObjectStore
    from mlplatform_assets.lib.model.importance import IMPORTANCE_ARTIFACT
    from mlplatform_assets.lib.model.lifecycle import (
        apply_decision,
        evaluate_challenger,
        ingest_days,
        load_training_dataset,
        store_validated,
        train_and_register,
    )
    from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
    from mlplatform_assets.lib.spec import load_spec
    from mlplatform_tests.conftest import write_small_spec

    store = ObjectStore(platform_env.data_uri)
    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)
    spec = load_spec(small_churn_spec.spec_path, platform_env.state_dir)
    ingested = ingest_days(spec, small_churn_spec.days, store)
    store_validated(spec, [d.day for d in ingested if d.passed], store)
    dataset = load_training_dataset(spec, store)
    v1 = train_and_register(spec, dataset, registry, "test", None)[0]
    first = evaluate_challenger(spec, registry, v1.version, dataset)
    assert first.extra["importance"]["champion_version"] is None
    (tmp_path / "report.html").write_text("<html></html>")
    registry.log_evaluation(spec.name, v1.version, v1.run_id, tmp_path / "report.html", first.decision.as_dict(),
                            None, spec.metrics.primary)
    apply_decision(spec, registry, first.decision, actor="test", dagster_run_id=None)

    write_small_spec(platform_env.models_dir, str(small_churn_spec.source_dir),
                     estimator="sklearn.ensemble.HistGradientBoostingClassifier", params="{max_iter: 40}")
    spec2 = load_spec(small_churn_spec.spec_path, platform_env.state_dir)
    v2 = train_and_register(spec2, dataset, registry, "test", None)[0]
    second = evaluate_challenger(spec2, registry, v2.version, dataset)

    imp = second.extra["importance"]
    assert imp["champion_version"] == v1.version and imp["rows"] == len(dataset.holdout)
    features = {r["feature"]: r for r in imp["features"]}
    assert set(features) == set(dataset.feature_columns)
    assert all(r["change"] == pytest.approx(r["importance"] - r["champion_importance"]) for r in features.values())
    logged = json.loads(registry.download_artifact(v2.run_id, IMPORTANCE_ARTIFACT))
    assert logged["features"] == imp["features"]
    top = imp["features"][0]
    metrics = registry.client.get_run(v2.run_id).data.metrics
    assert metrics[f"importance.{top['feature']}"] == pytest.approx(top["importance"])
    assert metrics[f"importance_change.{top['feature']}"] == pytest.approx(top["change"])

    # explain: a --row, as a table and as JSON whose contributions add up to output - expected.
    assert main(["explain", spec.name, v2.version, "--row", json.dumps(ROW)]) == 0
    table = capsys.readouterr().out
    assert f"{spec.name} v{v2.version}: probability of class 1 = " in table and "Shapley" in table
    assert main(["explain", spec.name, v2.version, "--row", json.dumps(ROW), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["method"] == "exact" and {c["feature"] for c in e["contributions"]} == set(ROW)
    assert sum(c["contribution"] for c in e["contributions"]) == pytest.approx(e["value"] - e["expected"], abs=1e-9)
    # A logged request: the version that answered it is the default; the result is the same row's explanation.
    log_request(platform_env.prediction_log_uri, spec.name, v2.version, "req-42", [ROW])
    assert main(["explain", spec.name, "--request-id", "req-42", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["contributions"] == e["contributions"]
    # Bad input: a clear error and exit 2.
    assert main(["explain", spec.name, v2.version, "--row", json.dumps({**ROW, "plan": 3})]) == 2
    assert "feature 'plan' is categorical" in capsys.readouterr().err
