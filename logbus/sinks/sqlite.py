"""``sqlite:PATH``: an embedded archive of records in one SQLite file (see :mod:`logbus.archive`).

Options (``sqlite:PATH?KEY=VALUE&...`` or keys of a ``[sink]`` table):

``table``
    The table's name (``logs``).
``timeout``
    Seconds to wait for another process's write to finish (30).
``max_batch`` / ``max_wait``
    The batch hints (500 records; 0.05 s).

Each batch is one transaction, committed durably (WAL journal, ``synchronous =
FULL``) before ``write`` returns, so an acked record survives a power cut.
Records are de-duplicated by ``id``: one already stored (a redelivery) is
ignored and counts as stored. A record the database cannot hold (an integer
too large, text that is not valid Unicode) fails alone and is not retried; a
locked or failing database fails the batch recoverably. One connection is
shared by the worker's threads, one at a time; ``logbus query`` reads while
the sink writes (that is what WAL is for).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from logbus.errors import ConfigError, SinkError
from logbus.record import LogRecord
from logbus.sinks._dirs import ensure_directory
from logbus.sinks._options import ConfigurableSink, SinkOptions
from logbus.sinks.archive_table import (
    COLUMNS,
    DEFAULT_TABLE,
    sqlite_row,
    sqlite_schema,
    validate_table,
)

__all__ = ["SqliteOptions", "SqliteSink"]

# What one record can do wrong on its way into SQLite; everything else is the database's.
_BAD_RECORD = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    UnicodeError,
    OverflowError,
    ValueError,
)


class SqliteOptions(SinkOptions):
    """What ``sqlite`` takes: the database file, the table, the lock timeout."""

    path: str
    table: str = DEFAULT_TABLE
    timeout: float = Field(default=30.0, ge=0.0)
    max_batch: int = Field(default=500, ge=1, le=100_000)
    max_wait: float = Field(default=0.05, ge=0.0, le=60.0)


class SqliteSink(ConfigurableSink):
    """Stores records in a SQLite table, one transaction per batch, de-duplicated by id."""

    name = "sqlite"
    Options = SqliteOptions
    argument = "path"
    example = "sqlite:PATH"

    def __init__(
        self,
        path: str | Path,
        *,
        table: str = DEFAULT_TABLE,
        timeout: float = 30.0,
        max_batch: int = 500,
        max_wait: float = 0.05,
    ) -> None:
        self.path = Path(path).expanduser()
        self.table = validate_table(table, "sqlite")
        self.timeout = timeout
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        marks = ", ".join("?" * len(COLUMNS))
        self._insert = (
            f'INSERT OR IGNORE INTO "{self.table}" ({", ".join(COLUMNS)}) VALUES ({marks})'
        )

    def open(self) -> None:
        """Open (or create) the database, its directory (0750) and its table; switch it to WAL."""
        if str(self.path) != ":memory:":
            ensure_directory(self.path.parent, "sqlite")
        try:
            # Autocommit mode: transactions are begun and ended here, explicitly.
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            for statement in sqlite_schema(self.table):
                db.execute(statement)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"sink sqlite cannot open {str(self.path)!r}: {exc} "
                "(check that the directory exists and is writable)"
            ) from exc
        with self._lock:
            self._db = db

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Insert the batch in one transaction; see the module docstring for failures."""
        rows = [sqlite_row(record) for record in batch]
        results: list[Exception | None] = [None] * len(batch)
        with self._lock:
            db = self._db
            if db is None:
                raise ConfigError(f"sink sqlite:{self.path} was written to before open()")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(self._insert, rows)
                except _BAD_RECORD:
                    # Find which records: the ones before the culprit are in already and
                    # are ignored the second time; the transaction stays open throughout.
                    for index, row in enumerate(rows):
                        try:
                            db.execute(self._insert, row)
                        except _BAD_RECORD as exc:
                            results[index] = SinkError(
                                f"sqlite cannot store record {row[0]}: {exc}", recoverable=False
                            )
                db.execute("COMMIT")
            except sqlite3.Error as exc:  # locked, disk full, I/O: keep the records for later
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                error = SinkError(f"sqlite {str(self.path)!r}: {exc}", recoverable=True)
                return [error] * len(batch)
        return results

    def close(self) -> None:
        """Close the database; idempotent."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"<SqliteSink {str(self.path)!r} table={self.table!r}>"
