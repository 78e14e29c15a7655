"""A throwaway PostgreSQL server (initdb + pg_ctl) on 127.0.0.1, for the local stack and the tests.

Runs as the ``postgres`` OS user when the caller is root (initdb refuses root). Tuned for throwaway
data (no fsync); authentication is scram-sha-256 with a random password, so clients connect the way
they do in production (user + password over TCP).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from .processes import free_port

SUPERUSER = "mlplatform"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


@dataclass
class PgServer:
    """Where a PostgreSQL server listens and how to log in."""

    host: str
    port: int
    user: str
    password: str
    admin_db: str = "postgres"

    def dsn(self, db: str | None = None, scheme: str = "postgresql+psycopg2") -> str:
        """A SQLAlchemy URL (``postgresql+psycopg2://user:pass@host:port/db``). The driver is explicit because
        SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; pass ``scheme="postgresql"`` for a libpq URI."""
        return f"{scheme}://{quote(self.user)}:{quote(self.password)}@{self.host}:{self.port}/{db or self.admin_db}"

    def connect(self, db: str | None = None):  # noqa: ANN201 - psycopg2 connection
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=db or self.admin_db, connect_timeout=10)

    def execute_admin(self, sql: str) -> None:
        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        self.execute_admin(f'CREATE DATABASE "{name}"')
        return name


def _pg_bin_dirs() -> list[str]:
    """Debian/Ubuntu install server binaries outside PATH, one directory per major version (newest first)."""
    def major(d: str) -> int:
        v = d.split("/")[-2]
        return int(v) if v.isdigit() else 0

    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True)


def pg_bin(name: str) -> str | None:
    for d in _pg_bin_dirs():
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name)


class ThrowawayPostgres:
    """initdb a data directory under ``base`` and run a server on a free port; ``stop``/``start`` keep the
    port and the data (a restart, as an operator or a failover would do one)."""

    def __init__(self, base: str | Path):
        self.initdb, self.pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise PostgresUnavailable("PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql "
                                      "(Debian/Ubuntu: apt-get install postgresql)")
        self.base = Path(base)
        self.data, self.sock, self.log = self.base / "data", self.base / "sock", self.base / "postgres.log"
        self.port = free_port()
        self.server = PgServer("127.0.0.1", self.port, SUPERUSER, uuid.uuid4().hex)
        self._as_user: list[str] = []

    def _run(self, *cmd: str) -> None:
        res = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{tail}")

    def init(self) -> "ThrowawayPostgres":
        self.base.mkdir(parents=True, exist_ok=True)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.server.password + "\n")
        pwfile.chmod(0o600)
        if os.geteuid() == 0:
            # initdb refuses to run as root: hand the directory to the postgres OS user, run through runuser.
            import pwd

            pw = pwd.getpwnam("postgres")
            for path in (self.base, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        try:
            self._run("mkdir", "-p", str(self.sock))
            self._run(self.initdb, "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth=scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C")
        finally:
            pwfile.unlink(missing_ok=True)  # the password lives on only in this process's memory
        return self

    def start(self) -> "ThrowawayPostgres":
        opts = (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast`` disconnects clients and shuts down cleanly; ``immediate`` is a crash (recovery on start)."""
        subprocess.run([*self._as_user, self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=60)


def start_throwaway_postgres(base: str | Path) -> tuple[PgServer, ThrowawayPostgres]:
    """initdb + start a server under ``base``; returns its connection info and the handle to stop it."""
    pg = ThrowawayPostgres(base).init().start()
    return pg.server, pg
