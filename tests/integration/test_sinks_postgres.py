"""The postgres sink and archive against a real PostgreSQL.

The PostgreSQL is ``tests/conftest.py``'s ``postgres_url`` ($LOGBUS_TEST_POSTGRES_URL,
else 127.0.0.1:5432, database test): it skips when none answers, unless
``LOGBUS_REQUIRE_POSTGRES=1`` (CI), which makes that a failure. Every test
writes to a table of its own (``pg_table``, which the end-to-end tests import
too), dropped afterwards.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from logbus.archive import Query, search
from logbus.errors import ArchiveUnavailable, SinkError
from logbus.record import LogRecord, Severity
from logbus.sinks import is_recoverable, load_sink, load_sink_table
from logbus.sinks.postgres import PostgresSink
from tests.e2e.support import free_port

psycopg = pytest.importorskip("psycopg")


@pytest.fixture
def pg_table(postgres_url: str) -> Iterator[str]:
    """A fresh table name for this test; the table is dropped afterwards."""
    name = f"test_logs_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP TABLE IF EXISTS "{name}"')


def count(url: str, table: str) -> int:
    """Rows in ``table``, seen through a connection of its own."""
    with psycopg.connect(url) as connection:
        row = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    assert row is not None
    return int(row[0])


def opened(url: str, table: str, **options: object) -> PostgresSink:
    """An opened postgres sink writing to ``table``."""
    sink = PostgresSink(url, table=table, **options)  # type: ignore[arg-type]
    sink.open()
    return sink


def record(message: str = "disk failed", **kw: object) -> LogRecord:
    """A kern.critical record."""
    base: dict[str, object] = {"host": "web1", "app": "kernel", "pid": 7}
    return LogRecord.from_key("kern.critical", message, **{**base, **kw})


def test_a_batch_reads_back_as_the_same_records(postgres_url, pg_table):
    """Every field survives the archive: ts to the microsecond, fields as JSON, pid None."""
    sink = opened(postgres_url, pg_table)
    batch = [record("one", fields={"disk": "sda1", "n": [1, 2.5, None]}), record("two", pid=None)]
    assert sink.write(batch) == [None, None]
    sink.close()
    found = search(f"postgres:{postgres_url}?table={pg_table}", Query(oldest_first=True))
    assert found == batch


def test_writing_the_same_batch_twice_stores_each_record_once(postgres_url, pg_table):
    """De-duplication by id: ON CONFLICT DO NOTHING, and the second write counts as stored."""
    sink = opened(postgres_url, pg_table)
    batch = [record("one"), record("two"), record("three")]
    assert sink.write(batch) == [None, None, None]
    assert sink.write(batch) == [None, None, None]
    sink.close()
    assert count(postgres_url, pg_table) == 3


def test_a_batch_is_one_round_trip(postgres_url, pg_table, tmp_path):
    """A batch of 200 records is one statement and one Sync on the wire (libpq's own trace)."""
    sink = opened(postgres_url, pg_table, pool_size=1)
    [connection] = sink._idle  # the pool's only connection, which the write will take
    with open(tmp_path / "trace", "w+b") as trace:
        connection.pgconn.trace(trace.fileno())
        connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        assert sink.write([record(str(i)) for i in range(200)]) == [None] * 200
        connection.pgconn.untrace()
        trace.seek(0)
        messages = [line.split("\t")[2] for line in trace.read().decode().splitlines()]
    sink.close()
    assert messages.count("Sync") == 1
    assert messages.count("Parse") + messages.count("Query") <= 1
    assert count(postgres_url, pg_table) == 200


def test_a_rejected_record_fails_alone_and_for_good(postgres_url, pg_table):
    """A NUL in a message (PostgreSQL refuses it) fails that record only, not recoverably."""
    sink = opened(postgres_url, pg_table)
    results = sink.write([record("good"), record("nul \x00 here"), record("also good")])
    sink.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], SinkError) and not is_recoverable(results[1])
    assert count(postgres_url, pg_table) == 2


