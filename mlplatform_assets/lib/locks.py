"""Inter-process locks and process identity, for coordinating runs that share one platform.

Two lock kinds with one interface (``try_acquire`` / ``release``):

- :class:`FileLock`: ``flock`` on a file. Serialises processes on one host (SQLite homes). The kernel
  drops the lock when its holder dies, however it dies (``kill -9`` included): no stale locks.
- :class:`PgAdvisoryLock`: a session-level ``pg_advisory_lock`` on a PostgreSQL database. Serialises
  processes on any number of hosts that share the database. The server drops the lock when the
  holder's session ends (process killed, connection lost): no stale locks either.

:func:`process_identity` / :func:`process_alive` record and check "the process that did this", so a
run whose process was killed can be told apart from one that is still running on the same host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol


class InterProcessLock(Protocol):
    description: str

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


class FileLock:
    """An exclusive ``flock`` on ``path`` (created with its directory when missing)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.description = f"file lock {self.path}"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            raise RuntimeError(f"{self.description} is already held by this object")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` (the same name gives the same key on every host)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class PgAdvisoryLock:
    """A session-level advisory lock named ``name`` on the database of ``sqlalchemy_url``.

    The connection is opened on acquire and closed on release; holding the lock holds one connection.
    """

    def __init__(self, sqlalchemy_url: str, name: str):
        self._url = sqlalchemy_url
        self.key = advisory_key(name)
        self.description = f"PostgreSQL advisory lock {name!r} (key {self.key})"
        self._conn: Any = None
        self._engine: Any = None

    def try_acquire(self) -> bool:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        if self._conn is not None:
            raise RuntimeError(f"{self.description} is already held by this object")
        if self._engine is None:
            self._engine = sa.create_engine(self._url, poolclass=NullPool)
        conn = self._engine.connect()
        try:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        import sqlalchemy as sa

        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            conn.commit()
        finally:
            conn.close()  # closing the session releases the lock even if the unlock failed


@contextlib.contextmanager
def holding(lock: InterProcessLock, on_wait: Callable[[float], None] | None = None, poll_s: float = 0.5,
            report_every_s: float = 60.0) -> Iterator[None]:
    """Hold ``lock`` for the block, waiting for it as long as it takes.

    ``on_wait(waited_s)`` is called when the lock is first found busy and then every ``report_every_s``
    while waiting, so a waiting process can say what it waits for.
    """
    started = time.monotonic()
    next_report = 0.0
    while not lock.try_acquire():
        waited = time.monotonic() - started
        if on_wait is not None and waited >= next_report:
            on_wait(waited)
            next_report = waited + report_every_s
        time.sleep(poll_s)
    try:
        yield
    finally:
        lock.release()


# --- which process did this, and is it still there ---------------------------------------------

def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (Linux): state, ..., start time in clock ticks since boot (index 19)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may contain spaces.
    return stat.rsplit(")", 1)[1].split()


def _start_ticks(pid: int) -> str | None:
    """The process's start time, which tells a reused pid apart."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def process_identity() -> dict[str, str]:
    """This process: host name, pid and (on Linux) start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "start": _start_ticks(pid) or ""}


def process_alive(host: str, pid: str, start: str = "") -> bool | None:
    """Whether the process recorded by :func:`process_identity` still runs: True/False on this host,
    None (unknown) for a process on another host."""
    if host != socket.gethostname():
        return None
    try:
        number = int(pid)
    except ValueError:
        return None
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _proc_stat(number)
    if fields is not None:
        if fields[0] in ("Z", "X"):
            return False  # killed, not yet reaped by its parent
        if start and fields[19] != start:
            return False  # the pid was reused by another process
    return True
