"""A platform state worth looking at, and ``mlplatform ui`` on it, for the browser tests.

Two small models (classification ``small_churn``, regression ``small_delivery``) trained once through the
CLI's lifecycle; two monitored days of ``small_churn`` (one calm, one drifted). Then the real
``mlplatform ui`` (``dagster dev``: webserver + daemon, and ``mlflow server``) on that state, on free
127.0.0.1 ports. Run this file to get the same state and UI for looking around by hand:
``python -m mlplatform_tests.ui.cockpit /tmp/cockpit``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from mlplatform_tests.conftest import (
    SMALL_DAYS,
    SMALL_END,
    free_port,
    stop_process_group,
    write_churn_days,
    write_small_spec,
)

CHURN = "small_churn"
DELIVERY = "small_delivery"
CALM_DAY = SMALL_END + dt.timedelta(days=1)
DRIFTED_DAY = SMALL_END + dt.timedelta(days=2)
# Platform variables a developer's shell could leak into the state's processes.
_LEAKY_PREFIXES = ("MLPLATFORM_", "MLFLOW_", "DAGSTER_", "AWS_")

DELIVERY_SPEC = """\
name: {name}
description: small delivery-time model for the UI tests
task: regression
source:
  uri: {source}
  file_pattern: "{{date}}.parquet"
timestamp_column: created_at
partition_start: {start}
target:
  column: delivery_minutes
features:
  numeric: [distance_km, items, hour, courier_rating]
  categorical: [weather, restaurant_type, vehicle]
estimator:
  class_path: sklearn.linear_model.Ridge
  params: {{alpha: 1.0}}
training:
  window_days: 10
  holdout_days: 2
  seed: 5
metrics:
  primary: rmse
  additional: [mae]
validation:
  max_null_share: 0.2
  min_rows: 50
"""


def state_env(root: Path, mlflow_ui_url: str | None = None) -> dict[str, str]:
    """The environment of every process on the state under ``root`` (the caller's platform variables dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env.update(MLPLATFORM_HOME=str(root / "home"), MLPLATFORM_MODELS_DIR=str(root / "models"),
               DAGSTER_HOME=str(root / "dagster_home"), DAGSTER_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1",
               MLFLOW_TRACKING_URI=f"sqlite:///{root / 'home' / 'mlflow' / 'mlflow.db'}",
               MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", PYTHONWARNINGS="ignore",
               # Sensor ticks every few seconds, so a sensor turned on in the UI shows ticks while the test watches.
               MLPLATFORM_SENSOR_INTERVAL_S="3")
    if mlflow_ui_url:
        env["MLPLATFORM_MLFLOW_UI_URL"] = mlflow_ui_url
    return env


def build_state(root: Path, env: Mapping[str, str]) -> None:
    """Write both models' sources and specs, train each once and monitor two days of ``small_churn``, through
    the CLI in a child process (the state is written exactly as ``mlplatform lifecycle`` writes it)."""
    from mlplatform_assets.lib.data import example_data

    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    churn_source = root / "source" / CHURN
    write_churn_days(churn_source)
    write_small_spec(root / "models", str(churn_source), name=CHURN)
    example_data.write_example_days("customer_churn", churn_source, [CALM_DAY], rows=300)
    example_data.write_example_days("customer_churn", churn_source, [DRIFTED_DAY], rows=300, drift=True)
    delivery_source = root / "source" / DELIVERY
    example_data.write_example_days("delivery_time", delivery_source, SMALL_DAYS, rows=300)
    (root / "models" / f"{DELIVERY}.yaml").write_text(
        DELIVERY_SPEC.format(name=DELIVERY, source=delivery_source, start=SMALL_DAYS[0].isoformat()))
    subprocess.run([sys.executable, "-m", "mlplatform_tests.ui.cockpit", "--build", str(root)], env=dict(env),
                   check=True, timeout=600)


def _build_in_this_process() -> None:
    """The body of :func:`build_state` that runs under the state's environment."""
    import dagster as dg

    from mlplatform_assets.cli import QUIET_LOGS, run_lifecycle
    from mlplatform_assets.definitions import build_definitions
    from mlplatform_assets.lib.config import load_config
    from mlplatform_assets.lib.spec import load_specs

    config = load_config()
    summaries = run_lifecycle(config, [CHURN, DELIVERY], SMALL_END)
    assert all(s["success"] for s in summaries), summaries
    instance = dg.DagsterInstance.get()
    defs = build_definitions(config, load_specs(config.models_dir, config.state_dir))
    for day in (CALM_DAY, DRIFTED_DAY):
        for job in (f"{CHURN}__ingest", f"{CHURN}__monitoring"):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=str(day),
                                                                  run_config=QUIET_LOGS)
            assert result.success, f"{job} {day} failed"


@dataclass
class RunningUI:
    proc: subprocess.Popen
    output: Path
    dagster_url: str
    mlflow_url: str

    def output_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def log_tail(self, n: int = 4000) -> str:
        logs = sorted((self.output.parent / "home" / "logs" / "ui").glob("*.log"))
        return "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-n:]}" for p in [self.output, *logs])


def start_ui(root: Path, env: Mapping[str, str], dagster_port: int, mlflow_port: int,
             timeout: float = 240) -> RunningUI:
    """``mlplatform ui`` on the state, as a person starts it; returns once it has printed both URLs."""
    output = root / "mlplatform-ui.out"
    exe = shutil.which("mlplatform", path=str(Path(sys.executable).parent)) or "mlplatform"
    with open(output, "wb") as out:
        proc = subprocess.Popen([exe, "ui", "--port", str(dagster_port), "--mlflow-port", str(mlflow_port)],
                                env=dict(env), cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    ui = RunningUI(proc, output, "", "")
    deadline = time.monotonic() + timeout
    while not re.search(r"MLflow UI:\s+(\S+)", ui.output_text()):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process_group(proc)
            raise RuntimeError(f"mlplatform ui did not print its URLs:\n{ui.log_tail()}")
        time.sleep(0.5)
    text = ui.output_text()
    ui.dagster_url = re.search(r"Dagster UI:\s+(\S+)", text).group(1)
    ui.mlflow_url = re.search(r"MLflow UI:\s+(\S+)", text).group(1)
    return ui


def stop_ui(ui: RunningUI, timeout: float = 60) -> int:
    """Ctrl-C, as a person stops it; returns its exit code (kills the group if it does not stop in time)."""
    if ui.proc.poll() is None:
        os.killpg(ui.proc.pid, signal.SIGINT)
        try:
            ui.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process_group(ui.proc)
    return ui.proc.returncode


if __name__ == "__main__":
    if sys.argv[1] == "--build":
        _build_in_this_process()
    else:
        root = Path(sys.argv[1]).resolve()
        root.mkdir(parents=True, exist_ok=True)
        dagster_port, mlflow_port = free_port(), free_port()
        build_state(root, state_env(root, f"http://127.0.0.1:{mlflow_port}"))
        ui = start_ui(root, state_env(root), dagster_port, mlflow_port)
        print(f"Dagster UI {ui.dagster_url}, MLflow UI {ui.mlflow_url}; Ctrl-C stops", flush=True)
        try:
            ui.proc.wait()
        except KeyboardInterrupt:
            stop_ui(ui)
