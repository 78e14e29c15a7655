"""SQL implementation of the Source port: a table or a query, read one day at a time through SQLAlchemy.

The day bounds are always bound parameters (``:start`` inclusive, ``:end`` exclusive), never formatted into
SQL. The database URL may hold a password: it is only handed to SQLAlchemy; everything recorded or raised
uses :func:`mask_url` (dialect, host and database only).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from mlplatform_assets.lib.data.datasource import (
    DayData,
    Fingerprints,
    SourceError,
    frame_fingerprint,
)
from mlplatform_assets.lib.spec import ModelSpec

# Upper bound of "every day" for listing: far enough in the future, and a valid timestamp in every dialect.
_END_OF_TIME = dt.datetime(9999, 1, 1)


def mask_url(url: str) -> str:
    """``dialect+driver://***@host:port/database``: no user name, no password, no query options."""
    u = make_url(url)
    where = (u.host or "") + (f":{u.port}" if u.port else "")
    who = "***@" if (u.username or u.password) else ""
    return f"{u.drivername}://{who}{where}/{u.database or ''}"


def _bounds(day: dt.date) -> dict[str, dt.datetime]:
    start = dt.datetime.combine(day, dt.time())
    return {"start": start, "end": start + dt.timedelta(days=1)}


class SqlSource:
    """``source: {sql: {url, table}}`` or ``{sql: {url, query}}`` of a spec."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.sql = spec.source.sql
        self._engine: sa.Engine | None = None

    def label(self) -> str:
        what = f"table {self.sql.table}" if self.sql.table else "query"
        return f"sql {what} at {mask_url(self.sql.url)}"

    # -- statements ------------------------------------------------------------------------------

    def _table(self) -> sa.TableClause:
        schema, _, name = self.sql.table.rpartition(".")
        return sa.table(name, sa.column(self.spec.timestamp_column), schema=schema or None)

    def _day_rows(self) -> sa.TextClause | sa.Select:
        """One day's rows for the bound :start/:end."""
        if self.sql.query is not None:
            return sa.text(self.sql.query)
        tbl = self._table()
        ts = tbl.c[self.spec.timestamp_column]
        return (sa.select(sa.literal_column("*")).select_from(tbl)
                .where(ts >= sa.bindparam("start"), ts < sa.bindparam("end")).order_by(ts))

    def _day_stats(self) -> sa.Select:
        """Per day in [:start, :end): row count and latest timestamp, the cheap change marker."""
        if self.sql.query is not None:
            ts = sa.text(self.sql.query).columns(sa.column(self.spec.timestamp_column)).subquery("day_rows").c[0]
            bounded = None
        else:
            ts = self._table().c[self.spec.timestamp_column]
            bounded = (ts >= sa.bindparam("start"), ts < sa.bindparam("end"))
        day = sa.cast(ts, sa.Date)
        stats = sa.select(day.label("day"), sa.func.count().label("n"), sa.func.max(ts).label("latest"))
        if bounded is not None:
            stats = stats.where(*bounded)
        return stats.group_by(day).order_by(day)

    # -- execution -------------------------------------------------------------------------------

    def _connect(self) -> sa.Connection:
        if self._engine is None:
            # NullPool: the sensor and each run open one short-lived connection, never an idle pool.
            self._engine = sa.create_engine(self.sql.url, poolclass=sa.pool.NullPool)
        return self._engine.connect()

    def _fail(self, doing: str, exc: Exception) -> SourceError:
        # Driver messages can echo the DSN (and so the password): keep only the exception's first line and
        # mask anything that looks like the URL or its password.
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else ""
        u = make_url(self.sql.url)
        for secret in (self.sql.url, u.password):
            if secret:
                message = message.replace(str(secret), "***")
        return SourceError(f"{self.spec.name}: {doing} {self.label()} failed: {type(exc).__name__}: {message}")

    def _stats(self) -> list[tuple[dt.date, int, str]]:
        params = {"start": dt.datetime.combine(self.spec.partition_start, dt.time()), "end": _END_OF_TIME}
        try:
            with self._connect() as conn:
                result = conn.execute(self._day_stats(), params).all()
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("listing the days of", exc) from None
        out = []
        for day, n, latest in result:
            day = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
            out.append((day, int(n), str(latest)))
        return out

    # -- the port --------------------------------------------------------------------------------

    def available_days(self) -> list[dt.date]:
        return [day for day, n, _ in self._stats() if n > 0 and day >= self.spec.partition_start]

    def read_days(self, days: Iterable[dt.date]) -> list[DayData]:
        out = []
        statement = self._day_rows()
        try:
            with self._connect() as conn:
                for day in days:
                    frame = pd.read_sql(statement, conn, params=_bounds(day))
                    location = f"{self.label()} for {day.isoformat()}"
                    error = None if len(frame) else "no rows for this day"
                    out.append(DayData(day, frame, int(frame.memory_usage(deep=True, index=False).sum()),
                                       location, error))
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail("reading", exc) from None
        return out

    def fingerprints(self, previous: Fingerprints) -> Fingerprints:
        """Stat = row count and latest timestamp of the day; the rows are hashed only for days whose stat
        changed (a late-arriving row changes the count)."""
        out: Fingerprints = {}
        changed: dict[dt.date, str] = {}
        for day, n, latest in self._stats():
            if day < self.spec.partition_start or n == 0:
                continue
            stat = f"rows:{n}:max:{latest}"
            prev = previous.get(day.isoformat())
            if prev and prev.get("stat") == stat:
                out[day.isoformat()] = prev
            else:
                changed[day] = stat
        for day_data in self.read_days(sorted(changed)):
            out[day_data.day.isoformat()] = {"fp": frame_fingerprint(day_data.frame), "stat": changed[day_data.day]}
        return dict(sorted(out.items()))

