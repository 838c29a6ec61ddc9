"""``logbus worker`` in real subprocesses against the real RabbitMQ: sharing, signals, faults.

Each test declares its own topology (a durable topic exchange feeding a durable
work queue, both named ``test-<hex>...``) in a TOML file passed with
``--config``, and deletes both at the end, so tests never touch the default
entities other people use on the same broker. A test that restarts its broker
is marked ``faults`` and runs against the private node (``tests/private_broker.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pytest

from logbus.emitter import Emitter
from logbus.errors import TransportError
from logbus.record import LogRecord
from logbus.settings import load_settings
from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, dumps
from logbus.transports import connect
from logbus.worker.batching import PREFETCH_FLOOR
from logbus.worker.retry import RetryPolicy, remove_retry_queues
from tests.e2e.test_dlq import install_gate_plugin
from tests.e2e.test_dlq import lines as gate_lines
from tests.private_broker import PrivateBroker
from tests.support import wait_until


@dataclass
class Setup:
    """The test's broker URL, topology file and entity names."""

    url: str
    config: Path
    exchange: str
    queue: str
    tmp: Path
    policies: list[RetryPolicy] = field(default_factory=lambda: [RetryPolicy()])

    def emitter(self, **settings: object) -> Emitter:
        """An emitter publishing (confirmed) through this test's topology."""
        return Emitter(settings=load_settings(url=self.url, config=self.config, **settings))

    def ready(self) -> int:
        """Messages ready in the work queue."""
        return self._declare().method.message_count

    def consumers(self) -> int:
        """Consumers of the work queue."""
        return self._declare().method.consumer_count

    def depth(self, queue: str) -> int:
        """Messages ready in ``queue`` (one of the work queue's delay or dead-letter queues)."""
        with _channel(self.url) as channel:
            return int(channel.queue_declare(queue, passive=True).method.message_count)

    def drain(self) -> list[str]:
        """Take every ready message off the work queue; their record ids."""
        ids = []
        with _channel(self.url) as channel:
            while True:
                method, properties, _body = channel.basic_get(self.queue, auto_ack=True)
                if method is None:
                    return ids
                ids.append(properties.message_id)

    def _declare(self) -> pika.frame.Method:
        with _channel(self.url) as channel:
            return channel.queue_declare(self.queue, passive=True)


@contextlib.contextmanager
def _channel(url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    params = pika.URLParameters(url)
    params.client_properties = {"connection_name": "logbus-e2e-worker-admin"}
    connection = pika.BlockingConnection(params)
    try:
        yield connection.channel()
    finally:
        with contextlib.suppress(Exception):
            connection.close()


@pytest.fixture
def broker_url(request: pytest.FixtureRequest) -> str:
    """The shared broker; the private node for a test marked ``faults`` (one that restarts
    or cuts its broker, which no test may do to the shared one)."""
    if request.node.get_closest_marker("faults") is not None:
        private: PrivateBroker = request.getfixturevalue("healthy_private_broker")
        return private.url
    return str(request.getfixturevalue("amqp_url"))


@pytest.fixture
def setup(broker_url: str, tmp_path: Path) -> Iterator[Setup]:
    """A unique durable topology in a TOML file; its exchange and queue deleted afterwards."""
    prefix = f"test-worker-{secrets.token_hex(4)}"
    exchange, queue = f"{prefix}.topic", f"{prefix}.tasks"
    topology = Topology(
        exchanges=(Exchange(name=exchange, type="topic"),),
        queues=(Queue(name=queue),),
        bindings=(Binding(source=exchange, destination=queue, routing_key="#"),),
        emit=(EmitTarget(exchange=exchange),),
    )
    config = tmp_path / "logbus.toml"
    config.write_text(dumps(topology), encoding="utf-8")
    made = Setup(broker_url, config, exchange, queue, tmp_path)
    yield made
    with contextlib.suppress(Exception), _channel(broker_url) as channel:
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
    with connect(broker_url) as transport:  # what the workers declared for their retries
        for policy in made.policies:
            remove_retry_queues(transport, queue, policy)


@dataclass
class WorkerProcess:
    """A running ``logbus worker``; its stderr is collected line by line."""

    proc: subprocess.Popen[str]
    output: Path | None
    lines: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("logbus worker: consuming"):
                self.started.set()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def records(self) -> list[str]:
        """The ids of the records in its jsonl file (each whole line must be valid JSON).

        The worker may be writing while this reads: a last line without its newline is
        still being written, so it is left for the next read."""
        if self.output is None or not self.output.exists():
            return []
        text = self.output.read_text(encoding="utf-8")
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line)["id"] for line in whole.splitlines()]

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, and the exit status."""
        return self.signal(signal.SIGTERM, timeout)

    def signal(self, number: int, timeout: float = 15) -> int:
        """Send signal ``number``; the exit status once the process and its stderr ended."""
        self.proc.send_signal(number)
        status = self.proc.wait(timeout)
        if self.reader is not None:
            self.reader.join(timeout)  # every line of stderr is in self.lines now
        return status


@pytest.fixture
def start(setup: Setup) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``logbus worker --config ... --queue ... ARGS``; waits for its ready line."""
    running: list[WorkerProcess] = []

    def run(*args: str, sink: str | None = None, wait: bool = True) -> WorkerProcess:
        output = None
        if sink is None:
            output = setup.tmp / f"worker-{len(running) + 1}.jsonl"
            sink = f"jsonl:{output}"
        command = [sys.executable, "-m", "logbus", "worker", "--config", str(setup.config)]
        proc = subprocess.Popen(
            [*command, "--queue", setup.queue, "--sink", sink, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "LOGBUS_URL": setup.url},
        )
        worker = WorkerProcess(proc, output)
        running.append(worker)
        worker.reader = threading.Thread(target=worker.read, daemon=True)
        worker.reader.start()
        if wait and not worker.started.wait(15):
            proc.kill()
            proc.wait(5)
            raise AssertionError(f"the worker never became ready:\n{worker.stderr}")
        return worker

    yield run
    for worker in running:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(10)


