"""Worker pools on ``memory://``: threads and real worker processes, CPU- and I/O-bound sinks.

The sink under test is :class:`ProbeSink`, installed as the ``probe`` sink plugin
(a ``logbus.sinks`` entry point in a dist-info directory put on ``sys.path``, which
spawned worker processes inherit), so that worker processes load it from its spec
``probe:DIR`` exactly as they would an installed plugin. Each record's message
says what the sink does with it; every record stored is one line ``pid ident id``
in ``DIR/stored``, so the test sees which process (and thread) wrote it.

The gevent pool's own tests are in ``tests/gevent/`` (a monkey-patched process);
against RabbitMQ, in ``tests/integration/test_pools.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from logbus.errors import ConfigError
from logbus.message import Message, Properties
from logbus.pools import GeventPool, gevent_patched
from logbus.record import LogRecord
from logbus.transports import Transport, connect
from logbus.worker import Worker
from tests.support import RunningWorker

DEADLINE = 20.0
REPO = Path(__file__).resolve().parents[2]


# -- the probe sink -----------------------------------------------------------------------


class ProbeSink:
    """A sink that does what each record's message says, and logs what it stored.

    ``store``: store. ``cpu``: zlib-compress the body at level 9, twenty times, then
    store. ``sleep S``: note the id in ``DIR/started``, wait S seconds (cooperatively
    when gevent patched the process), then store. ``meet N``: wait until N records
    are being written at once (by other threads, processes or greenlets), then store.
    ``hang-once``: the first attempt in DIR writes its pid to ``DIR/hung`` and hangs
    for a minute; later ones store. ``gate``: touch ``DIR/writing``, wait until
    ``DIR/open`` exists, then store. ``fail``: a non-recoverable error.
    ``oserror-once``: a recoverable error on the first attempt, then store.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @classmethod
    def from_spec(cls, arg: str | None) -> ProbeSink:
        """The sink for ``probe:DIR``."""
        if not arg:
            raise ConfigError("sink probe needs a directory: probe:DIR")
        return cls(arg)

    def open(self) -> None:
        """Note the opening process; a DIR that does not exist is a configuration error."""
        if not self.directory.is_dir():
            raise ConfigError(f"sink probe: no directory {self.directory}")
        self._append("opened", f"{os.getpid()}\n")

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Act on each record as its message says; one result per record."""
        return [self._one(record) for record in batch]

    def close(self) -> None:
        """Note the closing process."""
        self._append("closed", f"{os.getpid()}\n")

    def _one(self, record: LogRecord) -> Exception | None:
        word, _, arg = record.message.partition(" ")
        if word == "cpu":
            data = record.to_bytes() * 64
            for _ in range(20):
                zlib.compress(data, 9)
        elif word == "sleep":
            self._append("started", f"{record.id}\n")
            time.sleep(float(arg))
        elif word == "meet":
            meeting = self.directory / "meet"
            meeting.mkdir(exist_ok=True)
            (meeting / record.id).touch()
            if not _until(lambda: len(os.listdir(meeting)) >= int(arg), 10):
                return ValueError(f"probe: only {len(os.listdir(meeting))} of {arg} met")
        elif word == "hang-once" and self._first(self.directory / "hung"):
            time.sleep(60)
        elif word == "gate":
            (self.directory / "writing").touch()
            _until((self.directory / "open").exists, 30)
        elif word == "fail":
            return ValueError("probe: refused")
        elif word == "oserror-once" and self._first(self.directory / f"failed-{record.id}"):
            return OSError("probe: try again")
        self._append("stored", f"{os.getpid()} {threading.get_ident()} {record.id}\n")
        return None

    def _first(self, marker: Path) -> bool:
        """Whether this is the first attempt: creates ``marker`` (holding the pid) if so."""
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    def _append(self, name: str, line: str) -> None:
        fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def _until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    if not _until(condition, timeout):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass(frozen=True)
class Stored:
    """One line of ``DIR/stored``."""

    pid: int
    ident: int
    id: str


def stored(directory: Path) -> list[Stored]:
    """What the probe sink stored in ``directory``, in order."""
    path = directory / "stored"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [Stored(int(p), int(i), r) for p, i, r in (line.split() for line in lines)]


def started(directory: Path) -> list[str]:
    """The ids of the records whose ``sleep`` began."""
    path = directory / "started"
    return path.read_text().split() if path.exists() else []


def pids(directory: Path, name: str) -> list[int]:
    """The pids in ``DIR/opened`` or ``DIR/closed``."""
    path = directory / name
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie not yet reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="session")
def probe_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Install ProbeSink as the ``probe`` sink plugin; the environment for subprocesses."""
    root = tmp_path_factory.mktemp("plugins")
    info = root / "logbus_probe-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: logbus-probe\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[logbus.sinks]\nprobe = tests.integration.test_process_pool:ProbeSink.from_spec\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        patch.syspath_prepend(str(REPO))
        yield {"PYTHONPATH": os.pathsep.join([str(root), str(REPO)])}


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    """A directory for this test's probe sink."""
    directory = tmp_path / "probe"
    directory.mkdir()
    return directory


