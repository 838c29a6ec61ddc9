"""The archiver into SQLite and PostgreSQL, against the hand-rolled loop and the bulk ceiling.

Run as ``python bench/sinks.py [COUNT]`` (default 20,000) with RabbitMQ on
$LOGBUS_URL (else localhost) and PostgreSQL on $LOGBUS_TEST_POSTGRES_URL (else
postgresql://postgres@127.0.0.1:5432/test). For each archive:

archiver    COUNT records are put in a durable queue with ``logbus emit --queue``
            (persistent, confirmed; not timed). Then ``python -m services.archiver``
            is started on that queue and timed from its start until the archive
            holds COUNT rows: start-up, consuming, batched inserts, acks. (The rows
            are counted only once the broker has handed every record out: counting
            costs the database a scan each time, which would slow what it measures.)
broker      The same consumer storing the rows nowhere: what the broker hands one
            consumer here, the ceiling of any archiver's rate through it.
plain batch The same, drained by the plainest batching consumer we could write
            (``BATCH_CONSUMER``: pika, prefetch 2000, rows straight from the JSON,
            one insert and one multiple ack per 500 records, nothing else): what any
            consumer gets through this broker into this archive here, which bounds
            the archiver's ratio from above.
per-record  The same rows inserted by a plain loop with one commit per record and
            no broker: what a hand-rolled consumer that commits before each ack
            does. Measured on min(COUNT, 2,000) rows (a commit waits for the disk;
            the rate is what counts). Target: archiver >= 10x this.
bulk        The same COUNT rows in one statement (SQLite: one executemany in one
            transaction; PostgreSQL: one INSERT ... SELECT FROM unnest) with no
            broker in between: the ceiling. The ratio says how close the archiver
            gets.

Both archives are set up as the sinks set them up (SQLite: WAL and
synchronous=FULL; PostgreSQL: the server's defaults), with the same table,
indexes and ``ON CONFLICT``/``OR IGNORE`` de-duplication.
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pika
import psycopg

from logbus.demo import demo_topology
from logbus.record import LogRecord
from logbus.sinks.archive_table import (
    COLUMNS,
    postgres_row,
    postgres_schema,
    sqlite_row,
    sqlite_schema,
)
from logbus.topology import dumps
from logbus.worker.retry import RetryPolicy, retry_queues

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
URL = os.environ.get("LOGBUS_URL", "amqp://guest:guest@localhost:5672/%2F")
POSTGRES = os.environ.get("LOGBUS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
PER_RECORD = min(COUNT, 2_000)
CONCURRENCY = 2


# The best plain consumer we could write: pika, prefetch 2000, rows straight from the JSON
# bodies, one insert statement and one multiple ack per batch of 500 (or whatever has
# arrived when the queue goes quiet for 50 ms). No retries, no dead letters, no metrics.
BATCH_CONSUMER = """
import json, sqlite3, sys, pika
url, queue, kind, target, table, count = sys.argv[1:7]
SEVERITY = {w: i for i, w in enumerate(
    ("emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"))}
COLUMNS = "id, ts, facility, severity, host, app, pid, message, fields, v"
if kind == "none":  # the broker's part alone: rows made, stored nowhere
    def insert(rows):
        pass