class Publisher:
    """Emits records on a thread in small confirmed batches until stopped; counts what counts.

    ``confirmed`` holds the ids the broker confirmed; the ids of a batch that
    raised are in ``unconfirmed`` (those may or may not have arrived).
    """

    def __init__(self, setup: Setup, batch: int = 20, **settings: object) -> None:
        self.setup = setup
        self.batch = batch
        self.settings = settings
        self.confirmed: list[str] = []
        self.unconfirmed: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the publisher did not stop"

    def _run(self) -> None:
        n = 0
        with self.setup.emitter(**self.settings) as emitter:
            while not self._stop.is_set():
                batch = [
                    LogRecord.from_key("daemon.info", f"record {n + i}") for i in range(self.batch)
                ]
                n += self.batch
                try:
                    emitter.emit_many(batch)
                except TransportError as exc:
                    self.errors.append(str(exc))
                    self.unconfirmed += [r.id for r in batch]
                else:
                    self.confirmed += [r.id for r in batch]
                self._stop.wait(0.01)  # a steady stream rather than a flood


def emit(setup: Setup, count: int) -> list[str]:
    """Publish ``count`` records, confirmed; their ids."""
    batch = [LogRecord.from_key("kern.info", f"record {i}") for i in range(count)]
    with setup.emitter() as emitter:
        emitter.emit_many(batch)
    return [r.id for r in batch]


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the command line ---------------------------------------------------------------------


