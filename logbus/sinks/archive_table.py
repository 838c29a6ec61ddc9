"""The archive table: its columns, its schema and a record's row, in SQLite and PostgreSQL.

The ``sqlite`` and ``postgres`` sinks write this table and :mod:`logbus.archive`
reads it, so both take its shape from here (the columns are drawn in
:mod:`logbus.archive`'s docstring).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from logbus.errors import ConfigError
from logbus.record import LogRecord

__all__ = [
    "COLUMNS",
    "DEFAULT_TABLE",
    "Dialect",
    "postgres_row",
    "postgres_schema",
    "quote_pg",
    "sqlite_row",
    "sqlite_schema",
    "ts_text",
    "validate_table",
]

DEFAULT_TABLE = "logs"
COLUMNS = ("id", "ts", "facility", "severity", "host", "app", "pid", "message", "fields", "v")
_INDEXED = ("ts", "facility", "severity", "host")
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_SQLITE_TABLE = re.compile(_NAME)
_POSTGRES_TABLE = re.compile(rf"(?:{_NAME}\.)?{_NAME}")
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
    quoted = quote_pg(table)
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


def quote_pg(table: str) -> str:
    return ".".join(f'"{part}"' for part in table.split("."))


def sqlite_row(record: LogRecord) -> tuple[Any, ...]:
    """The record as a row of the SQLite table, in :data:`COLUMNS` order (ts as text)."""
    return _row(record, ts_text(record.ts))


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


def ts_text(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"
