"""The log archive: one table of records in SQLite or PostgreSQL, written by sinks, searched here.

The ``sqlite`` and ``postgres`` sinks store records in a table (``logs`` unless
the sink's ``table`` option says otherwise) with the same columns in both::

    id        text primary key   the record's id: a record stored twice is one row
    ts        timestamptz (PostgreSQL) / text, RFC 3339 UTC with microseconds (SQLite,
              fixed width, so that text order is time order)
    facility  text
    severity  smallint           the code: 0 emergency ... 7 debug
    host      text
    app       text
    pid       bigint, null
    message   text
    fields    jsonb (PostgreSQL) / text holding a JSON object (SQLite)
    v         integer            the record's schema version

with an index on each of ``ts``, ``facility``, ``severity`` and ``host``.

:func:`search` (what ``logbus query`` calls) takes an archive spec, the same
text that names the sink (``sqlite:/var/lib/logbus/archive.db``,
``postgres:postgresql://db1/logs?table=records``), and a :class:`Query`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from logbus.durations import parse_time
from logbus.errors import ArchiveUnavailable, ConfigError, InputError
from logbus.record import LogRecord, Severity
from logbus.sinks.archive_table import (
    COLUMNS,
    DEFAULT_TABLE,
    Dialect,
    quote_pg,
    ts_text,
    validate_table,
)
from logbus.sinks.postgres import (
    PostgresSink,
    connect_postgres,
    first_line,
    import_psycopg,
    public_postgres_url,
)
from logbus.sinks.sqlite import SqliteSink

if TYPE_CHECKING:
    pass

__all__ = ["Archive", "Query", "open_archive", "parse_time", "search"]

_SELECT = ", ".join(COLUMNS)


def _from_row(row: Sequence[Any]) -> LogRecord:
    data = dict(zip(COLUMNS, row, strict=True))
    if isinstance(data["fields"], str):
        data["fields"] = json.loads(data["fields"])
    return LogRecord(**data)


@dataclass(frozen=True)
class Query:
    """What to find: every condition given must hold; empty tuples and None match anything.

    ``severities`` are exact; ``min_severity`` keeps that severity and worse.
    ``grep`` is a case-sensitive substring of the message. ``limit`` None is no
    limit. Newest first, or oldest first with ``oldest_first`` (the limit then
    keeps the oldest).
    """

    since: datetime | None = None
    until: datetime | None = None
    facilities: tuple[str, ...] = ()
    severities: tuple[Severity, ...] = ()
    min_severity: Severity | None = None
    hosts: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()
    grep: str | None = None
    limit: int | None = 100
    oldest_first: bool = False

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InputError(
                f"since ({ts_text(self.since)}) is not before until ({ts_text(self.until)})"
            )
        if self.limit is not None and self.limit < 1:
            raise InputError(f"limit must be 1 or more (got {self.limit}); None is no limit")

    def sql(self, table: str, dialect: Dialect) -> tuple[str, list[Any]]:
        """The SELECT statement for this query on ``table`` and its parameters."""
        mark = "?" if dialect == "sqlite" else "%s"
        conditions: list[str] = []
        params: list[Any] = []

        def some(column: str, values: Sequence[Any]) -> None:
            if values:
                conditions.append(f"{column} IN ({', '.join([mark] * len(values))})")
                params.extend(values)

        for op, when in ((">=", self.since), ("<", self.until)):
            if when is not None:
                conditions.append(f"ts {op} {mark}")
                params.append(ts_text(when) if dialect == "sqlite" else when)
        some("facility", self.facilities)
        some("severity", [int(s) for s in self.severities])
        if self.min_severity is not None:
            conditions.append(f"severity <= {mark}")
            params.append(int(self.min_severity))
        some("host", self.hosts)
        some("app", self.apps)
        if self.grep is not None:
            find = "instr" if dialect == "sqlite" else "strpos"
            conditions.append(f"{find}(message, {mark}) > 0")
            params.append(self.grep)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        order = "ASC" if self.oldest_first else "DESC"
        name = f'"{table}"' if dialect == "sqlite" else quote_pg(table)
        text = f"SELECT {_SELECT} FROM {name}{where} ORDER BY ts {order}, id {order}"
        if self.limit is not None:
            text += f" LIMIT {int(self.limit)}"
        return text, params


class Archive(Protocol):
    """An opened archive that can be searched."""

    def search(self, query: Query) -> list[LogRecord]:
        """The records that match ``query``, in its order."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class SqliteArchive:
    """Reads an archive that the ``sqlite`` sink writes; opened read-only."""

    def __init__(self, path: str | Path, table: str = DEFAULT_TABLE) -> None:
        self.path = Path(path).expanduser()
        self.table = validate_table(table, "sqlite")
        uri = f"file:{quote(str(self.path))}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, timeout=30.0)
            found = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (self.table,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise ArchiveUnavailable(
                f"cannot open the sqlite archive {str(self.path)!r}: {exc}"
            ) from exc
        if found is None:
            self._db.close()
            raise ConfigError(
                f"the sqlite archive {str(self.path)!r} has no table {self.table!r} "
                "(check the path and the table option, or let a sqlite sink write to it first)"
            )

    def search(self, query: Query) -> list[LogRecord]:
        """The matching records (see :class:`Query`)."""
        text, params = query.sql(self.table, "sqlite")
        try:
            rows = self._db.execute(text, params).fetchall()
        except sqlite3.Error as exc:
            raise ArchiveUnavailable(f"reading {str(self.path)!r} failed: {exc}") from exc
        return [_from_row(row) for row in rows]

    def close(self) -> None:
        """Close the database."""
        self._db.close()


class PostgresArchive:
    """Reads an archive that the ``postgres`` sink writes."""

    def __init__(self, url: str, table: str = DEFAULT_TABLE, *, timeout: float = 10.0) -> None:
        self.url = url
        self.table = validate_table(table, "postgres")
        self._db = connect_postgres(url, timeout=timeout)
        row = self._db.execute("SELECT to_regclass(%s)", (quote_pg(self.table),)).fetchone()
        if row is None or row[0] is None:
            self._db.close()
            raise ConfigError(
                f"PostgreSQL at {public_postgres_url(url)} has no table {self.table!r} "
                "(check the URL and the table option, or let a postgres sink write to it first)"
            )

    def search(self, query: Query) -> list[LogRecord]:
        """The matching records (see :class:`Query`)."""
        psycopg = import_psycopg()
        text, params = query.sql(self.table, "postgres")
        try:
            rows = self._db.execute(text, params).fetchall()
        except psycopg.OperationalError as exc:
            raise ArchiveUnavailable(
                f"reading PostgreSQL at {public_postgres_url(self.url)} failed: {first_line(exc)}"
            ) from exc
        return [_from_row(row) for row in rows]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def open_archive(spec: str) -> Archive:
    """The archive that ``spec`` names: ``sqlite:PATH`` or ``postgres:URL`` (with options such as
    ``?table=NAME``, as for the sink), or a bare ``postgresql://`` URL."""
    from logbus.sinks import load_sink

    text = spec.strip()
    if text.startswith(("postgresql://", "postgres://")):
        text = "postgres:" + text
    if not text.startswith(("sqlite:", "postgres:")):
        raise ConfigError(
            f"archive {public_postgres_url(text)!r} is not sqlite:PATH or postgres:URL "
            "(e.g. sqlite:/var/lib/logbus/archive.db, postgres:postgresql://db1/logs)"
        )
    sink = load_sink(text)
    if isinstance(sink, SqliteSink):
        return SqliteArchive(sink.path, sink.table)
    if isinstance(sink, PostgresSink):
        return PostgresArchive(sink.url, sink.table, timeout=sink.connect_timeout)
    raise ConfigError(f"archive {text!r} is not sqlite:PATH or postgres:URL")


def search(spec: str, query: Query) -> list[LogRecord]:
    """Open the archive ``spec`` names, run ``query`` and close it again."""
    archive = open_archive(spec)
    try:
        return archive.search(query)
    finally:
        archive.close()
