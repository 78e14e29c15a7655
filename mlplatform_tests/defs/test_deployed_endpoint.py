"""deployed_endpoint confirms that the live HTTP service serves the new champion after a promotion."""

import json
import urllib.request
from pathlib import Path

from mlplatform_assets.cli import run_lifecycle
from mlplatform_assets.lib.serving import ThreadedServer, create_app
from mlplatform_assets.lib.serving.endpoints import probe
from mlplatform_tests.conftest import SMALL_END, write_small_spec


def _predict(url: str, row: dict) -> dict:
    req = urllib.request.Request(f"{url}/invocations", data=json.dumps({"dataframe_records": [row]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def test_promotion_reaches_the_live_endpoint(platform_env, small_source):
    models = Path(platform_env.models_dir)
    spec_path = write_small_spec(models, small_source, estimator="sklearn.dummy.DummyClassifier",
                                 params="{strategy: prior}",
                                 promotion="{must_beat_baseline: false}")  # a constant is no better than the prior baseline
    assert run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]["success"]  # v1: a weak first champion

    server = ThreadedServer(create_app("small_churn", platform_env, poll_interval_s=0.5, prediction_log=False,
                                       allow_unauthenticated=True)).start(wait_model=True)
    try:
        assert probe(server.url).model_version == "1"
        spec_path.write_text(spec_path.read_text().replace("sklearn.dummy.DummyClassifier", "sklearn.ensemble.HistGradientBoostingClassifier")
                             .replace("{strategy: prior}", "{max_iter: 40}")
                             + f"serving: {{endpoints: ['{server.url}'], poll_interval_s: 0.5}}\n")
        summary = run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]
        assert summary["success"], summary
        deployed = summary["assets"]["deployed_endpoint"]
        assert deployed["promoted"] is True and deployed["champion_version"] == "2"
        assert deployed["endpoint_model_version"] == "2" and deployed["endpoint_healthy"] is True
        assert deployed["endpoints_serving_champion"] == 1
        row = {"tenure_months": 3, "monthly_charges": 80.5, "total_charges": 240.0, "usage_gb": 10.0,
               "support_calls": 4, "days_since_last_login": 20.0, "age": 30, "plan": "premium",
               "contract": "monthly", "payment_method": "voucher", "region": "coastal"}
        assert str(_predict(server.url, row)["model_version"]) == "2"
    finally:
        server.stop()


def test_unreachable_endpoint_is_reported_not_fatal(platform_env, small_source):
    from mlplatform_assets.lib.serving import free_port

    url = f"http://127.0.0.1:{free_port()}"
    spec_path = write_small_spec(Path(platform_env.models_dir), small_source)
    spec_path.write_text(spec_path.read_text() + f"serving: {{endpoints: ['{url}'], poll_interval_s: 0.1}}\n")
    summary = run_lifecycle(platform_env, ["small_churn"], SMALL_END)[0]
    assert summary["success"]  # the registry is the source of truth; the alias moved
    deployed = summary["assets"]["deployed_endpoint"]
    assert deployed["champion_version"] == "1" and deployed["endpoint_healthy"] is False
    assert deployed["endpoints"][0]["error"].startswith("unreachable")
