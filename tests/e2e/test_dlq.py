"""``logbus dlq list|show|replay|purge`` (and ``logbus worker`` filling ``<queue>.dead``)
in real subprocesses against the real RabbitMQ.

Workers that must fail use the ``gate`` sink plugin defined here (installed for
subprocesses through a ``logbus.sinks`` entry point in a dist-info directory on
``PYTHONPATH``), steered by files in its directory. Other tests put dead letters
in place directly, built as a worker builds them (:func:`logbus.worker.retry.for_dead`).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from logbus.errors import ConfigError
from logbus.message import Message
from logbus.record import LogRecord
from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, dumps
from logbus.transports.amqp import AmqpTransport
from logbus.worker.retry import (
    ATTEMPTS_HEADER,
    HISTORY_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    RetryPolicy,
    dead_queue,
    declare_retry_queues,
    for_dead,
    remove_retry_queues,
)
from tests.e2e.support import on_tty
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 20.0


# -- the gate sink ----------------------------------------------------------------------------


class GateSink:
    """A sink for worker subprocesses, steered through files in its directory ``DIR``.

    ``DIR/broken`` exists: every write fails, recoverably (``OSError``).
    ``DIR/fail-first`` exists: each record's first attempt fails, recoverably.
    ``DIR/pause`` holds seconds: each batch takes that long (so a kill lands mid-batch).
    Every attempt appends the record's id to ``DIR/attempts``, every stored record to
    ``DIR/stored`` (whole lines, ``O_APPEND``).
    """

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    @classmethod
    def from_spec(cls, arg: str | None) -> GateSink:
        """The sink for ``gate:DIR``."""
        if not arg:
            raise ConfigError("sink gate needs a directory: gate:DIR")
        return cls(arg)

    def open(self) -> None:
        """A directory that does not exist is a configuration error."""
        if not self.directory.is_dir():
            raise ConfigError(f"sink gate: no directory {self.directory}")

    def close(self) -> None:
        """Nothing to close."""

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Fail or store each record as the files say."""
        pause = self.directory / "pause"
        if pause.exists():
            time.sleep(float(pause.read_text()))
        self._append("attempts", batch)
        if (self.directory / "broken").exists():
            return [OSError("gate: broken")] * len(batch)
        results: list[Exception | None] = []
        stored = []
        for record in batch:
            if (self.directory / "fail-first").exists() and self._first(record.id):
                results.append(OSError("gate: first attempt"))
            else:
                results.append(None)
                stored.append(record)
        self._append("stored", stored)
        return results

    def _first(self, record_id: str) -> bool:
        try:
            os.close(os.open(self.directory / f"tried-{record_id}", os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return False
        return True

    def _append(self, name: str, records: Sequence[LogRecord]) -> None:
        if not records:
            return
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, "".join(f"{r.id}\n" for r in records).encode())
        finally:
            os.close(fd)


def lines(directory: Path, name: str) -> list[str]:
    """The ids a gate sink wrote to ``DIR/name``."""
    path = directory / name
    return path.read_text().split() if path.exists() else []


def install_gate_plugin(root: Path) -> dict[str, str]:
    """Declare GateSink as the ``gate`` sink plugin under ``root``; the environment in
    which subprocesses find it."""
    info = root / "logbus_gate-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: logbus-gate\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[logbus.sinks]\ngate = tests.e2e.test_dlq:GateSink.from_spec\n"
    )
    return {"PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}


@pytest.fixture(scope="session")
def gate_plugin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The ``gate`` sink plugin installed; the environment for subprocesses."""
    return install_gate_plugin(tmp_path_factory.mktemp("gate-plugin"))


# -- this test's deployment --------------------------------------------------------------------


@dataclass
class Deployment:
    """A topic exchange feeding a durable work queue, in a TOML file; a connection to look."""

    url: str
    config: Path
    exchange: str
    queue: str
    admin: AmqpTransport
    policies: list[RetryPolicy] = field(default_factory=list)

    @property
    def dead(self) -> str:
        return dead_queue(self.queue)

    def depth(self, queue: str | None = None) -> int:
        """Messages ready in ``queue`` (the work queue by default)."""
        return self.admin.declare_queue(queue or self.queue, passive=True).message_count

    def emit(self, record: LogRecord) -> None:
        """Publish ``record`` through the exchange under its own key, confirmed."""
        message = Message(record.to_bytes(), record.to_properties(), self.exchange, "kern.info")
        self.admin.publish(message)

    def bury(self, record: LogRecord, reason: str, attempts: int = 2) -> None:
        """Put ``record`` on the dead-letter queue as a worker would after ``attempts`` failures."""
        message = Message(record.to_bytes(), record.to_properties(), self.exchange, "kern.info")
        for attempt in range(1, attempts):
            history = for_dead(message, queue=self.queue, reason="-", attempt=attempt, error="e")
            message = Message(message.body, history.properties, self.exchange, "kern.info")
        error = reason.partition(": ")[2]
        self.admin.publish(
            for_dead(message, queue=self.queue, reason=reason, attempt=attempts, error=error)
        )

    def take(self, queue: str) -> list[Message]:
        """Every message of ``queue``, removed, in order."""
        taken = []
        while (delivery := self.admin.get(queue, auto_ack=True)) is not None:
            taken.append(delivery.message)
        return taken


@pytest.fixture
def deployment(amqp_url: str, unique_name: str, tmp_path: Path) -> Iterator[Deployment]:
    """This test's topology (declared), its dead-letter queue; all deleted afterwards."""
    exchange, queue = f"{unique_name}.topic", f"{unique_name}.tasks"
    topology = Topology(
        exchanges=(Exchange(name=exchange, type="topic"),),
        queues=(Queue(name=queue),),
        bindings=(Binding(source=exchange, destination=queue, routing_key="#"),),
        emit=(EmitTarget(exchange=exchange),),
    )
    config = tmp_path / "logbus.toml"
    config.write_text(dumps(topology), encoding="utf-8")
    with AmqpTransport(amqp_url, connection_name=f"admin-{unique_name}") as admin:
        admin.declare_exchange(exchange, "topic")
        admin.declare_queue(queue)
        admin.bind_queue(queue, exchange, "#")
        made = Deployment(amqp_url, config, exchange, queue, admin, [RetryPolicy()])
        declare_retry_queues(admin, queue, RetryPolicy())
        yield made
        for policy in made.policies:
            remove_retry_queues(admin, queue, policy)
        admin.delete_queue(queue)
        admin.delete_exchange(exchange)


@pytest.fixture
def dlq(
    logbus: Callable[..., subprocess.CompletedProcess[str]], deployment: Deployment
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``logbus dlq SUBCOMMAND --url URL --config FILE ARGS``."""

    def run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return logbus("dlq", command, *where(deployment), *args)

    return run


def where(deployment: Deployment) -> list[str]:
    """``--url`` and ``--config`` of the deployment."""
    return ["--url", deployment.url, "--config", str(deployment.config)]


def on_terminal(deployment: Deployment, *args: str) -> str:
    """``logbus dlq ARGS`` with stdout on a terminal (human output): the screen's lines."""
    code, screen = on_tty(["dlq", *args, *where(deployment)], {})
    assert code == 0, screen
    return screen.replace("\r\n", "\n")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Each line of ``text`` as JSON."""
    return [json.loads(line) for line in text.splitlines()]


def text(value: Any) -> str:
    """A header value as text (pika may hand over bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the worker fills the dead-letter queue; replay empties it -----------------------------------


@pytest.fixture
def worker(
    deployment: Deployment, gate_plugin: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``logbus worker`` on the deployment's queue; waits for its ready line."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        stderr = tmp_path / f"worker-{len(started)}.err"
        with stderr.open("w") as sink:
            command = [sys.executable, "-m", "logbus", "worker", *where(deployment)]
            proc = subprocess.Popen(
                [*command, "--queue", deployment.queue, *args],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                text=True,
                env={**os.environ, **gate_plugin},
            )
        started.append(proc)
        wait_until(lambda: "logbus worker: consuming" in stderr.read_text(), DEADLINE, "ready")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_record_that_always_fails_is_dead_lettered_and_replay_brings_it_back(
    deployment, worker, dlq, tmp_path
):
    """Failing 3 times puts it on <queue>.dead with its story; once fixed, replay stores it."""
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "broken").touch()
    deployment.policies.append(RetryPolicy(max_attempts=3, delay=0.05))
    proc = worker("--sink", f"gate:{gate}", "--max-attempts", "3", "--retry-delay", "50ms")
    record = LogRecord.from_key("kern.info", "unlucky")
    deployment.emit(record)
    wait_until(lambda: deployment.depth(deployment.dead) == 1, DEADLINE, "the dead letter")
    assert lines(gate, "attempts") == [record.id] * 3
    [shown] = json_lines(dlq("show", "--queue", deployment.queue, "--json").stdout)
    assert shown["message_id"] == record.id
    assert shown["reason"] == "gave up after 3 attempts: OSError: gate: broken"
    assert shown["attempts"] == 3
    assert [entry["attempt"] for entry in shown["history"]] == [1, 2, 3]
    assert shown["routing_key"] == "kern.info"
    (gate / "broken").unlink()  # the cause is fixed
    replayed = dlq("replay", "--queue", deployment.queue)
    assert replayed.returncode == 0, replayed.stderr
    assert json_lines(replayed.stdout) == [{"queue": deployment.queue, "replayed": 1, "left": 0}]
    wait_until(lambda: lines(gate, "stored") == [record.id], DEADLINE, "the record stored")
    assert deployment.depth(deployment.dead) == 0
    proc.terminate()
    assert proc.wait(15) == 0


# -- list ---------------------------------------------------------------------------------------


def test_list_counts_the_dead_letters_and_summarises_their_reasons(deployment, dlq):
    """Three dead letters, two alike: counted by reason, and all still there afterwards."""
    for n in range(2):
        deployment.bury(
            LogRecord.from_key("kern.info", f"r{n}"),
            "gave up after 5 attempts: ConnectionLost: db down",
        )
    deployment.bury(LogRecord.from_key("kern.info", "bad"), "not recoverable: ValueError: no")
    done = dlq("list", "--queue", deployment.queue, "--json")
    assert done.returncode == 0, done.stderr
    [listed] = json_lines(done.stdout)
    assert listed["dead_letter_queue"] == deployment.dead
    assert listed["exists"] is True
    assert listed["messages"] == 3
    assert listed["reasons"] == {
        "gave up after 5 attempts: ConnectionLost": 2,
        "not recoverable: ValueError": 1,
    }
    assert deployment.depth(deployment.dead) == 3


def test_list_on_a_terminal_is_a_table_of_the_config_queues(deployment):
    """Without --queue: the config's queue, its dead-letter queue, count and reasons."""
    deployment.bury(LogRecord.from_key("kern.info", "x"), "not recoverable: ValueError: no")
    header, row = on_terminal(deployment, "list").splitlines()
    assert re.sub(r"\x1b\[[0-9;]*m", "", header).split() == [
        "dead-letter",
        "queue",
        "records",
        "reasons",
    ]
    assert row.split() == [deployment.dead, "1", "1", "not", "recoverable:", "ValueError"]


def test_list_of_a_queue_no_worker_consumed_says_there_is_none(deployment, dlq, unique_name):
    """A queue without a dead-letter queue is listed as absent, not an error."""
    done = dlq("list", "--queue", f"{unique_name}.nothing", "--json")
    assert done.returncode == 0, done.stderr
    [listed] = json_lines(done.stdout)
    assert (listed["exists"], listed["messages"]) == (False, 0)


# -- show ---------------------------------------------------------------------------------------


def test_show_gives_reason_attempts_and_history_and_leaves_the_records_in_order(deployment, dlq):
    """show twice: the same records in the same order each time; none removed."""
    buried = [LogRecord.from_key("kern.info", f"record {n}") for n in range(3)]
    for n, record in enumerate(buried):
        deployment.bury(record, f"gave up after {n + 2} attempts: OSError: full", n + 2)
    first = json_lines(dlq("show", "--queue", deployment.queue, "--json").stdout)
    again = json_lines(dlq("show", "--queue", deployment.queue, "--json").stdout)
    assert [s["message_id"] for s in first] == [r.id for r in buried]
    assert first == again
    assert [s["attempts"] for s in first] == [2, 3, 4]
    assert [len(s["history"]) for s in first] == [2, 3, 4]
    assert first[0]["reason"] == "gave up after 2 attempts: OSError: full"
    assert first[0]["record"]["message"] == "record 0"
    assert deployment.depth(deployment.dead) == 3
    assert [m.properties.message_id for m in deployment.take(deployment.dead)] == [
        r.id for r in buried
    ]


def test_show_on_a_terminal_reads_as_a_story(deployment):
    """The human form: the record, its reason and one line per attempt."""
    record = LogRecord.from_key("kern.info", "disk full")
    deployment.bury(record, "gave up after 2 attempts: OSError: no space", 2)
    out = on_terminal(deployment, "show", "--queue", deployment.queue)
    assert f"{deployment.dead}: 1 record (left in place)" in out
    assert f"#1 {record.id}  kern.info" in out
    assert "reason: gave up after 2 attempts: OSError: no space" in out
    assert "attempts: 2; first published to" in out
    assert "   attempt 1 at " in out and "   attempt 2 at " in out


def test_show_without_a_dead_letter_queue_exits_78_with_one_line(deployment, dlq, unique_name):
    """Naming a queue no worker consumed: one error line saying so, exit 78."""
    done = dlq("show", "--queue", f"{unique_name}.nothing")
    assert done.returncode == 78, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("logbus: error: there is no dead-letter queue")


# -- replay -------------------------------------------------------------------------------------


def test_replay_with_a_limit_moves_the_oldest_back_with_their_attempts_reset(deployment, dlq):
    """--limit 2 of 3: the first two are in the work queue as new, the third stays dead."""
    buried = [LogRecord.from_key("kern.info", f"record {n}") for n in range(3)]
    for record in buried:
        deployment.bury(record, "gave up after 2 attempts: OSError: x")
    done = dlq("replay", "--queue", deployment.queue, "--limit", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == [{"queue": deployment.queue, "replayed": 2, "left": 1}]
    back = deployment.take(deployment.queue)
    assert [m.properties.message_id for m in back] == [r.id for r in buried[:2]]
    for message, record in zip(back, buried, strict=False):
        headers = message.properties.headers
        assert not {ATTEMPTS_HEADER, HISTORY_HEADER, REASON_HEADER} & set(headers)
        assert text(headers[ROUTING_KEY_HEADER]) == "kern.info"  # decoded with its own key
        assert message.body == record.to_bytes()
    [left] = deployment.take(deployment.dead)
    assert left.properties.message_id == buried[2].id


# -- purge --------------------------------------------------------------------------------------


def test_purge_without_yes_refuses_with_a_hint_and_drops_nothing(deployment, dlq):
    """No --yes: exit 2, one line saying what would happen and how to confirm."""
    deployment.bury(LogRecord.from_key("kern.info", "keep"), "not recoverable: ValueError: x")
    done = dlq("purge", "--queue", deployment.queue)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert f"purge drops every record on {deployment.dead} for good; add --yes" in line
    assert deployment.depth(deployment.dead) == 1


def test_purge_with_yes_drops_every_dead_letter(deployment, dlq):
    """--yes: the dead-letter queue is empty and the count is reported."""
    for n in range(3):
        deployment.bury(LogRecord.from_key("kern.info", f"{n}"), "not recoverable: ValueError: x")
    done = dlq("purge", "--queue", deployment.queue, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json_lines(done.stdout) == [{"queue": deployment.queue, "purged": 3}]
    assert deployment.depth(deployment.dead) == 0
    assert deployment.depth() == 0  # nothing went back to work either


# -- help ---------------------------------------------------------------------------------------


def test_help_names_the_subcommands_and_each_has_examples(logbus):
    """logbus dlq --help lists the four subcommands; each one's help shows examples."""
    top = logbus("dlq", "--help")
    assert top.returncode == 0, top.stderr
    for command in ("list", "show", "replay", "purge"):
        assert command in top.stdout
        own = logbus("dlq", command, "--help")
        assert own.returncode == 0, own.stderr
        assert "Examples:" in own.stdout
        assert f"logbus dlq {command}" in own.stdout
    assert "--yes" in logbus("dlq", "purge", "--help").stdout
