"""Worker pools against a real RabbitMQ: threads, worker processes and greenlets.

The thread and process pools run in this process (a :class:`~logbus.worker.Worker`
on the pika transport); the gevent pool needs a monkey-patched process, so it
runs as ``logbus worker --pool gevent`` in a subprocess, as does the SIGTERM
drain of ``logbus worker --pool process``. The sink is the ``probe`` plugin of
``tests/pool_probe.py``, which says who wrote each record.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from logbus.message import Message
from logbus.record import LogRecord
from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, dumps
from logbus.transports.amqp import AmqpTransport
from logbus.worker import Worker
from logbus.worker.retry import RetryPolicy, remove_retry_queues
from tests.pool_probe import (  # noqa: F401 (probe_plugin: a fixture, found by name)
    DEADLINE,
    ProbeSink,
    Running,
    alive,
    pids,
    probe_plugin,
    started,
    stored,
    wait_until,
)
from tests.support import require_or_skip

RABBITMQCTL = shutil.which("rabbitmqctl")


@pytest.fixture
def admin(amqp_url: str, unique_name: str) -> Iterator[AmqpTransport]:
    """The test's own connection for declaring, publishing and inspecting."""
    with AmqpTransport(amqp_url, connection_name=f"admin-{unique_name}") as transport:
        yield transport


@pytest.fixture
def work_queue(admin: AmqpTransport, unique_name: str) -> Iterator[str]:
    """A durable work queue of this test's own; deleted afterwards."""
    name = f"{unique_name}.tasks"
    admin.declare_queue(name, durable=True)
    yield name
    admin.delete_queue(name)
    remove_retry_queues(admin, name, RetryPolicy())  # declared by the workers


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    """A directory for this test's probe sink."""
    directory = tmp_path / "probe"
    directory.mkdir()
    return directory


def publish(admin: AmqpTransport, queue: str, messages: list[str]) -> list[str]:
    """Publish one record per message to ``queue``, confirmed; their ids."""
    records = [LogRecord.from_key("kern.info", text) for text in messages]
    admin.publish_many(Message(r.to_bytes(), r.to_properties(), "", queue) for r in records)
    return [r.id for r in records]


def ready(admin: AmqpTransport, queue: str) -> int:
    """Messages ready in ``queue``."""
    return admin.declare_queue(queue, passive=True).message_count


