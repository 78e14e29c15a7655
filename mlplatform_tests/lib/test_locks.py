"""Inter-process locks: exclusive while held, free again when the holder releases it or is killed."""

import signal
import subprocess
import sys
import time

import pytest

from mlplatform_assets.lib.locks import (
    FileLock,
    PgAdvisoryLock,
    holding,
    process_alive,
    process_identity,
)

_HOLD = """
import sys, time
from mlplatform_assets.lib.locks import FileLock, PgAdvisoryLock
lock = FileLock(sys.argv[2]) if sys.argv[1] == "file" else PgAdvisoryLock(sys.argv[2], sys.argv[3])
assert lock.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold_in_other_process(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _exclusive_until_holder_killed(make_lock) -> None:  # noqa: ANN001
    first, second = make_lock(), make_lock()
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


def test_file_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    path = tmp_path / "locks" / "training-m.lock"
    _exclusive_until_holder_killed(lambda: FileLock(path))
    holder = _hold_in_other_process("file", str(path))
    lock = FileLock(path)
    assert not lock.try_acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    assert lock.try_acquire()  # no stale lock after kill -9
    lock.release()


def test_holding_reports_while_it_waits(tmp_path):
    path = tmp_path / "l.lock"
    holder = _hold_in_other_process("file", str(path))
    waits: list[float] = []
    try:
        def release_soon(waited: float) -> None:
            waits.append(waited)
            if len(waits) == 2:
                holder.send_signal(signal.SIGKILL)

        started = time.monotonic()
        with holding(FileLock(path), on_wait=release_soon, poll_s=0.05, report_every_s=0.3):
            assert len(waits) == 2 and waits[0] == pytest.approx(0, abs=0.2) and waits[1] >= 0.3
        assert time.monotonic() - started < 10
    finally:
        holder.kill()
        holder.wait(10)
    assert FileLock(path).try_acquire()  # released on leaving the block


def test_pg_advisory_lock_is_exclusive_across_sessions_and_dies_with_its_holder(postgres_server, postgres_db):
    url = postgres_server.dsn(postgres_db)
    _exclusive_until_holder_killed(lambda: PgAdvisoryLock(url, "mlplatform:training-m"))
    other = PgAdvisoryLock(url, "mlplatform:training-other")  # another name is another lock
    holder = _hold_in_other_process("pg", url, "mlplatform:training-m")
    lock = PgAdvisoryLock(url, "mlplatform:training-m")
    try:
        assert other.try_acquire()
        assert not lock.try_acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 20
        while not lock.try_acquire():  # the server ends the dead session's lock
            assert time.monotonic() < deadline, "the killed holder's advisory lock was never released"
            time.sleep(0.1)
        lock.release()
    finally:
        other.release()
        holder.kill()
        holder.wait(10)


def test_process_identity_tells_dead_and_reused_pids_apart():
    me = process_identity()
    assert process_alive(**me) is True
    assert process_alive(me["host"], me["pid"], "1") is False  # same pid, another process's start time
    assert process_alive("another-host", me["pid"], me["start"]) is None  # unknown: cannot look there
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert process_alive(me["host"], gone.stdout.strip()) is False
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert process_alive(me["host"], str(zombie.pid)) is False  # exited, not yet reaped
    zombie.wait()
