"""infra/healthcheck.py, the image's HEALTHCHECK: it finds the container's role from its command line and
probes the real endpoint of that role (servers on 127.0.0.1)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from mlplatform_tests.conftest import free_port
from mlplatform_tests.infra import chart

SCRIPT = chart.REPO / "infra" / "healthcheck.py"
_spec = importlib.util.spec_from_file_location("mlplatform_image_healthcheck", SCRIPT)
healthcheck = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(healthcheck)

# Command lines as PID 1 sees them: console scripts run through their interpreter (shebang).
SERVE = ["/usr/local/bin/python3.11", "/usr/local/bin/mlplatform", "serve", "--model", "m", "--host", "0.0.0.0"]
MLFLOW = ["/usr/local/bin/python3.11", "/usr/local/bin/mlflow", "server", "--host=0.0.0.0"]
GRPC = ["/usr/local/bin/python3.11", "/usr/local/bin/dagster", "api", "grpc", "--module-name", "x", "--host", "0.0.0.0"]


def test_role_and_port_come_from_the_command_line():
    assert healthcheck.probe_for(SERVE) == ("http", 8080, "/healthz")
    assert healthcheck.probe_for([*SERVE, "--port", "9001"]) == ("http", 9001, "/healthz")
    assert healthcheck.probe_for(MLFLOW) == ("http", 5000, "/health")
    assert healthcheck.probe_for([*MLFLOW, "--port=5001"]) == ("http", 5001, "/health")
    assert healthcheck.probe_for([*GRPC, "--port", "3030"]) == ("tcp", 3030, "")
    assert healthcheck.probe_for([*GRPC, "-p", "4000"]) == ("tcp", 4000, "")
    # Behind an init process (docker run --init) the role is still found.
    assert healthcheck.probe_for(["/sbin/docker-init", "--", "mlplatform", "serve", "--model", "m"])[0] == "http"
    assert healthcheck.probe_for(["python", "-c", "print(1)"]) is None
    assert healthcheck.check(["sleep", "infinity"]) is True  # nothing to probe


def test_the_image_default_command_is_probed_on_its_grpc_port():
    dockerfile = (chart.REPO / "infra" / "Dockerfile").read_text()
    cmd = yaml.safe_load(next(line[4:] for line in dockerfile.splitlines() if line.startswith("CMD ")))
    assert healthcheck.probe_for(cmd) == ("tcp", int(cmd[cmd.index("--port") + 1]), "")


@pytest.mark.slow  # the app starts and stops its registry poller (~15 s here)
def test_serving_probe_against_the_real_serving_app(platform_env):
    from mlplatform_assets.lib.serving import ThreadedServer, create_app

    # With API keys, as deployed: the probe (like the kubelet's) sends none and must still get through.
    app = create_app("no_such_model", platform_env, api_keys=["healthcheck-test-key"], prediction_log=False,
                     drain_timeout_s=1)
    server = ThreadedServer(app).start()
    try:
        assert healthcheck.check([*SERVE, "--port", str(server.port)]) is True  # live without a model
    finally:
        server.stop()
    assert healthcheck.check([*SERVE, "--port", str(server.port)]) is False  # stopped


class _Recorder(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.hosts.append(self.headers["Host"])
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_mlflow_probe_sends_a_host_the_deployment_allows():
    from mlflow.server.security_utils import is_allowed_host_header

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert healthcheck.check([*MLFLOW, f"--port={port}"]) is True
    finally:
        server.shutdown()
        server.server_close()
    [mlflow] = [o for o in yaml.safe_load_all((chart.REPO / "infra" / "k8s" / "mlflow.yaml").read_text())
                if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in mlflow["spec"]["template"]["spec"]["containers"][0]["env"]}
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert _Recorder.hosts and all(is_allowed_host_header(allowed, h) for h in _Recorder.hosts), _Recorder.hosts


def test_grpc_probe_needs_a_listening_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert healthcheck.check([*GRPC, "--port", str(port)]) is True
    assert healthcheck.check([*GRPC, "--port", str(port)]) is False


@pytest.mark.parametrize("flags", [["-I", "-S"]])
def test_script_runs_on_the_bare_standard_library(flags):
    """-I -S: no site-packages, no environment: the HEALTHCHECK cannot depend on anything pip installed."""
    result = subprocess.run([sys.executable, *flags, str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