@pytest.fixture
def transport() -> Iterator[Transport]:
    """A connection to this test's own memory:// broker, with a durable queue ``tasks``."""
    with connect(f"memory://pools-{os.urandom(4).hex()}") as opened:
        opened.declare_queue("tasks")
        yield opened


def publish(transport: Transport, messages: Sequence[str], queue: str = "tasks") -> list[str]:
    """Publish one record per message to ``queue``; their ids, in order."""
    records = [LogRecord.from_key("kern.info", text) for text in messages]
    transport.publish_many(Message(r.to_bytes(), r.to_properties(), "", queue) for r in records)
    return [r.id for r in records]


class Running(RunningWorker):
    """A worker on a thread of its own, given this module's deadline to stop."""

    timeout = DEADLINE


def ready(transport: Transport, queue: str = "tasks") -> int:
    """Messages ready in ``queue``."""
    return transport.declare_queue(queue, passive=True).message_count


# -- the thread pool ------------------------------------------------------------------------


def test_thread_pool_stores_every_record_of_a_cpu_bound_sink_once(transport, probe_dir):
    """40 CPU-heavy records through two threads: each stored once, all acked."""
    sent = publish(transport, ["cpu"] * 40)
    running = Running(Worker(transport, "tasks", ProbeSink(probe_dir), concurrency=2))
    wait_until(lambda: len(stored(probe_dir)) == 40, DEADLINE, "40 records stored")
    summary = running.stop()
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    assert {s.pid for s in stored(probe_dir)} == {os.getpid()}
    assert (summary.handled, summary.failed, summary.replaced) == (40, 0, 0)
    assert ready(transport) == 0


def test_thread_pool_writes_an_io_bound_sink_on_every_thread_at_once(transport, probe_dir):
    """Four waiting records are written by four threads together (they meet)."""
    publish(transport, ["meet 4"] * 4)
    sink = ProbeSink(probe_dir)
    running = Running(Worker(transport, "tasks", sink, concurrency=4, prefetch=4))
    wait_until(lambda: len(stored(probe_dir)) == 4, DEADLINE, "4 records stored")
    summary = running.stop()
    assert len({s.ident for s in stored(probe_dir)}) == 4
    assert (summary.handled, summary.failed) == (4, 0)


def test_thread_pool_opens_a_sink_given_by_its_spec(transport, probe_plugin, probe_dir):
    """Worker(..., 'probe:DIR') loads and opens the sink in this process, once."""
    publish(transport, ["store"])
    running = Running(Worker(transport, "tasks", f"probe:{probe_dir}"))
    wait_until(lambda: len(stored(probe_dir)) == 1, DEADLINE, "the record")
    running.stop()
    assert pids(probe_dir, "opened") == pids(probe_dir, "closed") == [os.getpid()]


# -- the process pool -------------------------------------------------------------------------


def process_worker(transport: Transport, directory: Path, **options: Any) -> Worker:
    """A process-pool worker on ``tasks`` writing to the probe sink in ``directory``."""
    return Worker(transport, "tasks", f"probe:{directory}", pool="process", **options)


def test_process_pool_stores_every_record_of_a_cpu_bound_sink_once(
    transport, probe_plugin, probe_dir
):
    """40 CPU-heavy records through two worker processes: each stored once, all acked."""
    sent = publish(transport, ["cpu"] * 40)
    running = Running(process_worker(transport, probe_dir, concurrency=2))
    wait_until(lambda: len(stored(probe_dir)) == 40, DEADLINE, "40 records stored")
    summary = running.stop()
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    assert os.getpid() not in {s.pid for s in stored(probe_dir)}
    assert (summary.handled, summary.failed, summary.requeued) == (40, 0, 0)
    assert ready(transport) == 0


def test_process_pool_writes_an_io_bound_sink_in_every_process_at_once(
    transport, probe_plugin, probe_dir
):
    """Three waiting records are written by three worker processes together (they meet)."""
    publish(transport, ["meet 3"] * 3)
    running = Running(process_worker(transport, probe_dir, concurrency=3, prefetch=3))
    wait_until(lambda: len(stored(probe_dir)) == 3, DEADLINE, "3 records stored")
    summary = running.stop()
    writers = {s.pid for s in stored(probe_dir)}
    assert len(writers) == 3 and os.getpid() not in writers
    assert writers == set(pids(probe_dir, "opened"))
    assert summary.handled == 3