def unacked(queue: str) -> int:
    """How many of ``queue``'s messages are delivered and not yet acked (``rabbitmqctl``)."""
    assert RABBITMQCTL is not None
    listing = subprocess.run(
        [RABBITMQCTL, "-q", "list_queues", "--no-table-headers", "name", "messages_unacknowledged"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for line in listing.splitlines():
        name, _, count = line.rpartition("\t")
        if name == queue:
            return int(count)
    raise AssertionError(f"rabbitmqctl does not list queue {queue!r}")


# -- thread and process pools, in this process --------------------------------------------


def test_thread_pool_stores_a_cpu_bound_sinks_records_once(amqp_url, admin, work_queue, probe_dir):
    """40 CPU-heavy records through two threads: each stored once, the queue empty."""
    sent = publish(admin, work_queue, ["cpu"] * 40)
    running = Running(Worker(amqp_url, work_queue, ProbeSink(probe_dir), concurrency=2))
    wait_until(lambda: len(stored(probe_dir)) == 40, DEADLINE, "40 records stored")
    summary = running.stop()
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    assert (summary.handled, summary.failed) == (40, 0)
    assert ready(admin, work_queue) == 0


def test_thread_pool_writes_an_io_bound_sink_on_every_thread_at_once(
    amqp_url, admin, work_queue, probe_dir
):
    """Four waiting records are written by four threads together (they meet)."""
    publish(admin, work_queue, ["meet 4"] * 4)
    worker = Worker(amqp_url, work_queue, ProbeSink(probe_dir), concurrency=4, prefetch=4)
    running = Running(worker)
    wait_until(lambda: len(stored(probe_dir)) == 4, DEADLINE, "4 records stored")
    summary = running.stop()
    assert len({s.ident for s in stored(probe_dir)}) == 4
    assert summary.handled == 4
    assert ready(admin, work_queue) == 0


def process_worker(url: str, queue: str, directory: Path, **options: Any) -> Worker:
    """A process-pool worker on ``queue`` writing to the probe sink in ``directory``."""
    return Worker(url, queue, f"probe:{directory}", pool="process", **options)


@pytest.mark.usefixtures("probe_plugin")
def test_process_pool_stores_a_cpu_bound_sinks_records_once(amqp_url, admin, work_queue, probe_dir):
    """40 CPU-heavy records through two worker processes: each stored once, the queue empty."""
    sent = publish(admin, work_queue, ["cpu"] * 40)
    running = Running(process_worker(amqp_url, work_queue, probe_dir, concurrency=2))
    wait_until(lambda: len(stored(probe_dir)) == 40, DEADLINE, "40 records stored")
    summary = running.stop()
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    assert os.getpid() not in {s.pid for s in stored(probe_dir)}
    assert (summary.handled, summary.failed, summary.requeued) == (40, 0, 0)
    assert ready(admin, work_queue) == 0


@pytest.mark.usefixtures("probe_plugin")
def test_process_pool_writes_an_io_bound_sink_in_every_process_at_once(
    amqp_url, admin, work_queue, probe_dir
):
    """Three waiting records are written by three worker processes together (they meet)."""
    publish(admin, work_queue, ["meet 3"] * 3)
    worker = process_worker(amqp_url, work_queue, probe_dir, concurrency=3, prefetch=3)
    running = Running(worker)
    wait_until(lambda: len(stored(probe_dir)) == 3, DEADLINE, "3 records stored")
    summary = running.stop()
    writers = {s.pid for s in stored(probe_dir)}
    assert len(writers) == 3 and os.getpid() not in writers
    assert summary.handled == 3
    assert ready(admin, work_queue) == 0


@pytest.mark.usefixtures("probe_plugin")
def test_a_sigkilled_worker_process_has_its_records_redelivered(
    amqp_url, admin, work_queue, probe_dir
):
    """SIGKILL of a worker process mid-batch: RabbitMQ redelivers its records; none lost."""
    sent = publish(admin, work_queue, ["hang-once"] + ["sleep 0.01"] * 40)
    running = Running(process_worker(amqp_url, work_queue, probe_dir, concurrency=2))
    hung = probe_dir / "hung"
    wait_until(lambda: hung.exists() and hung.read_text() != "", DEADLINE, "the hanging write")
    victim = int(hung.read_text())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: {s.id for s in stored(probe_dir)} == set(sent), DEADLINE, "every record")
    summary = running.stop()
    assert victim not in {s.pid for s in stored(probe_dir)}
    assert summary.handled == 41
    assert summary.requeued >= 1 and summary.replaced == 1
    assert ready(admin, work_queue) == 0


@pytest.mark.usefixtures("probe_plugin")
def test_a_record_stays_unacked_while_its_worker_process_writes_it(
    amqp_url, admin, work_queue, probe_dir
):
    """RabbitMQ counts the record unacked until the worker process reported it stored."""
    if RABBITMQCTL is None or urlsplit(amqp_url).hostname not in ("127.0.0.1", "localhost"):
        require_or_skip("needs rabbitmqctl for the broker under test")
    publish(admin, work_queue, ["gate"])
    running = Running(process_worker(amqp_url, work_queue, probe_dir))
    wait_until((probe_dir / "writing").exists, DEADLINE, "the worker process writing it")
    assert unacked(work_queue) == 1
    (probe_dir / "open").touch()
    wait_until(lambda: unacked(work_queue) == 0, DEADLINE, "the ack")
    assert running.stop().handled == 1
    assert ready(admin, work_queue) == 0


# -- the command line: gevent, and draining worker processes --------------------------------


class Command:
    """``logbus worker`` in a subprocess, its stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logbus", "worker", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        self.lines: list[str] = []
        self.started = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("logbus worker: consuming"):
                self.started.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def terminate(self) -> int:
        """SIGTERM; the exit status once the process and its stderr ended."""
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(DEADLINE)
        self.reader.join(DEADLINE)
        return status


@pytest.fixture
def command(
    amqp_url: str, work_queue: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Command]]:
    """Start ``logbus worker --queue WORK_QUEUE ARGS`` with its own topology; wait until ready."""
    exchange = f"{work_queue}.topic"
    topology = Topology(
        exchanges=(Exchange(name=exchange, type="topic", durable=False),),
        queues=(Queue(name=work_queue),),
        bindings=(Binding(source=exchange, destination=work_queue, routing_key="#"),),
        emit=(EmitTarget(exchange=exchange),),
    )
    config = tmp_path / "logbus.toml"
    config.write_text(dumps(topology), encoding="utf-8")
    env: dict[str, str] = request.getfixturevalue("probe_plugin")
    started: list[Command] = []

    def start(*args: str) -> Command:
        common = ["--url", amqp_url, "--config", str(config), "--queue", work_queue]
        running = Command([*common, *args], env)
        started.append(running)
        if not running.started.wait(DEADLINE):
            running.proc.kill()
            raise AssertionError(f"the worker never became ready:\n{running.stderr}")
        return running

    yield start
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait(DEADLINE)
    with AmqpTransport(amqp_url) as transport:
        transport.delete_exchange(exchange)


def test_logbus_worker_pool_gevent_writes_on_many_greenlets_at_once(
    command, admin, work_queue, probe_dir
):
    """--pool gevent: ten waiting records written together by ten greenlets of one process."""
    sink = f"probe:{probe_dir}"
    # prefetch = concurrency: each greenlet holds one meeting record, none holds two.
    worker = command("--pool", "gevent", "--concurrency", "10", "--prefetch", "10", "--sink", sink)
    assert "(prefetch 10, 10 greenlets)" in worker.stderr
    sent = publish(admin, work_queue, ["meet 10"] * 10 + ["cpu"] * 10)
    wait_until(lambda: len(stored(probe_dir)) == 20, DEADLINE, "20 records stored")
    assert worker.terminate() == 0, worker.stderr
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    meeting = [s for s in stored(probe_dir) if s.id in sent[:10]]
    assert {s.pid for s in meeting} == {worker.proc.pid}
    assert len({s.ident for s in meeting}) == 10
    assert "stopped: 20 handled, 0 failed" in worker.stderr
    assert ready(admin, work_queue) == 0


def test_sigterm_drains_logbus_worker_pool_process(command, admin, work_queue, probe_dir):
    """SIGTERM: worker processes finish the records in hand, all is acked, they exit, exit 0."""
    worker = command("--pool", "process", "--concurrency", "2", "--sink", f"probe:{probe_dir}")
    assert "(prefetch 2000, 2 processes)" in worker.stderr
    children = pids(probe_dir, "opened")
    assert len(children) == 2
    sent = publish(admin, work_queue, ["sleep 0.1"] * 60)
    wait_until(lambda: len(stored(probe_dir)) >= 4, DEADLINE, "the stream flowing")
    assert worker.terminate() == 0, worker.stderr
    done = [s.id for s in stored(probe_dir)]
    assert len(done) == len(set(done)) < 60
    assert set(started(probe_dir)) <= set(done)  # every write begun was finished
    left = []
    while (delivery := admin.get(work_queue, auto_ack=True)) is not None:
        left.append(delivery.properties.message_id)
    assert sorted(done + left) == sorted(sent)  # each once: stored (and acked), or queued
    assert not any(alive(pid) for pid in children)
    assert sorted(pids(probe_dir, "closed")) == sorted(children)
    assert f"stopped: {len(done)} handled, 0 failed" in worker.stderr