def test_json_postgres_refuses_fails_only_its_record(postgres_url, pg_table):
    """A \\u0000 inside fields (jsonb refuses it) fails that record only."""
    sink = opened(postgres_url, pg_table)
    results = sink.write([record("good"), record("bad", fields={"x": "\x00"})])
    sink.close()
    assert results[0] is None
    assert isinstance(results[1], SinkError) and not is_recoverable(results[1])


def test_an_unreachable_database_fails_writes_recoverably(postgres_url, pg_table):
    """With the server gone (its connections killed), a write fails recoverably, then recovers."""
    sink = opened(postgres_url, pg_table, pool_size=1)
    assert sink.write([record("first")]) == [None]
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query LIKE %s",
            (f"%{pg_table}%",),
        )
    [lost] = sink.write([record("while the connection is dead")])
    assert isinstance(lost, SinkError) and is_recoverable(lost)
    assert sink.write([record("after")]) == [None]  # a fresh connection from the pool
    sink.close()


def test_opening_against_a_closed_port_is_unavailable():
    """Nothing listening: open raises ArchiveUnavailable (recoverable, exit status 69)."""
    sink = PostgresSink(f"postgresql://postgres@127.0.0.1:{free_port()}/test", connect_timeout=3)
    with pytest.raises(ArchiveUnavailable) as caught:
        sink.open()
    assert caught.value.exit_code == 69
    assert is_recoverable(caught.value)


def test_the_password_never_appears_in_errors():
    """A URL's password is redacted from the unreachable error."""
    sink = PostgresSink(f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/test")
    with pytest.raises(ArchiveUnavailable) as caught:
        sink.open()
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(sink)


def test_the_table_gets_its_indexes(postgres_url, pg_table):
    """Indexes on ts, facility, severity and host exist after open."""
    opened(postgres_url, pg_table).close()
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (pg_table,)
        ).fetchall()
    definitions = " ".join(row[0] for row in rows)
    for column in ("ts", "facility", "severity", "host"):
        assert f"({column})" in definitions


def test_sinks_opening_together_create_the_table_once(postgres_url, pg_table):
    """Four sinks opening at once on a new table all succeed (no creation race)."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            opened(postgres_url, pg_table).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_threads_sharing_a_sink_store_every_record(postgres_url, pg_table):
    """Eight threads through a pool of two connections store all 400 records."""
    sink = opened(postgres_url, pg_table, pool_size=2)
    failures: list[object] = []

    def write_many(n: int) -> None:
        for i in range(10):
            batch = [record(f"{n}/{i}/{j}") for j in range(5)]
            failures.extend(r for r in sink.write(batch) if r is not None)

    threads = [threading.Thread(target=write_many, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    assert failures == []
    assert count(postgres_url, pg_table) == 400


def test_a_schema_qualified_table_from_a_sink_table(postgres_url, pg_table):
    """table = "public.NAME" in a [sink] table writes to that table."""
    sink = load_sink_table({"type": "postgres", "url": postgres_url, "table": f"public.{pg_table}"})
    sink.open()
    assert sink.write([record()]) == [None]
    sink.close()
    assert count(postgres_url, pg_table) == 1


def test_queries_filter_in_postgres_as_in_sqlite(postgres_url, pg_table):
    """since, min_severity, hosts and grep select the same records the SQLite archive would."""
    t0 = datetime(2025, 1, 2, 12, tzinfo=UTC)
    sink = load_sink(f"postgres:{postgres_url}?table={pg_table}")
    sink.open()
    batch = [
        LogRecord.from_key(key, msg, ts=t0 + timedelta(minutes=i), host=host)
        for i, (key, msg, host) in enumerate(
            [
                ("kern.critical", "disk failed", "web1"),
                ("auth.info", "login ok", "web2"),
                ("kern.error", "disk slow", "web1"),
                ("kern.debug", "disk fine", "web1"),
            ]
        )
    ]
    assert sink.write(batch) == [None] * 4
    sink.close()
    query = Query(
        since=t0 + timedelta(minutes=1),
        min_severity=Severity.ERROR,
        hosts=("web1",),
        grep="disk",
    )
    found = search(f"postgres:{postgres_url}?table={pg_table}", query)
    assert [r.message for r in found] == ["disk slow"]