def test_help_lists_the_options_and_examples(logbus):
    """--help documents every option and shows examples."""
    proc = logbus("worker", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--queue", "--sink", "--prefetch", "--concurrency", "--url", "--config"):
        assert option in proc.stdout
    assert "Examples:" in proc.stdout
    assert "logbus worker --sink jsonl:" in proc.stdout


def test_an_unreachable_broker_exits_69_with_one_line(logbus, tmp_path):
    """No broker at the URL: exit 69 and exactly one error line, no traceback."""
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/%2F"
    proc = logbus("worker", "--url", url, "--sink", f"jsonl:{tmp_path / 'x.jsonl'}", timeout=30)
    assert proc.returncode == 69, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("logbus: error: cannot reach RabbitMQ")
    assert "guest:guest" not in proc.stderr


def test_an_unknown_sink_exits_78_suggesting_the_closest(logbus):
    """A misspelt sink is a configuration error naming the sink it probably meant."""
    proc = logbus("worker", "--sink", "jsnol:/tmp/x.jsonl", "--url", "amqp://nowhere:1/")
    assert proc.returncode == 78, proc.stderr
    assert "did you mean 'jsonl'?" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_bad_concurrency_is_a_usage_error(logbus):
    """--concurrency 0 exits 2."""
    proc = logbus("worker", "--concurrency", "0")
    assert proc.returncode == 2
    assert "concurrency" in proc.stderr


# -- consuming ------------------------------------------------------------------------------


def test_records_land_in_the_jsonl_file_and_sigterm_exits_0(setup, start):
    """Every published record becomes one line; SIGTERM exits 0 with a summary line."""
    worker = start("--concurrency", "4")
    assert "(prefetch 2000, 4 threads) → jsonl:" in worker.stderr
    sent = emit(setup, 300)
    wait_until(lambda: len(worker.records()) >= 300, 15, "300 lines")
    assert worker.terminate() == 0, worker.stderr
    assert sorted(worker.records()) == sorted(sent)
    assert (
        "logbus worker: stopped: 300 handled, 0 failed (0 retried, 0 dead-lettered), "
        "0 undecodable" in worker.stderr
    )
    assert setup.ready() == 0


def test_sigint_drains_and_exits_0_like_sigterm(setup, start):
    """Ctrl-C (SIGINT) stops the worker gracefully too: exit 0 and a summary line."""
    worker = start()
    sent = emit(setup, 20)
    wait_until(lambda: len(worker.records()) == 20, 10, "20 lines")
    assert worker.signal(signal.SIGINT) == 0, worker.stderr
    assert sorted(worker.records()) == sorted(sent)
    assert "logbus worker: stopped: 20 handled" in worker.stderr
    assert "Traceback" not in worker.stderr


def test_a_queue_missing_from_the_topology_is_declared_durable(setup, start, amqp_url):
    """--queue naming a queue the topology lacks: the worker declares it durable and consumes."""
    name = f"{setup.queue}.extra"
    try:
        worker = start("--queue", name)  # the last --queue wins
        with _channel(amqp_url) as channel:
            assert channel.queue_declare(name, passive=True).method.consumer_count == 1
            channel.basic_publish("", name, LogRecord.from_key("kern.info", "x").to_bytes())
        wait_until(lambda: len(worker.records()) == 1, 10, "the record")
        assert worker.terminate() == 0
        with _channel(amqp_url) as channel:  # durable: redeclaring it durable agrees
            channel.queue_declare(name, durable=True)
    finally:
        with _channel(amqp_url) as channel:
            channel.queue_delete(name)
        with connect(amqp_url) as transport:
            remove_retry_queues(transport, name, RetryPolicy())


def test_two_equal_workers_share_a_steady_stream_evenly(setup, start):
    """Two workers on one queue each get a fair share of a stream, and no record twice.

    RabbitMQ gives each record to the next consumer in turn that has prefetch
    room; a stream the workers keep up with therefore splits about evenly. (A
    burst published up front would split by speed instead: that is fair too,
    and the stuck-worker test below checks it from the other side.)
    """
    first, second = start(), start()
    wait_until(lambda: setup.consumers() == 2, 10, "both consumers")
    with Publisher(setup, batch=5) as publisher:
        wait_until(lambda: len(first.records()) + len(second.records()) >= 400, 20, "400 records")
    sent = publisher.confirmed
    wait_until(lambda: len(first.records()) + len(second.records()) >= len(sent), 10, "the rest")
    assert first.terminate() == 0 and second.terminate() == 0
    a, b = first.records(), second.records()
    assert sorted(a + b) == sorted(sent)
    assert min(len(a), len(b)) >= 0.35 * len(sent), (len(a), len(b))


@pytest.mark.parametrize(("args", "held"), [(("--prefetch", "1"), 1), ((), PREFETCH_FLOOR)])
def test_a_stuck_worker_holds_only_its_prefetch(setup, start, args, held):
    """A worker whose sink blocks keeps just `prefetch` records; another worker does the rest.

    The stuck worker's sink is a FIFO whose pipe buffer the test has filled and
    never reads, so its first write blocks for good: the honest slowest worker.
    With --prefetch 1 it holds one record; with the default (2000 for one
    thread), two thousand. When it is killed, those come back to the other worker.
    """
    fifo = setup.tmp / "stuck.fifo"
    os.mkfifo(fifo)
    holder = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a reader that never reads
    total = held + 200
    try:
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(holder, b"x" * 65536)
        stuck = start(*args, sink=f"jsonl:{fifo}")
        sent = emit(setup, total)
        wait_until(lambda: setup.ready() == total - held, 10, f"the stuck worker to take {held}")
        fast = start()
        wait_until(lambda: len(fast.records()) == total - held, 15, "the rest at the fast worker")
        assert setup.ready() == 0
        stuck.proc.kill()
        stuck.proc.wait(10)
        wait_until(lambda: len(fast.records()) == total, 15, "the stuck worker's records")
        assert sorted(fast.records()) == sorted(sent)
        assert fast.terminate() == 0
    finally:
        os.close(holder)


# -- stopping and dying -----------------------------------------------------------------------


def test_sigterm_mid_stream_loses_nothing_and_duplicates_nothing(setup, start):
    """SIGTERM while records flow: exit 0; each record is in the file or the queue, once."""
    worker = start("--concurrency", "2")
    with Publisher(setup) as publisher:
        wait_until(lambda: len(worker.records()) >= 200, 15, "200 records handled")
        assert worker.terminate() == 0, worker.stderr
    assert publisher.errors == []
    handled, queued = worker.records(), setup.drain()
    assert len(queued) > 0, "the stream ended before SIGTERM: not a mid-stream stop"
    assert len(set(handled)) == len(handled)
    assert set(handled).isdisjoint(queued)
    assert sorted(handled + queued) == sorted(publisher.confirmed)
    assert f"stopped: {len(handled)} handled" in worker.stderr


def test_sigkill_mid_stream_gives_the_unacked_records_to_the_other_worker(setup, start):
    """A worker killed mid-stream: its unacked records reach the other one; none is lost."""
    victim, survivor = start(), start()
    wait_until(lambda: setup.consumers() == 2, 10, "both consumers")
    with Publisher(setup) as publisher:
        wait_until(lambda: len(victim.records()) >= 100, 15, "the victim at work")
        victim.proc.kill()
        victim.proc.wait(10)
        wait_until(lambda: len(survivor.records()) >= 200, 15, "the survivor alone at work")
    assert publisher.errors == []
    confirmed = set(publisher.confirmed)
    wait_until(lambda: set(victim.records() + survivor.records()) >= confirmed, 15, "every record")
    assert survivor.terminate() == 0
    seen = Counter(victim.records() + survivor.records())
    assert set(seen) == confirmed
    duplicates = sum(n - 1 for n in seen.values())
    # At most what the victim held unacked: its prefetch (100 for one thread).
    assert duplicates <= 100, duplicates


# -- the broker restarting --------------------------------------------------------------------


def answers(url: str) -> bool:
    """Whether the broker at ``url`` completes an AMQP handshake now."""
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = params.stack_timeout = 2
    params.client_properties = {"connection_name": "logbus-e2e-worker-probe"}
    try:
        pika.BlockingConnection(params).close()
    except Exception:
        return False
    return True


@pytest.mark.faults
def test_a_broker_restart_loses_no_confirmed_record(setup, start, healthy_private_broker):
    """The broker restarts while records flow: every confirmed record still reaches the file."""
    worker = start("--concurrency", "2")
    with Publisher(setup, confirm_timeout=10) as publisher:
        wait_until(lambda: len(worker.records()) >= 100, 15, "records before the restart")
        healthy_private_broker.restart()
        wait_until(lambda: answers(setup.url), 20, "the broker to answer AMQP again")
        before = len(publisher.confirmed)
        wait_until(lambda: len(publisher.confirmed) >= before + 100, 20, "publishing again")
    confirmed = set(publisher.confirmed)
    wait_until(lambda: set(worker.records()) >= confirmed, 20, "every confirmed record")
    assert worker.proc.poll() is None, worker.stderr
    assert worker.terminate() == 0, worker.stderr
    assert set(worker.records()) <= confirmed | set(publisher.unconfirmed)


# -- retries, metrics, logs -----------------------------------------------------------------


def test_help_documents_retries_metrics_and_the_log_format(logbus):
    """--help shows the retry, metrics and log options with an example of each."""
    proc = logbus("worker", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in (
        "--max-attempts",
        "--retry-delay",
        "--retry-backoff",
        "--retry-max-delay",
        "--no-retry",
        "--metrics-port",
        "--metrics-host",
        "--log-format",
    ):
        assert option in proc.stdout
    assert "logbus worker --max-attempts 8 --retry-delay 500ms" in proc.stdout
    assert "logbus worker --metrics-port 9108 --log-format json" in proc.stdout


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("--retry-delay", "soon"), "--retry-delay 'soon' is not a duration"),
        (("--retry-delay", "10s", "--retry-max-delay", "1s"), "retry max delay must be between"),
        (("--no-retry", "--max-attempts", "3"), "--no-retry and --max-attempts 3 contradict"),
    ],
)
def test_an_impossible_retry_policy_is_a_usage_error(logbus, args, problem):
    """A retry option that makes no policy: exit 2 and one line naming it."""
    proc = logbus("worker", *args, "--url", "amqp://nowhere:1/")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert problem in line