elif kind == "sqlite":
    db = sqlite3.connect(target, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    sql = f'INSERT OR IGNORE INTO "{table}" ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
    def insert(rows):
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")
else:
    import psycopg
    db = psycopg.connect(target)
    types = ("text", "timestamptz", "text", "smallint", "text", "text", "bigint", "text",
             "jsonb", "integer")
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    sql = (f'INSERT INTO "{table}" ({COLUMNS}) SELECT * FROM unnest({arrays}) '
           "ON CONFLICT (id) DO NOTHING")
    def insert(rows):
        db.execute(sql, [list(column) for column in zip(*rows)])
        db.commit()
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.basic_qos(prefetch_count=2000)
rows, last, seen = [], None, 0
for method, properties, body in channel.consume(queue, inactivity_timeout=0.05):
    if method is not None:
        seen += 1
        r = json.loads(body)
        rows.append((r["id"], r["ts"], r["facility"], SEVERITY[r["severity"]], r["host"],
                     r["app"], r["pid"], r["message"], json.dumps(r["fields"]), r["v"]))
        last = method.delivery_tag
    if rows and (method is None or len(rows) >= 500):
        insert(rows)
        channel.basic_ack(last, multiple=True)
        rows = []
        if seen == int(count):
            break
connection.close()
"""


def records(count: int) -> list[LogRecord]:
    """``count`` records shaped like the ones ``logbus emit app.info`` sends."""
    return [
        LogRecord(facility="app", severity="info", message=f"job {i} done") for i in range(count)
    ]


class Archive:
    """One archive under test: how to create it, count its rows and drop it."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind = kind
        self.table = f"bench_{secrets.token_hex(4)}"
        self.path = workdir / f"{self.table}.db"

    def spec_table(self) -> str:
        """The service file's [sink] table."""
        if self.kind == "sqlite":
            return f'type = "sqlite"\npath = "{self.path}"\ntable = "{self.table}"\n'
        return f'type = "postgres"\nurl = "{POSTGRES}"\ntable = "{self.table}"\n'

    def count(self) -> int:
        try:
            if self.kind == "sqlite":
                if not self.path.exists():
                    return 0
                with sqlite3.connect(self.path) as db:
                    return int(db.execute(f'SELECT count(*) FROM "{self.table}"').fetchone()[0])
            with psycopg.connect(POSTGRES) as db:
                found = db.execute(f'SELECT count(*) FROM "{self.table}"').fetchone()
                return int(found[0]) if found else 0
        except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
            return 0  # the sink has not created its table yet

    def drop(self) -> None:
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        else:
            with psycopg.connect(POSTGRES, autocommit=True) as db:
                db.execute(f'DROP TABLE IF EXISTS "{self.table}"')


def sqlite_db(archive: Archive) -> sqlite3.Connection:
    db = sqlite3.connect(archive.path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    for statement in sqlite_schema(archive.table):
        db.execute(statement)
    return db


def postgres_db(archive: Archive) -> psycopg.Connection[Any]:
    db = psycopg.connect(POSTGRES)
    for statement in postgres_schema(archive.table):
        db.execute(statement)
    db.commit()
    return db


def per_record(archive: Archive, rows: Sequence[LogRecord]) -> float:
    """Records/s of a loop that inserts each row and commits it."""
    columns, marks = ", ".join(COLUMNS), ", ".join("?" * len(COLUMNS))
    if archive.kind == "sqlite":
        db = sqlite_db(archive)
        insert = f'INSERT OR IGNORE INTO "{archive.table}" ({columns}) VALUES ({marks})'
        started = time.perf_counter()
        for record in rows:
            db.execute("BEGIN")
            db.execute(insert, sqlite_row(record))
            db.execute("COMMIT")
        seconds = time.perf_counter() - started
        db.close()
    else:
        pg = postgres_db(archive)
        insert = (
            f'INSERT INTO "{archive.table}" ({columns}) '
            f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) ON CONFLICT (id) DO NOTHING"
        )
        started = time.perf_counter()
        for record in rows:
            pg.execute(insert, postgres_row(record))
            pg.commit()
        seconds = time.perf_counter() - started
        pg.close()
    return len(rows) / seconds


def bulk(archive: Archive, rows: Sequence[LogRecord]) -> float:
    """Records/s of one statement inserting every row (conversion to rows included)."""
    columns = ", ".join(COLUMNS)
    if archive.kind == "sqlite":
        db = sqlite_db(archive)
        marks = ", ".join("?" * len(COLUMNS))
        started = time.perf_counter()
        db.execute("BEGIN")
        db.executemany(
            f'INSERT OR IGNORE INTO "{archive.table}" ({columns}) VALUES ({marks})',
            [sqlite_row(record) for record in rows],
        )
        db.execute("COMMIT")
        seconds = time.perf_counter() - started
        db.close()
    else:
        pg = postgres_db(archive)
        types = (
            "text",
            "timestamptz",
            "text",
            "smallint",
            "text",
            "text",
            "bigint",
            "text",
            "jsonb",
            "integer",
        )
        arrays = ", ".join(f"%s::{kind}[]" for kind in types)
        started = time.perf_counter()
        converted = [postgres_row(record) for record in rows]
        pg.execute(
            f'INSERT INTO "{archive.table}" ({columns}) SELECT * FROM unnest({arrays}) '
            "ON CONFLICT (id) DO NOTHING",
            [list(column) for column in zip(*converted, strict=True)],
        )
        pg.commit()
        seconds = time.perf_counter() - started
        pg.close()
    return len(rows) / seconds


def archiver(archive: Archive, workdir: Path) -> float:
    """Records/s of ``python -m services.archiver`` draining COUNT queued records."""

    def command(prefix: str, queue: str, config: Path) -> list[str]:
        service = workdir / f"{prefix}archiver.toml"
        service.write_text(
            f'[service]\nname = "archiver"\ntopology = "{config}"\n'
            f'[queue]\nname = "{queue}"\nexchange = "{prefix}logbus.topic"\n'
            'bindings = ["bench.none"]\n'
            f"[worker]\nconcurrency = {CONCURRENCY}\n"
            f"[sink]\n{archive.spec_table()}"
        )
        return [PY, "-m", "services.archiver", "--config", str(service), "--url", URL]

    return drain(archive, workdir, command)


def batch_consumer(archive: Archive | None, workdir: Path) -> float:
    """Records/s of :data:`BATCH_CONSUMER` draining COUNT queued records into the archive
    (None: into nothing, the broker's part alone; it exits once it has acked COUNT)."""
    script = workdir / "batch_consumer.py"
    script.write_text(BATCH_CONSUMER)
    if archive is None:
        kind, target, table = "none", "", ""
    else:
        (sqlite_db if archive.kind == "sqlite" else postgres_db)(archive).close()  # its table
        kind, table = archive.kind, archive.table
        target = str(archive.path) if archive.kind == "sqlite" else POSTGRES
    return drain(
        archive,
        workdir,
        lambda _prefix, queue, _config: [
            *(PY, str(script), URL, queue, kind, target, table, str(COUNT))
        ],
    )


def drain(
    archive: Archive | None, workdir: Path, command: Callable[[str, str, Path], list[str]]
) -> float:
    """Records/s of ``command(prefix, queue, topology file)`` draining COUNT records
    queued on ``queue`` into ``archive``, timed from its start until the rows are there
    (with no archive: until it exits)."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        return _drain(archive, workdir, command, connection.channel())
    finally:
        if connection.is_open:
            connection.close()


def _drain(
    archive: Archive | None,
    workdir: Path,
    command: Callable[[str, str, Path], list[str]],
    channel: Any,
) -> float:
    prefix = f"bench-{secrets.token_hex(4)}."
    topology = demo_topology(prefix)
    config = workdir / f"{prefix}toml"
    config.write_text(dumps(topology))
    queue = f"{prefix}archive"
    channel.queue_declare(queue, durable=True)
    lines = b"".join(b"job %d done\n" % i for i in range(COUNT))
    subprocess.run(
        [PY, "-m", "logbus", "emit", "app.info", "-", "--queue", queue, "--url", URL],
        input=lines,
        check=True,
        capture_output=True,
    )
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command(prefix, queue, config),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            if archive is None:
                if proc.wait(600) != 0:
                    raise SystemExit(f"the consumer exited {proc.returncode}")
                seconds = time.perf_counter() - started
            else:
                # Counting rows costs the database a scan, which would compete with the
                # archiver on a small machine: the broker says when every record has been
                # handed out, and only the last prefetch's worth is counted for.
                until(lambda: ready(channel, queue) == 0, proc)
                seconds = until(lambda: archive.count() >= COUNT, proc) - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    finally:
        for name in (queue, *retry_queues(queue, RetryPolicy())):
            channel.queue_delete(name)
        for q in topology.queues:
            channel.queue_delete(q.name)
        for e in topology.exchanges:
            channel.exchange_delete(e.name)
    return COUNT / seconds


def ready(channel: Any, queue: str) -> int:
    """Records in ``queue`` not yet handed to a consumer."""
    return int(channel.queue_declare(queue, passive=True).method.message_count)


def until(condition: Callable[[], bool], proc: subprocess.Popen[bytes]) -> float:
    """When ``condition`` first held (polled every 10 ms); the process must keep running."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the archiver exited {proc.returncode}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
        if condition():
            return time.perf_counter()
        time.sleep(0.01)
    raise SystemExit("the archiver did not finish in 600 s")


def main() -> None:
    """Each archive: archiver, per-record loop and bulk insert, then the ratios."""
    rows = records(COUNT)
    with tempfile.TemporaryDirectory(prefix="logbus-bench-") as tmp:
        workdir = Path(tmp)
        print(
            f"# archiver (--concurrency {CONCURRENCY}) draining {COUNT:,} records vs "
            "inserting the same rows without a broker (whole archiver process timed)"
        )
        ceiling = batch_consumer(None, workdir)
        print(
            f"broker    plain batch {ceiling:>10,.0f} records/s   (rows stored nowhere: what "
            "the broker hands one consumer here)"
        )
        for kind in ("sqlite", "postgres"):
            measured: dict[str, float] = {}
            cases: list[tuple[str, Callable[[Archive], float]]] = [
                ("archiver", lambda a: archiver(a, workdir)),
                ("plain batch", lambda a: batch_consumer(a, workdir)),
                ("per-record", lambda a: per_record(a, rows[:PER_RECORD])),
                ("bulk", lambda a: bulk(a, rows)),
            ]
            for name, run in cases:
                archive = Archive(kind, workdir)
                try:
                    measured[name] = run(archive)
                finally:
                    archive.drop()
            for name, rate in measured.items():
                print(f"{kind:<9} {name:<11} {rate:>10,.0f} records/s")
            ratio = measured["archiver"] / measured["per-record"]
            verdict = "met" if ratio >= 10 else "MISSED"
            print(
                f"{kind:<9} archiver / per-record commit = {ratio:.1f}x (target >= 10x: {verdict})"
            )
            print(
                f"{kind:<9} archiver / bulk insert (ceiling) = "
                f"{measured['archiver'] / measured['bulk']:.2f}x"
            )
            plain = measured["plain batch"]
            print(
                f"{kind:<9}   bound: the plain batch consumer gets "
                f"{plain / measured['per-record']:.1f}x of per-record commits through this "
                f"broker; archiver / plain batch consumer = {measured['archiver'] / plain:.2f}x; "
                f"storing nowhere, {ceiling / measured['per-record']:.1f}x"
            )


if __name__ == "__main__":
    main()
