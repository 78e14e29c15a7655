"""The real ``dagster-webserver`` serving workspace.yaml: a run launched through its GraphQL API the way
the UI's Materialize / Launch buttons do registers a model version in MLflow.

As with ``dagster dev`` and the Helm chart, the instance uses Dagster's default QueuedRunCoordinator:
the webserver queues the run, a real ``dagster-daemon`` dequeues it, and the DefaultRunLauncher
executes it in a separate process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlplatform_assets.cli import _prepare
from mlplatform_assets.defs.names import ASSET_PARTITION_RANGE_END_TAG as RANGE_END_TAG
from mlplatform_assets.defs.names import ASSET_PARTITION_RANGE_START_TAG as RANGE_START_TAG
from mlplatform_assets.lib.model.registry import MlflowSettings, Registry
from mlplatform_tests.conftest import free_port, stop_process_group, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.topology, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "mlplatform"
REPOSITORY = "__repository__"
RUN_TIMEOUT_S = 150

# The mutation the UI sends (LaunchPipelineExecution), reduced to the fields this test reads.
LAUNCH_RUN = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PipelineNotFoundError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
  }
}
"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status jobName tags { key value } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

JOBS = """
query Jobs {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } pipelines { name } } }
    ... on PythonError { message }
  }
}
"""

RUN_FAILURE_EVENTS = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}
"""

ASSET_MATERIALIZATIONS = """
query AssetMaterializations($assetKey: AssetKeyInput!) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset { assetMaterializations(limit: 5) { runId metadataEntries { label
      ... on TextMetadataEntry { text } } } }
  }
}
"""


class Webserver:
    def __init__(self, url: str, log_paths: list[Path]):
        self.url, self.log_paths = url, log_paths

    def graphql(self, query: str, **variables) -> dict:
        r = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=30)
        r.raise_for_status()
        body = r.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def log_tail(self, n: int = 3000) -> str:
        return "\n".join(f"--- {p.name}:\n" + p.read_text(errors="replace")[-n:] for p in self.log_paths if p.exists())


def _stop(proc: subprocess.Popen) -> None:
    stop_process_group(proc, term_timeout=15)


@pytest.fixture()
def webserver(small_churn_spec, platform_env, tmp_path):
    _prepare(platform_env)  # DAGSTER_HOME/dagster.yaml (SQLite instance, telemetry off) as the CLI writes it
    port = free_port()
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def spawn(command: str, *args: str) -> subprocess.Popen:
        exe = shutil.which(command) or str(Path(sys.executable).with_name(command))
        logs.append(tmp_path / f"{command}.log")
        with open(logs[-1], "wb") as log:
            procs.append(subprocess.Popen(
                [exe, *args], cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))  # its own process group, so teardown reaches its children
        return procs[-1]

    workspace = str(REPO_ROOT / "workspace.yaml")
    # Create the SQLite storage once, before two processes race to create its tables (a failure seen
    # on a loaded machine: the code location's instance failed while the daemon was migrating).
    import dagster as dg

    with dg.DagsterInstance.from_config(platform_env.dagster_home):
        pass
    server = Webserver(f"http://127.0.0.1:{port}", logs)
    try:
        proc = spawn("dagster-webserver", "-w", workspace, "-h", "127.0.0.1", "-p", str(port))
        daemon = spawn("dagster-daemon", "run", "-w", workspace)
        wait_for_http(f"{server.url}/server_info", timeout=90, proc=proc)
        # The code location loads in its own process after the server answers; wait for our jobs.
        deadline = time.monotonic() + 90
        while True:
            data = server.graphql(JOBS)["repositoriesOrError"]
            jobs = {(n["location"]["name"], n["name"], p["name"]) for n in data.get("nodes", []) for p in n["pipelines"]}
            if (LOCATION, REPOSITORY, f"{small_churn_spec.name}__lifecycle") in jobs:
                break
            assert time.monotonic() < deadline, f"code location did not load: {data}\n{server.log_tail()}"
            time.sleep(0.5)
        assert daemon.poll() is None, server.log_tail()
        yield server
    finally:
        for p in reversed(procs):
            _stop(p)


def _launch(server: Webserver, job: str, tags: dict[str, str]) -> str:
    data = server.graphql(LAUNCH_RUN, executionParams={
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        "runConfigData": {},
    })["launchPipelineExecution"]
    assert data["__typename"] == "LaunchRunSuccess", data
    return data["run"]["runId"]


def _wait_run(server: Webserver, run_id: str, timeout: float = RUN_TIMEOUT_S) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = server.graphql(RUN_STATUS, runId=run_id)["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            if run["status"] != "SUCCESS":
                events = server.graphql(RUN_FAILURE_EVENTS, runId=run_id)["logsForRun"].get("events", [])
                msgs = "\n".join(e.get("message", "") for e in events[-30:])
                pytest.fail(f"run {run_id} ended {run['status']}:\n{msgs}\n{server.log_tail()}")
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} still {run['status']} after {timeout:.0f}s\n{server.log_tail()}")
        time.sleep(1)


def test_lifecycle_run_launched_through_graphql(webserver, small_churn_spec, platform_env):
    name = small_churn_spec.name
    registry = Registry(MlflowSettings.from_config(platform_env), platform_env.audit_log_path)
    assert registry.champion(name) is None

    # A backfill-style range run of the whole lifecycle, as the UI launches it for a selected partition range.
    run_id = _launch(webserver, f"{name}__lifecycle", {
        RANGE_START_TAG: small_churn_spec.days[0].isoformat(), RANGE_END_TAG: small_churn_spec.end.isoformat(),
        "mlplatform/trigger": "test-graphql"})
    run = _wait_run(webserver, run_id)
    assert run["jobName"] == f"{name}__lifecycle"
    assert {t["key"]: t["value"] for t in run["tags"]}["mlplatform/trigger"] == "test-graphql"

    # The run worker (another process) wrote to the same MLflow store: version 1, champion, lineage to this run.
    versions = registry.client.search_model_versions(f"name='{name}'")
    assert [str(v.version) for v in versions] == ["1"]
    champion = registry.champion(name)
    assert champion is not None and str(champion.version) == "1"
    mlflow_run = registry.client.get_run(champion.run_id)
    assert run_id in (mlflow_run.data.tags | dict(champion.tags)).values()

    # The webserver reports the materialization of the raw data, with its source, for this run.
    asset = webserver.graphql(ASSET_MATERIALIZATIONS, assetKey={"path": [name, "raw_data"]})["assetOrError"]
    mats = asset["assetMaterializations"]
    assert mats and all(m["runId"] == run_id for m in mats)
    sources = {e.get("text") for m in mats for e in m["metadataEntries"] if e["label"] == "source"}
    assert sources == {str(small_churn_spec.source_dir)}

    # Retraining on the already-ingested partitions through the training job registers a new version.
    run_id2 = _launch(webserver, f"{name}__training", {"mlplatform/trigger": "test-graphql"})
    _wait_run(webserver, run_id2)
    versions = sorted(int(v.version) for v in registry.client.search_model_versions(f"name='{name}'"))
    assert versions == [1, 2]
    v2 = registry.get_version(name, "2")
    assert run_id2 in (registry.client.get_run(v2.run_id).data.tags | dict(v2.tags)).values()