def test_sigkill_mid_batch_with_retries_in_play_loses_nothing(setup, start, monkeypatch):
    """Every record fails once and waits in the delay queue; a worker killed meanwhile
    loses none: its unacked records are redelivered, the delayed ones come back."""
    gate = setup.tmp / "gate"
    gate.mkdir()
    (gate / "fail-first").touch()  # every record goes through the delay queue once
    (gate / "pause").write_text("0.05")  # and a batch takes a while: the kill lands in one
    plugin = setup.tmp / "plugin"
    plugin.mkdir()
    monkeypatch.setenv("PYTHONPATH", install_gate_plugin(plugin)["PYTHONPATH"])
    setup.policies.append(RetryPolicy(delay=0.2))
    args = ("--retry-delay", "200ms", "--concurrency", "2")
    victim = start(*args, sink=f"gate:{gate}")
    sent = emit(setup, 200)
    wait_until(lambda: len(set(gate_lines(gate, "stored"))) >= 40, 20, "retried records stored")
    victim.proc.kill()
    victim.proc.wait(10)
    assert len(set(gate_lines(gate, "stored"))) < 200, "all were done before the kill"
    survivor = start(*args, sink=f"gate:{gate}")
    wait_until(lambda: set(gate_lines(gate, "stored")) >= set(sent), 30, "every record stored")
    delayed = f"{setup.queue}.retry.200"
    wait_until(lambda: setup.ready() == setup.depth(delayed) == 0, 15, "nothing left to do")
    assert survivor.terminate() == 0, survivor.stderr
    assert set(gate_lines(gate, "stored")) == set(sent)  # duplicates perhaps, strangers never
    assert setup.depth(f"{setup.queue}.dead") == 0


