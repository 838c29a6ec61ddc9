"""The sqlite sink: the archive table, de-duplication, transactions, threads, failures."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from logbus.archive import Query, search
from logbus.errors import ConfigError, SinkError
from logbus.record import LogRecord
from logbus.sinks import is_recoverable, load_sink
from logbus.sinks.sqlite import SqliteSink


def record(message: str = "disk failed", **kw: object) -> LogRecord:
    """A kern.critical record."""
    base: dict[str, object] = {"host": "web1", "app": "kernel", "pid": 7}
    return LogRecord.from_key("kern.critical", message, **{**base, **kw})


def opened(path: Path, **options: object) -> SqliteSink:
    """An opened sqlite sink on ``path``."""
    sink = SqliteSink(path, **options)  # type: ignore[arg-type]
    sink.open()
    return sink


def rows(path: Path, table: str = "logs") -> list[tuple[object, ...]]:
    """Every row of the table, as a separate reader sees it."""
    with sqlite3.connect(path) as db:
        return db.execute(f'SELECT * FROM "{table}" ORDER BY ts').fetchall()


def test_a_batch_is_stored_as_rows_that_read_back_as_the_records(tmp_path):
    """Every field survives the round trip through the archive."""
    path = tmp_path / "a.db"
    sink = opened(path)
    batch = [record("one", fields={"disk": "sda1", "n": [1, 2]}), record("two", pid=None)]
    assert sink.write(batch) == [None, None]
    sink.close()
    found = search(f"sqlite:{path}", Query(oldest_first=True))
    assert found == batch


def test_writing_the_same_batch_twice_stores_each_record_once(tmp_path):
    """De-duplication by id: the second write succeeds and adds no row."""
    path = tmp_path / "a.db"
    sink = opened(path)
    batch = [record("one"), record("two"), record("three")]
    assert sink.write(batch) == [None, None, None]
    assert sink.write(batch) == [None, None, None]
    sink.close()
    assert len(rows(path)) == 3


def test_the_table_has_indexes_on_ts_facility_severity_and_host(tmp_path):
    """The four columns queries filter on are indexed."""
    path = tmp_path / "a.db"
    opened(path).close()
    with sqlite3.connect(path) as db:
        indexed = {
            row[2]
            for name in ("logs_ts_idx", "logs_facility_idx", "logs_severity_idx", "logs_host_idx")
            for row in db.execute(f"PRAGMA index_info({name})")
        }
    assert indexed == {"ts", "facility", "severity", "host"}


def test_the_database_is_in_wal_mode(tmp_path):
    """WAL lets `logbus query` read while the sink writes."""
    path = tmp_path / "a.db"
    opened(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_table_option_names_the_table(tmp_path):
    """table=audit writes to a table called audit."""
    path = tmp_path / "a.db"
    sink = load_sink(f"sqlite:{path}?table=audit")
    sink.open()
    sink.write([record()])
    sink.close()
    assert len(rows(path, "audit")) == 1


def test_a_record_the_database_cannot_hold_fails_alone_and_for_good(tmp_path):
    """A pid too large for SQLite fails that record (not recoverable); the others are stored."""
    path = tmp_path / "a.db"
    sink = opened(path)
    results = sink.write([record("good"), record("bad", pid=2**70), record("also good")])
    sink.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], SinkError)
    assert not is_recoverable(results[1])
    assert sorted(r[7] for r in rows(path)) == ["also good", "good"]


def test_a_locked_database_fails_the_batch_recoverably(tmp_path):
    """While another connection holds the write lock, the batch fails and will be retried."""
    path = tmp_path / "a.db"
    sink = opened(path, timeout=0.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        results = sink.write([record("a"), record("b")])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert all(isinstance(r, SinkError) and is_recoverable(r) for r in results)
    assert sink.write([record("c")]) == [None]
    sink.close()
    assert [r[7] for r in rows(path)] == ["c"]


def test_a_batch_is_one_transaction(tmp_path):
    """A batch of three records is one BEGIN ... COMMIT on the database."""
    sink = opened(tmp_path / "a.db")
    statements: list[str] = []
    assert sink._db is not None
    sink._db.set_trace_callback(statements.append)
    sink.write([record("a"), record("b"), record("c")])
    sink.close()
    begins = [s for s in statements if s.startswith("BEGIN")]
    commits = [s for s in statements if s.startswith("COMMIT")]
    assert (len(begins), len(commits)) == (1, 1)
    assert statements.index(begins[0]) < statements.index(commits[0])


def test_threads_writing_at_once_store_every_record(tmp_path):
    """Eight threads sharing one sink store all 400 records, each once."""
    path = tmp_path / "a.db"
    sink = opened(path)
    barrier = threading.Barrier(8)
    failures: list[object] = []

    def write_many(n: int) -> None:
        barrier.wait()
        for i in range(10):
            batch = [record(f"thread {n} batch {i} #{j}") for j in range(5)]
            failures.extend(r for r in sink.write(batch) if r is not None)

    threads = [threading.Thread(target=write_many, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    assert failures == []
    assert len(rows(path)) == 400


def test_opening_in_a_missing_directory_creates_it_and_says_so(tmp_path, caplog):
    """The shipped archiver's /var/lib/logbus on first run: created 0750, logged, used."""
    sink = SqliteSink(tmp_path / "missing" / "deeper" / "a.db")
    sink.open()
    sink.write([record()])
    sink.close()
    for made in (tmp_path / "missing", tmp_path / "missing" / "deeper"):
        assert oct(made.stat().st_mode & 0o777) == "0o750"
        assert any(
            "sink.directory_created" in r.getMessage() and str(made) in r.getMessage()
            for r in caplog.records
        )
    assert len(rows(tmp_path / "missing" / "deeper" / "a.db")) == 1


def test_a_directory_that_cannot_be_created_is_a_config_error_naming_it(tmp_path):
    """Under a regular file no directory can be made: one ConfigError naming the path."""
    (tmp_path / "file").write_text("")
    sink = SqliteSink(tmp_path / "file" / "sub" / "a.db")
    with pytest.raises(ConfigError, match=r"cannot create directory .*sub"):
        sink.open()


def test_writing_before_open_is_a_config_error(tmp_path):
    """A sink must be opened first."""
    with pytest.raises(ConfigError, match="before open"):
        SqliteSink(tmp_path / "a.db").write([record()])