def test_each_worker_process_opens_and_closes_its_own_sink(transport, probe_plugin, probe_dir):
    """Two worker processes: two opens, two closes, in two processes other than this one."""
    running = Running(process_worker(transport, probe_dir, concurrency=2))
    opened = pids(probe_dir, "opened")
    running.stop()
    assert len(set(opened)) == 2 and os.getpid() not in opened
    assert sorted(pids(probe_dir, "closed")) == sorted(opened)


def test_a_sigkilled_worker_process_loses_nothing_and_is_replaced(
    transport, probe_plugin, probe_dir
):
    """SIGKILL mid-batch: its records are requeued and stored by a new process; counted."""
    sent = publish(transport, ["hang-once"] + ["sleep 0.01"] * 30)
    running = Running(process_worker(transport, probe_dir, concurrency=2))
    hung = probe_dir / "hung"
    wait_until(lambda: hung.exists() and hung.read_text() != "", DEADLINE, "the hanging write")
    victim = int(hung.read_text())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: {s.id for s in stored(probe_dir)} == set(sent), DEADLINE, "every record")
    summary = running.stop()
    assert victim not in {s.pid for s in stored(probe_dir)}
    assert summary.handled == 31
    assert summary.requeued >= 1 and summary.replaced == 1
    assert "; 1 worker process died and was replaced, " in str(summary)
    assert ready(transport) == 0


def test_a_sigtermed_worker_process_finishes_its_batch_then_is_replaced(
    transport, probe_plugin, probe_dir
):
    """SIGTERM mid-write: the worker process stores and acks its record, exits, is replaced."""
    publish(transport, ["gate"])
    running = Running(process_worker(transport, probe_dir))
    [first] = pids(probe_dir, "opened")
    wait_until((probe_dir / "writing").exists, DEADLINE, "the worker process writing")
    os.kill(first, signal.SIGTERM)
    (probe_dir / "open").touch()
    wait_until(lambda: running.worker.summary().handled == 1, DEADLINE, "the ack")
    wait_until(lambda: not alive(first), DEADLINE, "the worker process to exit")
    publish(transport, ["store"])
    wait_until(lambda: len(stored(probe_dir)) == 2, DEADLINE, "the next record")
    summary = running.stop()
    before, after = stored(probe_dir)
    assert before.pid == first and after.pid != first
    assert (summary.handled, summary.replaced) == (2, 1)
    assert ready(transport) == 0


def test_a_record_is_acked_only_after_the_worker_process_reported_it(
    transport, probe_plugin, probe_dir
):
    """While the worker process writes, the record is unacked: a closed connection requeues it."""
    consumer_side = connect(transport.url)
    publish(transport, ["gate"])
    running = Running(process_worker(consumer_side, probe_dir))
    wait_until((probe_dir / "writing").exists, DEADLINE, "the worker process writing it")
    assert ready(transport) == 0  # taken (and this applies any settlement made so far)
    consumer_side.close()  # the worker's session: what it has not acked is requeued
    wait_until(lambda: ready(transport) == 1, DEADLINE, "the unacked record back")
    (probe_dir / "open").touch()
    wait_until(lambda: len(stored(probe_dir)) == 1, DEADLINE, "the write to finish")
    running.stop()
    assert ready(transport) == 1  # its ack came too late: the record waits for another worker


def test_an_undecodable_message_is_rejected_by_the_process_pool(transport, probe_plugin, probe_dir):
    """A body that is not a record is decoded in the worker process and rejected."""
    transport.publish(Message(b"[1, 2]", Properties(message_id="bad"), "", "tasks"))
    publish(transport, ["store"])
    running = Running(process_worker(transport, probe_dir))
    wait_until(lambda: running.worker.summary().undecodable == 1, DEADLINE, "the rejection")
    wait_until(lambda: len(stored(probe_dir)) == 1, DEADLINE, "the good record")
    summary = running.stop()
    assert (summary.handled, summary.undecodable) == (1, 1)
    assert ready(transport) == 0


def test_a_failure_for_good_in_a_worker_process_rejects_the_record(
    transport, probe_plugin, probe_dir
):
    """A non-recoverable sink error crosses the pipe and the record is rejected, not retried."""
    publish(transport, ["fail"])
    running = Running(process_worker(transport, probe_dir))
    wait_until(lambda: running.worker.summary().rejected == 1, DEADLINE, "the rejection")
    summary = running.stop()
    assert (summary.handled, summary.failed, summary.rejected) == (0, 1, 1)
    assert ready(transport) == 0


def test_a_recoverable_failure_in_a_worker_process_brings_the_record_back(
    transport, probe_plugin, probe_dir
):
    """An OSError in the worker process requeues the record; its second attempt is stored."""
    [sent] = publish(transport, ["oserror-once"])
    running = Running(process_worker(transport, probe_dir))
    wait_until(lambda: [s.id for s in stored(probe_dir)] == [sent], DEADLINE, "the retry")
    summary = running.stop()
    assert (summary.handled, summary.failed, summary.rejected) == (1, 1, 0)