def test_metrics_port_serves_counts_and_health(setup, start):
    """--metrics-port 0: the ready line names the URL; /metrics counts, /healthz says ok."""
    worker = start("--metrics-port", "0")
    found = re.search(r"metrics on (http://127\.0\.0\.1:\d+/)metrics", worker.stderr)
    assert found is not None, worker.stderr
    sent = emit(setup, 3)
    wait_until(lambda: len(worker.records()) == 3, 10, "three records")
    with urllib.request.urlopen(found[1] + "metrics", timeout=10) as answer:
        exposition = answer.read().decode()
    written = [line for line in exposition.splitlines() if line.startswith("logbus_worker_written")]
    assert written == [
        f'logbus_worker_written_total{{queue="{setup.queue}",sink="jsonl:{worker.output}"}} 3.0'
    ]
    with urllib.request.urlopen(found[1] + "healthz", timeout=10) as answer:
        health = json.loads(answer.read())
    assert (health["status"], health["consuming"], health["queue"]) == ("ok", True, setup.queue)
    assert worker.terminate() == 0
    assert sorted(worker.records()) == sorted(sent)


def test_log_format_json_writes_every_event_as_a_json_line(setup, start):
    """--log-format json: stderr is JSON lines, from worker.started to worker.stopped."""
    worker = start("--log-format", "json", wait=False)

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in list(worker.lines)]

    wait_until(lambda: any(e["event"] == "worker.started" for e in events()), 15, "started")
    emit(setup, 2)
    wait_until(lambda: len(worker.records()) == 2, 10, "two records")
    assert worker.terminate() == 0, worker.stderr
    logged = events()  # every line is JSON, or this raises
    [started] = [e for e in logged if e["event"] == "worker.started"]
    assert (started["queue"], started["level"], started["logger"]) == (
        setup.queue,
        "info",
        "logbus.worker",
    )
    [stopped] = [e for e in logged if e["event"] == "worker.stopped"]
    assert stopped["handled"] == 2


