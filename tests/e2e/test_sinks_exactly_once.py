"""Issue 6: what ``logbus emit`` sends lands in each sink exactly once, even when the worker
is killed mid-batch and the broker redelivers records the sink had already stored.

Real subprocesses, the real RabbitMQ and, for ``postgres``, the real PostgreSQL. The
kill has to land after a write and before its acks reach the broker, or there is
nothing to de-duplicate; waiting and hoping would make that a matter of luck. So the
first worker reaches the broker through :class:`AckHold`, a TCP relay in this process.
It stores a first wave of records with its acks flowing; then the relay drops what the
worker sends from there on (its acks) while the broker's deliveries still reach it. A
second wave is emitted: the worker stores some of it — at most its prefetch, since
nothing is acked any more — and is SIGKILLed. Every record it stored after the hold is
then stored and unacked, and the broker redelivers it, with whatever the worker held
unwritten, to a second worker connected directly.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from logbus.transports import connect
from logbus.worker.retry import RetryPolicy, remove_retry_queues
from tests.e2e.support import Deployment, emit
from tests.integration.test_sinks_postgres import pg_table
from tests.support import wait_until

__all__ = ["pg_table"]  # a fixture, shared with the integration tests

FIRST_WAVE = 1000
SECOND_WAVE = 2000
#: Batches that take a while to fill, so that records are in flight when the kill lands.
BATCHING = "max_batch=100&max_wait=0.5"
CONCURRENCY = 2
#: Two batches of 100 per thread: fewer than the second wave, so the kill finds some unsent.
PREFETCH = 400


class AckHold:
    """A TCP relay to the broker that, once told to, drops everything its clients send."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.holding = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, amqp_url: str) -> str:
        """``amqp_url`` pointing at this relay (credentials and vhost kept)."""
        parts = urlsplit(amqp_url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def hold(self) -> None:
        """From now on the broker hears nothing from the clients: no acks, for good."""
        self.holding.set()

    def close(self) -> None:
        """Stop listening and end every relayed connection."""
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink, held in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(source, sink, held), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (held and self.holding.is_set()):
                    sink.sendall(data)
        except OSError:
            pass
        finally:  # one side gone: so is the other (a killed worker's connection closes)
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Worker:
    """A running ``logbus worker`` subprocess; its stderr collected line by line."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("logbus worker: consuming"):
                self.ready.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Store:
    """A sink's spec and how to look at what it stored: the message of each record stored."""

    spec: str
    messages: Callable[[], list[str]]
    #: Lines that are not records (jsonl only: a line torn by the kill).
    unreadable: Callable[[], int] = lambda: 0


def jsonl_store(path: Path) -> Store:
    """jsonl:PATH, read line by line."""

    def lines() -> list[bytes]:
        return path.read_bytes().splitlines() if path.exists() else []

    def decoded() -> list[str | None]:
        out: list[str | None] = []
        for line in lines():
            try:
                out.append(json.loads(line)["message"])
            except ValueError:
                out.append(None)
        return out

    return Store(
        f"jsonl:{path}",
        lambda: [m for m in decoded() if m is not None],
        lambda: decoded().count(None),
    )


def sqlite_store(path: Path) -> Store:
    """sqlite:PATH, read through a read-only connection of its own."""

    def messages() -> list[str]:
        if not path.exists():
            return []
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            try:
                return [row[0] for row in db.execute("SELECT message FROM logs")]
            except sqlite3.OperationalError:  # the worker has not made the table yet
                return []

    return Store(f"sqlite:{path}", messages)


def postgres_store(url: str, table: str) -> Store:
    """postgres:URL?table=TABLE, read through a connection of its own."""
    import psycopg

    def messages() -> list[str]:
        with psycopg.connect(url) as connection:
            try:
                return [row[0] for row in connection.execute(f'SELECT message FROM "{table}"')]
            except psycopg.errors.UndefinedTable:
                return []

    return Store(f"postgres:{url}?table={table}", messages)


@pytest.fixture(params=["sqlite", "postgres", "jsonl"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each sink that de-duplicates by id, writing somewhere of this test's own."""
    if request.param == "sqlite":
        return sqlite_store(tmp_path / "archive.db")
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        return postgres_store(url, request.getfixturevalue("pg_table"))
    return jsonl_store(tmp_path / "records.jsonl")


@pytest.fixture
def relay(amqp_url: str) -> Iterator[AckHold]:
    """A relay to this test's broker that can hold the acks back."""
    parts = urlsplit(amqp_url)
    hold = AckHold((parts.hostname or "127.0.0.1", parts.port or 5672))
    yield hold
    hold.close()


@pytest.fixture
def start(amqp_url: str, deployment: Deployment) -> Iterator[Callable[..., Worker]]:
    """Start ``logbus worker`` on this test's work queue; waits for it to consume."""
    running: list[Worker] = []

    def run(spec: str, url: str) -> Worker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "logbus", "worker", "--sink", spec, "--url", url,
             "--config", str(deployment.config), "--queue", deployment.tasks,
             "--concurrency", str(CONCURRENCY), "--prefetch", str(PREFETCH)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        worker = Worker(proc)
        running.append(worker)
        reader = threading.Thread(target=worker.read, daemon=True)
        reader.start()
        wait_until(lambda: worker.ready.is_set() or not reader.is_alive(), 30, "the worker")
        assert worker.ready.is_set(), f"the worker never started consuming:\n{worker.stderr}"
        return worker

    yield run
    for worker in running:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(10)
    with connect(amqp_url) as transport:  # the queues the workers declared for retries
        remove_retry_queues(transport, deployment.tasks, RetryPolicy())


def with_options(spec: str, options: str) -> str:
    """``spec`` with more ``KEY=VALUE&...`` options in its query."""
    return f"{spec}{'&' if '?' in spec else '?'}{options}"


def emit_wave(amqp_url: str, deployment: Deployment, name: str, count: int) -> list[str]:
    """``logbus emit kern.info -`` with ``count`` lines on stdin; the messages sent."""
    messages = [f"{name} {i}" for i in range(count)]
    done = emit(amqp_url, deployment, "kern.info", "-", stdin="\n".join(messages) + "\n")
    assert done.returncode == 0, done.stderr
    return messages


@dataclass
class Outcome:
    """What the killed worker had stored, and what the sink holds in the end."""

    emitted: list[str]
    killed: list[str]
    second_wave: list[str]
    final: list[str]
    unreadable: int


def kill_mid_batch_then_recover(
    amqp_url: str,
    deployment: Deployment,
    relay: AckHold,
    start: Callable[..., Worker],
    store: Store,
    spec: str,
) -> Outcome:
    """The scenario of the module docstring; a second worker then empties the queue."""
    first = start(spec, relay.url(amqp_url))
    wave = emit_wave(amqp_url, deployment, "first", FIRST_WAVE)
    wait_until(lambda: len(store.messages()) >= FIRST_WAVE, 60, "the first wave stored")
    relay.hold()
    second_wave = emit_wave(amqp_url, deployment, "second", SECOND_WAVE)
    emitted = wave + second_wave
    wait_until(lambda: len(store.messages()) > FIRST_WAVE, 60, "some of the second wave")
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(10) == -signal.SIGKILL, first.stderr
    killed = store.messages()

    second = start(spec, amqp_url)

    def all_stored() -> bool:
        return set(store.messages()) >= set(emitted) and deployment.depth() == 0

    wait_until(all_stored, 120, "every record stored and the queue empty")
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(30) == 0, second.stderr
    return Outcome(emitted, killed, second_wave, store.messages(), store.unreadable())


def test_each_record_is_stored_exactly_once_across_a_kill(
    amqp_url, deployment, relay, start, store
):
    """Killed after storing records it had not acked, redelivered: each is stored once."""
    outcome = kill_mid_batch_then_recover(
        amqp_url, deployment, relay, start, store, with_options(store.spec, BATCHING)
    )
    # Some but not all: all the first wave, then some of the second, stored and never acked.
    assert FIRST_WAVE < len(outcome.killed) < len(outcome.emitted)
    assert Counter(outcome.final) == Counter(outcome.emitted)  # every one, each once
    assert outcome.unreadable <= 1  # at most a line the kill cut short


def test_without_dedupe_the_redelivered_records_are_written_twice(
    amqp_url, deployment, relay, start, tmp_path
):
    """jsonl with dedupe=false shows the kill really leaves stored records to redeliver."""
    store = jsonl_store(tmp_path / "records.jsonl")
    outcome = kill_mid_batch_then_recover(
        amqp_url,
        deployment,
        relay,
        start,
        store,
        with_options(store.spec, f"dedupe=false&{BATCHING}"),
    )
    twice = {message for message, n in Counter(outcome.final).items() if n > 1}
    stored_unacked = set(outcome.killed) & set(outcome.second_wave)
    assert stored_unacked  # what the killed worker stored after its acks were held back
    assert stored_unacked <= twice <= set(outcome.killed)
    assert set(outcome.final) == set(outcome.emitted)
