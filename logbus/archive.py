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
import re
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote

from logbus.durations import UNITS
from logbus.errors import ArchiveUnavailable, ConfigError, InputError
from logbus.record import LogRecord, Severity

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "COLUMNS",
    "DEFAULT_TABLE",
    "Archive",
    "Query",
    "connect_postgres",
    "open_archive",
    "parse_time",
    "postgres_schema",
    "public_postgres_url",
    "search",
    "sqlite_row",
    "sqlite_schema",
    "validate_table",
]

DEFAULT_TABLE = "logs"
COLUMNS = ("id", "ts", "facility", "severity", "host", "app", "pid", "message", "fields", "v")
_INDEXED = ("ts", "facility", "severity", "host")
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_SQLITE_TABLE = re.compile(_NAME)
_POSTGRES_TABLE = re.compile(rf"(?:{_NAME}\.)?{_NAME}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_SELECT = ", ".join(COLUMNS)
# A time "ago" also takes weeks, which retry delays and windows have no use for.
_AGO_UNITS = {**UNITS, "w": 7 * UNITS["d"]}

Dialect = Literal["sqlite", "postgres"]


def validate_table(name: str, dialect: Dialect) -> str:
    """``name`` if it is a plain SQL identifier (PostgreSQL: optionally ``schema.table``)."""
    pattern = _POSTGRES_TABLE if dialect == "postgres" else _SQLITE_TABLE
    if not isinstance(name, str) or not pattern.fullmatch(name):
        shape = "[schema.]name" if dialect == "postgres" else "name"
        raise ConfigError(
            f"table {name!r} is not a {shape} of letters, digits and '_' "
            "(not starting with a digit)"
        )
    return name


def _index_base(table: str) -> str:
    return table.rpartition(".")[2]


def sqlite_schema(table: str) -> list[str]:
    """The statements that create the archive table and its indexes in SQLite (idempotent)."""
    statements = [
        f'CREATE TABLE IF NOT EXISTS "{table}" (id TEXT PRIMARY KEY, ts TEXT NOT NULL, '
        "facility TEXT NOT NULL, severity INTEGER NOT NULL, host TEXT NOT NULL, "
        "app TEXT NOT NULL, pid INTEGER, message TEXT NOT NULL, "
        "fields TEXT NOT NULL DEFAULT '{}', v INTEGER NOT NULL)"
    ]
    statements += [
        f'CREATE INDEX IF NOT EXISTS "{table}_{column}_idx" ON "{table}" ({column})'
        for column in _INDEXED
    ]
    return statements


def postgres_schema(table: str) -> list[str]:
    """The statements that create the archive table and its indexes in PostgreSQL (idempotent)."""
    quoted = _quote_pg(table)
    statements = [
        f"CREATE TABLE IF NOT EXISTS {quoted} (id text PRIMARY KEY, ts timestamptz NOT NULL, "
        "facility text NOT NULL, severity smallint NOT NULL, host text NOT NULL, "
        "app text NOT NULL, pid bigint, message text NOT NULL, "
        "fields jsonb NOT NULL DEFAULT '{}', v integer NOT NULL)"
    ]
    base = _index_base(table)
    statements += [
        f'CREATE INDEX IF NOT EXISTS "{base}_{column}_idx" ON {quoted} ({column})'
        for column in _INDEXED
    ]
    return statements


def _quote_pg(table: str) -> str:
    return ".".join(f'"{part}"' for part in table.split("."))


def sqlite_row(record: LogRecord) -> tuple[Any, ...]:
    """The record as a row of the SQLite table, in :data:`COLUMNS` order (ts as text)."""
    return _row(record, _ts_text(record.ts))


def postgres_row(record: LogRecord) -> tuple[Any, ...]:
    """The record as a row of the PostgreSQL table, in :data:`COLUMNS` order (ts as is)."""
    return _row(record, record.ts)


def _row(record: LogRecord, ts: object) -> tuple[Any, ...]:
    return (
        record.id,
        ts,
        record.facility,
        int(record.severity),
        record.host,
        record.app,
        record.pid,
        record.message,
        _encode_fields(record.fields) if record.fields else "{}",
        record.v,
    )


# Built once: json.dumps with options makes a new encoder on every call.
_encode_fields = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _ts_text(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


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
                f"since ({_ts_text(self.since)}) is not before until ({_ts_text(self.until)})"
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
                params.append(_ts_text(when) if dialect == "sqlite" else when)
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
        name = f'"{table}"' if dialect == "sqlite" else _quote_pg(table)
        text = f"SELECT {_SELECT} FROM {name}{where} ORDER BY ts {order}, id {order}"
        if self.limit is not None:
            text += f" LIMIT {int(self.limit)}"
        return text, params


def parse_time(text: str, *, now: datetime | None = None, option: str = "time") -> datetime:
    """An RFC 3339 time (UTC when it has no offset) or a duration ago: ``90s``, ``15m``, ``2h``,
    ``1d``, ``1w``. Anything else raises :class:`InputError` naming ``option``."""
    value = text.strip()
    match = _DURATION.fullmatch(value.lower())
    if match is not None:
        seconds = float(match[1]) * _AGO_UNITS[match[2]]
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:
            raise InputError(f"{option} {text!r} reaches before year 1") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option} {text!r} is neither an RFC 3339 time (2025-01-02T03:04:05Z) nor a "
            "duration ago (90s, 15m, 2h, 1d, 1w)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


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
        row = self._db.execute("SELECT to_regclass(%s)", (_quote_pg(self.table),)).fetchone()
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
                f"reading PostgreSQL at {public_postgres_url(self.url)} failed: {_first_line(exc)}"
            ) from exc
        return [_from_row(row) for row in rows]

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


def open_archive(spec: str) -> Archive:
    """The archive that ``spec`` names: ``sqlite:PATH`` or ``postgres:URL`` (with options such as
    ``?table=NAME``, as for the sink), or a bare ``postgresql://`` URL."""
    from logbus.sinks import load_sink
    from logbus.sinks.postgres import PostgresSink
    from logbus.sinks.sqlite import SqliteSink

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


def import_psycopg() -> Any:
    """The psycopg module, or a ConfigError saying how to install it."""
    try:
        import psycopg
    except ImportError:
        raise ConfigError("PostgreSQL needs psycopg 3: pip install 'logbus[postgres]'") from None
    return psycopg


def connect_postgres(url: str, *, timeout: float) -> psycopg.Connection[Any]:
    """An autocommit connection to ``url``; one that fails is :class:`ArchiveUnavailable`."""
    pg = import_psycopg()
    try:
        connection: psycopg.Connection[Any] = pg.connect(
            url, connect_timeout=max(2, round(timeout)), autocommit=True
        )
    except pg.ProgrammingError as exc:  # libpq could not parse the URL
        raise ConfigError(
            f"PostgreSQL URL {public_postgres_url(url)} is not valid: {_first_line(exc)}"
        ) from None
    except pg.OperationalError as exc:
        raise ArchiveUnavailable(
            f"cannot reach PostgreSQL at {public_postgres_url(url)}: {_first_line(exc)}"
        ) from exc
    return connection


def public_postgres_url(url: str) -> str:
    """``url`` fit to print: no password, and no query (it may hold ``password=``)."""
    from logbus.settings import redact_url

    return redact_url(url.partition("?")[0])


def _first_line(exc: BaseException) -> str:
    lines: Iterator[str] = (line.strip() for line in str(exc).splitlines())
    return next((line for line in lines if line), type(exc).__name__)
