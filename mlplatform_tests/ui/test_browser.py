"""The Dagster UI as people use it, driven in headless Chromium against the real ``mlplatform ui``
(``dagster dev``: webserver + daemon, and the MLflow UI) on a real state (see cockpit.py).

Screenshots go to ``$MLPLATFORM_UI_SCREENSHOTS`` (default: the module's temp dir); the folder is printed at
the end of the module. The best ones are copied into docs/images/ui/ for docs/ui.md.

Playwright drives Debian's ``chromium-headless-shell`` (``.ci/run`` installs it); Playwright's own browser
download is not used. Tests run in file order: the retraining adds version 2, and the last test stops the UI.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest

from mlplatform_assets.stack.processes import child_processes
from mlplatform_tests.conftest import free_port
from mlplatform_tests.integration.test_webserver_graphql import JOBS, LOCATION, REPOSITORY
from mlplatform_tests.ui.cockpit import CHURN, DELIVERY, DRIFTED_DAY, build_state, start_ui, state_env, stop_ui

pytestmark = [pytest.mark.integration, pytest.mark.topology, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium-headless-shell"
UI_TIMEOUT_MS = 90_000  # the React app on a loaded 2-core machine
RUN_TIMEOUT_MS = 300_000


def graphql(url: str, query: str, **variables) -> dict:
    r = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


@pytest.fixture(scope="module")
def cockpit(tmp_path_factory, request):
    """The state with both models trained and two monitored days, and ``mlplatform ui`` running on it."""
    root = tmp_path_factory.mktemp("cockpit")
    dagster_port, mlflow_port = free_port(), free_port()
    # The state is written with links to the MLflow UI's port; the UI itself is started without
    # MLPLATFORM_MLFLOW_UI_URL, so what the retraining run links to comes from `--mlflow-port`.
    build_state(root, state_env(root, f"http://127.0.0.1:{mlflow_port}"))
    ui = start_ui(root, state_env(root), dagster_port, mlflow_port)
    try:
        assert ui.dagster_url == f"http://127.0.0.1:{dagster_port}"
        assert ui.mlflow_url == f"http://127.0.0.1:{mlflow_port}"
        deadline = time.monotonic() + 120
        while True:  # the code location loads in its own process after the webserver answers
            nodes = graphql(ui.dagster_url, JOBS)["repositoriesOrError"].get("nodes", [])
            if any((n["location"]["name"], n["name"]) == (LOCATION, REPOSITORY) for n in nodes):
                break
            assert time.monotonic() < deadline and ui.proc.poll() is None, ui.log_tail()
            time.sleep(1)
        # The "join the community" dialog a first visit shows would cover the pages.
        graphql(ui.dagster_url, "mutation { setNuxSeen }")
        yield ui
    finally:
        stop_ui(ui)


@pytest.fixture(scope="module")
def shots(cockpit, tmp_path_factory, request) -> Path:
    folder = Path(os.environ.get("MLPLATFORM_UI_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    names = ", ".join(sorted(p.name for p in folder.glob("*.png")))
    with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
        print(f"\nUI screenshots in {folder}: {names}", flush=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium-headless-shell (.ci/run installs it)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def metadata_value(page, key: str):  # noqa: ANN001, ANN201 - Page, Locator
    """The value cell of a row of the asset page's metadata table (its own cells: a Markdown value holds tables)."""
    key_cell = page.locator("td", has_text=re.compile(f"^{re.escape(key)}$"))
    return page.locator("tr", has=key_cell).first.locator(":scope > td").last


def test_asset_graph_shows_every_models_group(cockpit, page, shots):
    page.goto(f"{cockpit.dagster_url}/asset-groups")
    graph = page.get_by_text("Global asset lineage")
    graph.wait_for()
    for group in (CHURN, DELIVERY):
        page.get_by_text(group, exact=True).first.wait_for()
    page.screenshot(path=shots / "01_asset_graph_groups.png")
    page.goto(f"{cockpit.dagster_url}/locations/{LOCATION}/asset-groups/{CHURN}")
    for asset in ("raw_data", "trained_model", "evaluation_report", "deployed_endpoint", "drift_report"):
        page.get_by_text(asset, exact=True).first.wait_for()
    page.screenshot(path=shots / "02_model_group_lineage.png")


