"""Starting, watching and stopping server processes on 127.0.0.1 (the stack and the integration tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

from mlplatform_assets.lib.serving.server import free_port  # noqa: F401 - the stack's processes use it too


def stop_process_group(proc: subprocess.Popen, term_timeout: float = 15.0) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it spawned (code server,
    run workers): TERM the process group, wait, then KILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=term_timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def wait_for_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200. Fails early if ``proc`` has exited."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - a 127.0.0.1 URL we started
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s (last: {last})")


def wait_for_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port`` (for servers without HTTP)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with code {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s") from None
            time.sleep(0.25)


class Service:
    """One server process with its command, environment and log file; stoppable and restartable.

    Output goes to ``log_path`` (appended across restarts), never to a pipe: nobody reads a pipe of a
    long-running server, and once it is full the server blocks on its next write.
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 cwd: str | Path | None = None, ready_url: str | None = None, ready_port: int | None = None,
                 start_timeout: float = 120.0):
        self.name, self.argv, self.env, self.log_path = name, list(argv), dict(env), Path(log_path)
        self.cwd, self.ready_url, self.ready_port, self.start_timeout = cwd, ready_url, ready_port, start_timeout
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> "Service":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- {time.strftime('%H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            # Its own process group: stop() reaches the children it spawns (run workers, gunicorn/uvicorn workers).
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        try:
            if self.ready_url:
                wait_for_http(self.ready_url, self.start_timeout, self.proc)
            elif self.ready_port:
                wait_for_port(self.ready_port, self.start_timeout, self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log_tail()}") from None

    def stop(self, term_timeout: float = 15.0) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, term_timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} ({self.log_path}):\n{text[-n:]}"


def child_processes(pid: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the direct children of ``pid`` (Linux ``/proc``)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                children.append((int(stat.parent.name), cmdline.strip()))
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
    return children
