"""Docker HEALTHCHECK for the platform image, whichever role the container runs (standard library only).

The role is read from the container's main process (PID 1) command line:
  mlplatform serve ... [--port N]       GET http://127.0.0.1:N/healthz            (default port 8080)
  mlflow server ... [--port N]          GET http://127.0.0.1:N/health             (default port 5000)
  dagster api grpc ... --port N | -p N  TCP connect to 127.0.0.1:N (the gRPC code server accepts connections)
Anything else is reported healthy: there is nothing to probe.
Exit 0 healthy, 1 unhealthy (Docker's convention). Kubernetes ignores HEALTHCHECK and uses its own probes.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 4.0


def _option(argv: list[str], names: tuple[str, ...], default: int | None) -> int | None:
    """The value of ``--port N`` / ``--port=N`` (any of ``names``) in ``argv``, else ``default``."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return int(argv[i + 1])
            if arg.startswith(name + "="):
                return int(arg.split("=", 1)[1])
    return default


def probe_for(argv: list[str]) -> tuple[str, int, str] | None:
    """``(kind, port, path)`` to probe for a container started with ``argv``; None: nothing to probe."""
    words = [Path(a).name for a in argv[:4]]
    if "mlplatform" in words and "serve" in words:
        return "http", _option(argv, ("--port",), 8080), "/healthz"
    if "mlflow" in words and "server" in words:
        return "http", _option(argv, ("--port", "-p"), 5000), "/health"
    if "dagster" in words and "grpc" in words:
        port = _option(argv, ("--port", "-p"), None)
        return ("tcp", port, "") if port else None
    return None


def check(argv: list[str], host: str = "127.0.0.1") -> bool:
    probe = probe_for(argv)
    if probe is None:
        return True
    kind, port, path = probe
    if kind == "tcp":
        try:
            with socket.create_connection((host, port), timeout=TIMEOUT_S):
                return True
        except OSError:
            return False
    # MLflow rejects unknown Host headers (DNS-rebinding protection); "localhost:<port>" is the one its
    # deployment allows for probes.
    request = urllib.request.Request(f"http://{host}:{port}{path}", headers={"Host": f"localhost:{port}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main_process_argv() -> list[str]:
    raw = Path("/proc/1/cmdline").read_bytes()
    return [part.decode() for part in raw.split(b"\0") if part]


if __name__ == "__main__":
    sys.exit(0 if check(main_process_argv()) else 1)
