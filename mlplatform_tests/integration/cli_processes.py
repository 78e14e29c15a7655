"""Real ``mlplatform`` CLI processes for the concurrency and crash tests.

:func:`start_together` starts several commands that first import everything and then wait for one start
signal, so they hit the platform's stores at the same instant (as two commands started at once do
after their imports) instead of being spread out by import time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_WAIT_THEN_RUN = """
import os, sys, time
from mlplatform_assets import cli
import dagster, mlflow, mlplatform_assets.definitions  # imported before the signal
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.002)
sys.exit(cli.main(sys.argv[3:]))
"""


def start_cli(args: list[str], log: Path) -> subprocess.Popen:
    """``mlplatform <args>`` in its own process (own session), output to ``log``."""
    with open(log, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "mlplatform_assets.cli", *args], cwd=REPO,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def start_together(commands: list[list[str]], workdir: Path, timeout_s: float = 240) -> list[subprocess.Popen]:
    """Start each command in its own process; release them all at once when every one is imported."""
    go = workdir / "go"
    procs = []
    for i, args in enumerate(commands):
        with open(workdir / f"cli-{i}.log", "wb") as fh:
            procs.append(subprocess.Popen(
                [sys.executable, "-c", _WAIT_THEN_RUN, str(workdir / f"ready-{i}"), str(go), *args], cwd=REPO,
                env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=fh, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout_s
    while not all((workdir / f"ready-{i}").exists() for i in range(len(commands))):
        failed = [p.args for p in procs if p.poll() is not None]
        assert not failed, f"exited before the start signal: {failed}\n{logs(workdir, len(commands))}"
        assert time.monotonic() < deadline, "the CLI processes did not get ready"
        time.sleep(0.05)
    go.touch()
    return procs


def logs(workdir: Path, n: int) -> str:
    return "\n".join(f"--- cli-{i}.log\n{(workdir / f'cli-{i}.log').read_text(errors='replace')[-4000:]}"
                     for i in range(n))
