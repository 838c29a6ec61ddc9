"""``postgres:URL``: the archive (see :mod:`logbus.archive`) in PostgreSQL, through psycopg 3.

``URL`` is a libpq URL, ``postgresql://user@host:5432/dbname``; its own query
keys (``sslmode=require``) stay in it. Options (in that query string, or keys
of a ``[sink]`` table, where the URL is ``url``):

``table``
    The table's name, ``name`` or ``schema.name`` (``logs``); created if missing.
``pool_size``
    Connections at most, shared by the worker's threads (4).
``connect_timeout``
    Seconds to wait for a connection (10).
``max_batch`` / ``max_wait``
    The batch hints (500 records; 0.05 s).

A batch is one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT (id) DO
NOTHING``: one round trip, atomic, and a record already stored (a redelivery)
counts as stored. When PostgreSQL rejects the data of a batch, its records are
inserted one by one, so that only the ones it rejects fail, and those are not
retried. A database that cannot be reached, or that fails for any other
reason, fails the batch recoverably: the worker tries again later.

Needs psycopg: ``pip install 'logbus[postgres]'``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from logbus.errors import ArchiveUnavailable, ConfigError, LogbusError, SinkError
from logbus.record import LogRecord
from logbus.sinks._options import ConfigurableSink, SinkOptions
from logbus.sinks.archive_table import (
    COLUMNS,
    DEFAULT_TABLE,
    postgres_row,
    postgres_schema,
    validate_table,
)

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "PostgresOptions",
    "PostgresSink",
    "connect_postgres",
    "first_line",
    "import_psycopg",
    "public_postgres_url",
]

_TYPES = (
    "text[]",
    "timestamptz[]",
    "text[]",
    "smallint[]",
    "text[]",
    "text[]",
    "bigint[]",
    "text[]",
    "jsonb[]",
    "integer[]",
)


class PostgresOptions(SinkOptions):
    """What ``postgres`` takes: the URL, the table, the pool and connect timeout."""

    url: str
    table: str = DEFAULT_TABLE
    pool_size: int = Field(default=4, ge=1, le=100)
    connect_timeout: float = Field(default=10.0, gt=0.0, le=300.0)
    max_batch: int = Field(default=500, ge=1, le=100_000)
    max_wait: float = Field(default=0.05, ge=0.0, le=60.0)

    @field_validator("url")
    @classmethod
    def _libpq_url(cls, value: str) -> str:
        psycopg = import_psycopg()
        try:
            psycopg.conninfo.conninfo_to_dict(value)
        except psycopg.ProgrammingError as exc:
            # A ValueError makes pydantic report it as this option's problem.
            raise ValueError(f"not a PostgreSQL URL: {str(exc).strip()}") from None
        return value


class PostgresSink(ConfigurableSink):
    """Stores records in a PostgreSQL table with one statement per batch, de-duplicated by id."""

    name = "postgres"
    Options = PostgresOptions
    argument = "url"
    url_argument = True
    example = "postgres:postgresql://HOST/DBNAME"

    def __init__(
        self,
        url: str,
        *,
        table: str = DEFAULT_TABLE,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        max_batch: int = 500,
        max_wait: float = 0.05,
    ) -> None:
        self.url = url
        self.table = validate_table(table, "postgres")
        self.connect_timeout = connect_timeout
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._opened = False
        quoted = ".".join(f'"{part}"' for part in self.table.split("."))
        arrays = ", ".join(f"%s::{kind}" for kind in _TYPES)
        self._insert = (
            f"INSERT INTO {quoted} ({', '.join(COLUMNS)}) SELECT * FROM unnest({arrays}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self._insert_one = (
            f"INSERT INTO {quoted} ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(f'%s::{kind[:-2]}' for kind in _TYPES)}) "
            "ON CONFLICT (id) DO NOTHING"
        )

    def open(self) -> None:
        """Connect once and create the table and its indexes if they are missing.

        A database that does not answer raises
        :class:`~logbus.errors.ArchiveUnavailable` (recoverable, exit status 69).
        """
        psycopg = import_psycopg()
        connection = self._take()
        healthy = False
        try:
            # Workers starting together must not race to create the same table.
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                for statement in postgres_schema(self.table):
                    connection.execute(statement)
            healthy = True
        except psycopg.OperationalError as exc:
            raise ArchiveUnavailable(
                f"sink postgres lost {public_postgres_url(self.url)} while creating its table: "
                f"{str(exc).strip()}"
            ) from exc
        except psycopg.Error as exc:
            raise ConfigError(
                f"sink postgres cannot create table {self.table!r} at "
                f"{public_postgres_url(self.url)}: {str(exc).strip()}"
            ) from exc
        finally:
            self._give(connection, healthy)
        self._opened = True

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Insert the batch in one statement; see the module docstring for failures."""
        if not self._opened:
            raise ConfigError(f"sink postgres {self!r} was written to before open()")
        if not batch:
            return []
        psycopg = import_psycopg()
        try:
            connection = self._take()
        except LogbusError as exc:
            return [exc] * len(batch)
        healthy = True
        try:
            connection.execute(self._insert, _columns(batch))
            return [None] * len(batch)
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.NotSupportedError):
            return self._one_by_one(connection, batch)
        except psycopg.Error as exc:
            healthy = not connection.broken
            return [self._unavailable(exc)] * len(batch)
        finally:
            self._give(connection, healthy)

    def close(self) -> None:
        """Close every idle connection; idempotent."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._opened = False
        for connection in idle:
            connection.close()

    def __repr__(self) -> str:
        return f"<PostgresSink {public_postgres_url(self.url)} table={self.table!r}>"

    def _one_by_one(
        self, connection: psycopg.Connection[Any], batch: Sequence[LogRecord]
    ) -> list[Exception | None]:
        """Insert each record alone, so that only the ones PostgreSQL rejects fail."""
        psycopg = import_psycopg()
        results: list[Exception | None] = []
        gone: SinkError | None = None
        for record in batch:
            if gone is not None:  # the database went away: keep the rest for later
                results.append(gone)
                continue
            try:
                connection.execute(self._insert_one, postgres_row(record))
                results.append(None)
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.NotSupportedError) as exc:
                results.append(
                    SinkError(
                        f"PostgreSQL rejected record {record.id}: {first_line(exc)}",
                        recoverable=False,
                    )
                )
            except psycopg.Error as exc:
                gone = self._unavailable(exc)
                results.append(gone)
        return results

    def _unavailable(self, exc: Exception) -> SinkError:
        return SinkError(
            f"PostgreSQL at {public_postgres_url(self.url)}: {first_line(exc)}", recoverable=True
        )

    def _take(self) -> psycopg.Connection[Any]:
        """An idle connection, or a new one while fewer than ``pool_size`` are in use."""
        self._slots.acquire()
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            return connect_postgres(self.url, timeout=self.connect_timeout)
        except BaseException:
            self._slots.release()
            raise

    def _give(self, connection: psycopg.Connection[Any], healthy: bool) -> None:
        if healthy and not connection.closed:
            with self._lock:
                self._idle.append(connection)
        else:
            connection.close()
        self._slots.release()


def _columns(batch: Sequence[LogRecord]) -> list[list[Any]]:
    """The batch as one list per column, for ``unnest``."""
    rows = (postgres_row(record) for record in batch)
    return [list(column) for column in zip(*rows, strict=True)]


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
            f"PostgreSQL URL {public_postgres_url(url)} is not valid: {first_line(exc)}"
        ) from None
    except pg.OperationalError as exc:
        raise ArchiveUnavailable(
            f"cannot reach PostgreSQL at {public_postgres_url(url)}: {first_line(exc)}"
        ) from exc
    return connection


def public_postgres_url(url: str) -> str:
    """``url`` fit to print: no password, and no query (it may hold ``password=``)."""
    from logbus.settings import redact_url

    return redact_url(url.partition("?")[0])


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message (libpq's run over several)."""
    lines: Iterator[str] = (line.strip() for line in str(exc).splitlines())
    return next((line for line in lines if line), type(exc).__name__)