def test_trained_model_page_shows_version_metrics_and_a_working_mlflow_link(cockpit, page, shots):
    page.goto(f"{cockpit.dagster_url}/assets/{CHURN}/trained_model")
    assert metadata_value(page, "model_version").inner_text().strip() == "1"
    assert 0.5 < float(metadata_value(page, "holdout_roc_auc").inner_text()) <= 1.0
    link = metadata_value(page, "mlflow_run").locator("a").first
    href = link.get_attribute("href")
    assert href.startswith(f"{cockpit.mlflow_url}/#/experiments/"), href
    page.screenshot(path=shots / "03_trained_model.png")

    # Following the link opens that run in the MLflow UI that `mlplatform ui` started.
    run_id = href.rsplit("/", 1)[1]
    page.goto(href)
    page.get_by_text(run_id).first.wait_for()
    page.get_by_text("holdout_roc_auc").first.wait_for()
    page.screenshot(path=shots / "04_mlflow_run.png")
    r = httpx.get(f"{cockpit.mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
    assert r.status_code == 200 and r.json()["run"]["data"]["tags"], r.text


def test_evaluation_summary_is_rendered_and_opens_the_evidently_report(cockpit, page, shots):
    page.goto(f"{cockpit.dagster_url}/assets/{CHURN}/evaluation_report")
    cell = metadata_value(page, "summary")
    cell.wait_for()
    # The UI renders a short Markdown value in the table and a long one behind "[Show Markdown]".
    if cell.get_by_text("[Show Markdown]").count():
        cell.get_by_text("[Show Markdown]").click()
        summary = page.get_by_role("dialog")
    else:
        summary = cell
    decision = summary.get_by_role("heading", name=f"{CHURN}: challenger v1 vs no champion yet")
    summary.get_by_role("heading", name="Per class (holdout)").wait_for()
    assert summary.locator("strong", has_text="PROMOTE").count() == 1
    decision.scroll_into_view_if_needed()  # the decision first, as a person opening it sees it
    page.screenshot(path=shots / "05_evaluation_summary.png")

    report = summary.get_by_role("link", name="Full Evidently report")
    href = report.get_attribute("href")
    assert href.startswith(cockpit.mlflow_url) and href.endswith("/artifacts/evaluation/evaluation_v1.html"), href
    page.goto(href)
    # The MLflow UI renders the logged HTML in the run's artifact view (a sandboxed frame).
    page.frame_locator("iframe").first.get_by_text("Classification Model Performance").first.wait_for()
    page.screenshot(path=shots / "06_evidently_report_in_mlflow.png")


def test_drifted_day_is_a_failed_warn_check_and_drift_metadata_plots(cockpit, page, shots):
    page.goto(f"{cockpit.dagster_url}/assets/{CHURN}/drift_report?view=checks")
    page.get_by_text("This is a non-blocking asset check").first.wait_for()
    latest = page.get_by_text(re.compile(r"^dataset drift: drift share .*drifted: .*monthly_charges"))
    latest.first.wait_for()
    page.get_by_text("Failed", exact=True).first.wait_for()
    page.screenshot(path=shots / "07_drift_check_failed.png")

    # Numeric values on every day's materialization: the asset's plots chart them over the monitored days.
    page.goto(f"{cockpit.dagster_url}/assets/{CHURN}/drift_report?view=overview")
    page.get_by_role("button", name="Plots").click()
    page.get_by_role("button", name="Events").click()
    for key in ("drift_share", "n_drifted_columns", "prediction_drift_score"):
        page.get_by_text(key, exact=True).first.wait_for()
    page.screenshot(path=shots / "08_drift_plots.png", full_page=True)
    checks = graphql(cockpit.dagster_url, """
        query { assetNodeOrError(assetKey: {path: ["small_churn", "drift_report"]}) {
          ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks {
            name executionForLatestMaterialization { evaluation { success severity } } } } } } } }""")
    [check] = checks["assetNodeOrError"]["assetChecksOrError"]["checks"]
    assert check["name"] == "no_dataset_drift"
    assert check["executionForLatestMaterialization"]["evaluation"] == {"success": False, "severity": "WARN"}, \
        f"the latest drift_report is {DRIFTED_DAY}, which drifted"


def test_retraining_launched_from_the_launchpad_registers_a_new_version(cockpit, page, shots):
    page.goto(f"{cockpit.dagster_url}/locations/{LOCATION}/jobs/{CHURN}__training/playground")
    editor = page.locator(".CodeMirror")
    editor.wait_for()
    editor.click()
    page.keyboard.press("Control+End")
    # Pasted, as a person would: the training window's last day.
    page.keyboard.insert_text(f'ops:\n  {CHURN}__features:\n    config:\n      as_of: "2026-06-10"\n')
    page.get_by_text("No errors").wait_for()
    page.screenshot(path=shots / "09_launchpad_as_of.png")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}"))
    run_id = re.search(r"/runs/([0-9a-f-]{36})", page.url).group(1)
    page.get_by_text("Success", exact=True).first.wait_for(timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=shots / "10_retraining_run_success.png")

    run = graphql(cockpit.dagster_url, """query($id: ID!) { runOrError(runId: $id) { ... on Run {
        status runConfigYaml } } }""", id=run_id)["runOrError"]
    assert run["status"] == "SUCCESS" and re.search(r"as_of: ['\"]?2026-06-10", run["runConfigYaml"]), run

    # The new version appears in the asset's metadata, linked to the MLflow UI `mlplatform ui` started.
    page.goto(f"{cockpit.dagster_url}/assets/{CHURN}/trained_model")
    page.locator("td", has_text=re.compile("^2$")).first.wait_for()
    assert metadata_value(page, "model_version").inner_text().strip() == "2"
    href = metadata_value(page, "mlflow_run").locator("a").first.get_attribute("href")
    assert href.startswith(f"{cockpit.mlflow_url}/#/experiments/"), href
    page.screenshot(path=shots / "11_trained_model_v2.png")
    # Lineage: version 2's MLflow run names the Dagster run launched from the UI.
    v2 = httpx.get(f"{cockpit.mlflow_url}/api/2.0/mlflow/model-versions/get", params={"name": CHURN, "version": "2"},
                   timeout=30).json()["model_version"]
    mlflow_run = httpx.get(f"{cockpit.mlflow_url}/api/2.0/mlflow/runs/get", params={"run_id": v2["run_id"]},
                           timeout=30).json()["run"]
    assert {t["key"]: t["value"] for t in mlflow_run["data"]["tags"]}["mlplatform.dagster_run_id"] == run_id


