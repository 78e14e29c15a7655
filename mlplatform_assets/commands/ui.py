"""``mlplatform ui``: the Dagster UI (webserver + daemon, what ``dagster dev`` runs) and the MLflow UI on the
platform's state, until Ctrl-C.

Both read the same configuration as every other command (``DAGSTER_HOME``, ``MLFLOW_TRACKING_URI``, ...), so
they show what ``mlplatform lifecycle`` and the sensors wrote. Links in asset metadata point at the MLflow UI
started here: runs launched from this Dagster UI are given its URL (``MLPLATFORM_MLFLOW_UI_URL``) unless
that variable names another URL. Against an MLflow tracking server no MLflow UI is started: the server is one.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mlplatform_assets.lib.config import (
    DEFAULT_MLFLOW_UI_PORT,
    ENV_MLFLOW_UI_URL,
    PlatformConfig,
    is_tracking_server,
)

# The UIs run the console scripts of this Python environment, like the stack's processes.
from mlplatform_assets.stack import _bin
from mlplatform_assets.stack.processes import Service

DEFAULT_DAGSTER_UI_PORT = 3000
# The code location of workspace.yaml, written into DAGSTER_HOME so the command works from any directory.
WORKSPACE_YAML = """\
load_from:
  - python_module:
      module_name: mlplatform_assets.definitions
      location_name: mlplatform
"""


@dataclass
class PlatformUI:
    """The UI processes for one configuration; :meth:`start` starts them, :meth:`stop` stops them."""

    config: PlatformConfig
    host: str = "127.0.0.1"
    dagster_port: int = DEFAULT_DAGSTER_UI_PORT
    mlflow_port: int = DEFAULT_MLFLOW_UI_PORT

    def __post_init__(self) -> None:
        self.services: list[Service] = []
        self.log_dir = Path(self.config.state_dir) / "logs" / "ui"

    @property
    def _link_host(self) -> str:
        """The host in printed URLs and links: a wildcard listen address is no address to open."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def dagster_url(self) -> str:
        return f"http://{self._link_host}:{self.dagster_port}"

    @property
    def starts_mlflow(self) -> bool:
        return not is_tracking_server(self.config.mlflow_tracking_uri)

    @property
    def mlflow_url(self) -> str:
        """Where people open MLflow: the tracking server, or MLPLATFORM_MLFLOW_UI_URL when it names another
        URL than the default, else the UI started here (on whichever port it was given)."""
        if not self.starts_mlflow or self.config.mlflow_ui_url != f"http://127.0.0.1:{DEFAULT_MLFLOW_UI_PORT}":
            return self.config.mlflow_ui_url
        return f"http://{self._link_host}:{self.mlflow_port}"

    def _mlflow_service(self) -> Service:
        config = self.config
        argv = [_bin("mlflow"), "server", "--backend-store-uri", config.mlflow_tracking_uri,
                "--registry-store-uri", config.mlflow_registry_uri, "--host", self.host,
                "--port", str(self.mlflow_port), "--workers", "1",
                # The runs' artifacts are local files the server reads directly; without this it would
                # set up its own proxied artifact store in ./mlartifacts.
                "--no-serve-artifacts"]
        if config.artifact_root:
            argv += ["--default-artifact-root", config.artifact_root]
        # The server's job runner (server-side GenAI jobs, unused here) is several more processes.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        return Service("mlflow-ui", argv, env, self.log_dir / "mlflow-ui.log", cwd=config.state_dir,
                       ready_url=f"http://{self._link_host}:{self.mlflow_port}/health", start_timeout=180)

    def _dagster_service(self) -> Service:
        workspace = Path(self.config.dagster_home) / "workspace.yaml"
        workspace.write_text(WORKSPACE_YAML)
        env = {**os.environ, "DAGSTER_HOME": self.config.dagster_home, ENV_MLFLOW_UI_URL: self.mlflow_url,
               "PYTHONUNBUFFERED": "1"}
        argv = [_bin("dagster"), "dev", "-w", str(workspace), "-h", self.host, "-p", str(self.dagster_port)]
        return Service("dagster-dev", argv, env, self.log_dir / "dagster.log", cwd=self.config.state_dir,
                       ready_url=f"{self.dagster_url}/server_info", start_timeout=180)

    def start(self) -> "PlatformUI":
        """Start both UIs and wait until they answer; on failure stop what started and raise RuntimeError."""
        self.services = [self._dagster_service()] + ([self._mlflow_service()] if self.starts_mlflow else [])
        try:
            for service in self.services:
                service.start(wait=False)
            for service in self.services:
                service.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def dead(self) -> list[str]:
        """The log tails of UI processes that exited."""
        return [s.log_tail() for s in self.services if s.proc is not None and s.proc.poll() is not None]

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop(term_timeout=20)


def run_ui(config: PlatformConfig, host: str, dagster_port: int, mlflow_port: int, out: TextIO = sys.stdout) -> int:
    """Start the UIs, print their URLs, wait for Ctrl-C (or SIGTERM) and stop both. 1 if a UI process died."""
    from mlplatform_assets.cli import _prepare

    _prepare(config)  # the instance config (run queue, monitoring) and the MLflow store exist before the UIs open them
    ui = PlatformUI(config, host, dagster_port, mlflow_port)

    def on_term(signum, frame):  # noqa: ANN001, ARG001
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    print(f"starting the Dagster UI and the MLflow UI (logs in {ui.log_dir}) ...", file=out, flush=True)
    try:
        try:
            ui.start()
        except RuntimeError as exc:  # a process did not come up: its log tail says why
            print(f"error: {exc}", file=out, flush=True)
            return 1
        print(f"Dagster UI: {ui.dagster_url}\nMLflow UI:  {ui.mlflow_url}"
              f"{'' if ui.starts_mlflow else ' (the tracking server)'}\nCtrl-C stops both.", file=out, flush=True)
        while True:
            time.sleep(1)
            dead = ui.dead()
            if dead:
                print("a UI process exited:\n" + "\n".join(dead), file=out, flush=True)
                return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("stopping the UIs ...", file=out, flush=True)
        ui.stop()
        signal.signal(signal.SIGTERM, previous)