# -- stopping within a bound ------------------------------------------------------------------


def _gate(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``gate`` sink directory (see tests/e2e/test_dlq.py), its plugin found by workers."""
    gate = setup.tmp / "gate"
    gate.mkdir()
    plugin = setup.tmp / "plugin"
    plugin.mkdir()
    monkeypatch.setenv("PYTHONPATH", install_gate_plugin(plugin)["PYTHONPATH"])
    return gate


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_sigterm_with_a_slow_sink_says_what_it_does_and_exits_0_within_the_timeout(
    setup, start, monkeypatch, pool
):
    """A sink stuck in a write: SIGTERM says what is drained and returned, then at the
    --shutdown-timeout gives the stuck batch back too and exits 0; nothing is lost."""
    gate = _gate(setup, monkeypatch)
    (gate / "pause").write_text("120")  # each write takes two minutes: far past any bound
    worker = start("--shutdown-timeout", "1s", "--pool", pool, sink=f"gate:{gate}")
    sent = emit(setup, 500)
    wait_until(lambda: setup.ready() == 0, 10, "the worker to prefetch every record")
    # The proc.wait deadline is generous; what matters is that the worker ends by itself.
    assert worker.signal(signal.SIGTERM, timeout=60) == 0, worker.stderr
    found = re.search(r"draining ([\d,]+) in flight, returning ([\d,]+) prefetched", worker.stderr)
    assert found is not None, worker.stderr
    in_flight, returned = (int(group.replace(",", "")) for group in found.groups())
    assert in_flight + returned == 500, worker.stderr
    assert "Ctrl-C again to stop now" in worker.stderr
    assert "shutdown timeout" in worker.stderr
    stored = set(gate_lines(gate, "stored"))
    wait_until(lambda: setup.ready() + len(stored) >= 500, 10, "every record back or stored")
    back = set(setup.drain())
    assert back | stored == set(sent)  # each record stored or back in the queue: none lost


def test_a_flood_of_failing_records_is_summarised_not_logged_line_by_line(
    setup, start, monkeypatch
):
    """2,000 records the sink refuses: a few warning lines whose counts add up to 2,000,
    one of them saying how many more there were, rather than a line per record."""
    gate = _gate(setup, monkeypatch)
    (gate / "broken").touch()  # every write fails, recoverably
    worker = start("--no-retry", sink=f"gate:{gate}")
    emit(setup, 2000)
    wait_until(lambda: setup.depth(f"{setup.queue}.dead") == 2000, 30, "2,000 dead letters")
    assert worker.terminate() == 0, worker.stderr
    failed = [line for line in worker.lines if "worker.sink_failed" in line]
    assert len(failed) < 20, worker.stderr[-2000:]
    more = [int(found[1]) for line in failed if (found := re.search(r" more=(\d+)", line))]
    assert any("more like this in the last" in line for line in failed), failed
    assert len(failed) - len(more) + sum(more) == 2000, failed


def test_a_second_sigterm_stops_at_once_and_the_broker_gets_every_record_back(
    setup, start, monkeypatch
):
    """While draining a stuck sink, a second SIGTERM ends the worker now; what it held
    returns to the queue when its connection closes, so all 300 are ready again."""
    gate = _gate(setup, monkeypatch)
    (gate / "pause").write_text("120")
    worker = start("--shutdown-timeout", "60s", sink=f"gate:{gate}")
    sent = emit(setup, 300)
    wait_until(lambda: setup.ready() == 0, 10, "the worker to prefetch every record")
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "Ctrl-C again to stop now" in worker.stderr, 10, "the draining line")
    assert worker.signal(signal.SIGTERM, timeout=30) != 0  # stopped now, not after 60 s
    wait_until(lambda: setup.ready() == 300, 10, "every record back in the queue")
    assert sorted(setup.drain()) == sorted(sent)