def test_sensor_turned_on_from_the_automation_page_ticks(cockpit, page, shots):
    from playwright.sync_api import expect

    sensor = f"{CHURN}__new_data_sensor"
    page.goto(f"{cockpit.dagster_url}/automation")
    row = page.locator("[data-index]", has=page.get_by_text(sensor, exact=True))
    switch = row.locator("label[class*='formatSwitch']")  # the on/off toggle (the other checkbox selects the row)
    switch.click()
    expect(switch.locator("input")).to_be_checked(timeout=UI_TIMEOUT_MS)
    page.screenshot(path=shots / "12_automation_sensor_on.png")
    page.goto(f"{cockpit.dagster_url}/locations/{LOCATION}/sensors/{sensor}")
    # Ticks every few seconds (MLPLATFORM_SENSOR_INTERVAL_S=3): the tick history fills while we watch.
    page.get_by_text(re.compile(r"^(Skipped|Failure|\d+ runs? requested)$")).first.wait_for(timeout=120_000)
    page.get_by_role("button", name="View logs").first.wait_for()  # the tick history table has rows
    page.screenshot(path=shots / "13_sensor_ticks.png")
    state = graphql(cockpit.dagster_url, """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
        ... on Sensor { sensorState { status ticks(limit: 5) { status } } } } }""",
                    s={"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": sensor})
    sensor_state = state["sensorOrError"]["sensorState"]
    assert sensor_state["status"] == "RUNNING" and sensor_state["ticks"], sensor_state


def _descendants(pid: int) -> list[int]:
    return [p for child, _ in child_processes(pid) for p in (child, *_descendants(child))]


def test_ctrl_c_stops_both_uis(cockpit):
    started = _descendants(cockpit.proc.pid)
    # dagster dev (with its webserver, daemon and code server) and the MLflow server
    assert len(started) >= 5, started
    assert stop_ui(cockpit) == 0, cockpit.log_tail()
    assert "stopping the UIs" in cockpit.output_text()
    time.sleep(1)
    assert [p for p in started if Path(f"/proc/{p}").exists()] == []
    for url in (f"{cockpit.dagster_url}/server_info", f"{cockpit.mlflow_url}/health"):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=5)