def test_worker_processes_share_one_jsonl_file_in_whole_lines(transport, tmp_path):
    """Two worker processes appending large batches to one jsonl file never split a line."""
    target = tmp_path / "out.jsonl"
    sent = publish(transport, [f"record {i} " + "x" * 3000 for i in range(400)])
    worker = Worker(transport, "tasks", f"jsonl:{target}", pool="process", concurrency=2)
    running = Running(worker)
    wait_until(lambda: running.worker.summary().handled == 400, DEADLINE, "400 records")
    running.stop()
    lines = target.read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(sent)


def test_stop_lets_worker_processes_finish_their_batch_then_exit(
    transport, probe_plugin, probe_dir
):
    """stop() while a worker process writes: the record is stored and acked, the processes end."""
    publish(transport, ["gate"])
    worker = process_worker(transport, probe_dir, concurrency=2)
    running = Running(worker)
    wait_until((probe_dir / "writing").exists, DEADLINE, "a worker process writing it")
    worker.stop()
    threading.Timer(0.3, (probe_dir / "open").touch).start()  # the write ends after stop()
    summary = running.stop()
    assert summary.handled == 1 and len(stored(probe_dir)) == 1
    assert ready(transport) == 0
    assert not any(alive(pid) for pid in pids(probe_dir, "opened"))
    assert sorted(pids(probe_dir, "closed")) == sorted(pids(probe_dir, "opened"))


def test_a_sink_that_cannot_open_in_the_worker_processes_fails_start(
    transport, probe_plugin, tmp_path
):
    """The worker process's ConfigError (a missing directory) is start()'s, and none is left."""
    worker = process_worker(transport, tmp_path / "missing", concurrency=2)
    with pytest.raises(ConfigError, match="missing"):
        worker.start()
    assert transport.declare_queue("tasks", passive=True).consumer_count == 0


def test_an_unknown_sink_spec_fails_before_any_process_starts(transport):
    """A misspelt sink is a ConfigError naming the closest, raised when the Worker is made."""
    with pytest.raises(ConfigError, match="did you mean 'jsonl'"):
        Worker(transport, "tasks", "jsnol:/tmp/x", pool="process")


def test_the_process_pool_refuses_a_sink_object(transport, probe_dir):
    """A sink object cannot cross to worker processes: the error asks for its spec."""
    with pytest.raises(ConfigError, match="spec"):
        Worker(transport, "tasks", ProbeSink(probe_dir), pool="process")


# -- every pool -----------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["thread", "process", "gevent"])
def test_default_prefetch_follows_the_concurrency_of_every_pool(transport, pool):
    """Two records per thread, process or greenlet, at least two thousand."""
    one = Worker(transport, "tasks", "console", pool=pool, concurrency=1)
    many = Worker(transport, "tasks", "console", pool=pool, concurrency=1024)
    assert (one.prefetch, many.prefetch) == (2000, 2048)


def test_an_unknown_pool_is_a_config_error(transport):
    """pool='fork' names the pools there are."""
    with pytest.raises(ConfigError, match="thread, process, gevent"):
        Worker(transport, "tasks", "console", pool="fork")


@pytest.mark.parametrize("url", ["process://x", "local:///tmp/x.sock"])
def test_the_gevent_pool_refuses_transports_that_block_a_patched_process(url):
    """local:// and process:// are refused for the gevent pool with the URLs that work."""
    with pytest.raises(ConfigError, match="memory://, gevent:// or amqp://"):
        Worker(url, "tasks", "console", pool="gevent")


def test_logbus_worker_pool_gevent_refuses_a_process_url_with_status_78():
    """The command refuses before connecting: one line, exit 78 (configuration)."""
    proc = subprocess.run(
        [sys.executable, "-m", "logbus", "worker", "--pool", "gevent", "--url", "process://x"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "logbus: error: the gevent pool cannot use process://: its connections block a "
        "monkey-patched process; use memory://, gevent:// or amqp://, or another pool"
    ]


def test_the_gevent_pool_refuses_to_open_in_an_unpatched_process(probe_dir):
    """GeventPool never patches on its own: unpatched, open() says how to patch."""
    assert not gevent_patched()
    with pytest.raises(ConfigError, match=r"gevent\.monkey\.patch_all\(\)"):
        GeventPool(ProbeSink(probe_dir)).open(1, "tasks")
    assert not (probe_dir / "opened").exists()


def test_importing_the_worker_pools_and_cli_imports_no_gevent():
    """gevent is loaded only for --pool gevent (or gevent://), never by importing logbus."""
    code = "import sys, logbus.worker, logbus.pools, logbus.cli\nprint('gevent' in sys.modules)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert proc.stdout.strip() == "False"
