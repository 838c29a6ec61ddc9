"""The Worker against a real RabbitMQ through the pika transport: acks, rejects, threads, drain."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from time import monotonic
from urllib.parse import urlsplit

import pytest

from logbus.errors import ConnectionLost, DecodeError
from logbus.message import Message, Properties
from logbus.metrics import WorkerMetrics
from logbus.record import LogRecord
from logbus.transports.amqp import AmqpTransport
from logbus.worker import Worker, default_prefetch
from logbus.worker.retry import (
    ATTEMPTS_HEADER,
    REASON_HEADER,
    RetryPolicy,
    dead_queue,
    remove_retry_queues,
)
from tests.support import RunningWorker, require_or_skip

RABBITMQCTL = shutil.which("rabbitmqctl")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = monotonic() + timeout
    while not condition():
        if monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(0.02)


class ProbeSink:
    """A sink that records every write and behaves as ``behave(record, attempt)`` says.

    ``behave`` returns None to store the record, or an exception to report; it may
    also block, to hold a record in flight.
    """

    def __init__(
        self, behave: Callable[[LogRecord, int], Exception | None] = lambda r, n: None
    ) -> None:
        self.behave = behave
        self.attempts: Counter[str] = Counter()
        self.stored: list[str] = []
        self.opened = self.closed = 0
        self._lock = threading.Lock()

    def open(self) -> None:
        self.opened += 1

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        results: list[Exception | None] = []
        for record in batch:
            with self._lock:
                self.attempts[record.id] += 1
                attempt = self.attempts[record.id]
            outcome = self.behave(record, attempt)
            if outcome is None:
                with self._lock:
                    self.stored.append(record.id)
            results.append(outcome)
        return results

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def admin(amqp_url: str, unique_name: str) -> Iterator[AmqpTransport]:
    """The test's own connection for declaring, publishing and inspecting."""
    with AmqpTransport(amqp_url, connection_name=f"admin-{unique_name}") as transport:
        yield transport


#: The retry policy of these tests' workers: quick, so that retries do not slow them down.
QUICK = RetryPolicy(max_attempts=5, delay=0.05, backoff=2)


@pytest.fixture
def work_queue(admin: AmqpTransport, unique_name: str) -> Iterator[str]:
    """A durable work queue; it and the delay and dead-letter queues its workers declared
    (``<queue>.retry.<ms>``, ``<queue>.dead``) are deleted afterwards."""
    name = f"{unique_name}.tasks"
    admin.declare_queue(name, durable=True)
    yield name
    admin.delete_queue(name)
    for policy in (QUICK, RetryPolicy()):
        remove_retry_queues(admin, name, policy)


def records(count: int, prefix: str = "record") -> list[LogRecord]:
    """``count`` distinct records."""
    return [LogRecord.from_key("kern.info", f"{prefix} {i}") for i in range(count)]


def publish(admin: AmqpTransport, queue: str, batch: Sequence[LogRecord]) -> None:
    """Publish ``batch`` to ``queue`` through the default exchange, confirmed."""
    admin.publish_many(Message(r.to_bytes(), r.to_properties(), "", queue) for r in batch)


def ready(admin: AmqpTransport, queue: str) -> int:
    """How many messages ``queue`` holds ready for delivery."""
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


@pytest.fixture
def broker_ctl(amqp_url: str) -> None:
    """Skip unless ``rabbitmqctl`` on this machine controls the broker under test (fail
    instead under LOGBUS_REQUIRE_BROKER=1)."""
    if RABBITMQCTL is None:
        require_or_skip("rabbitmqctl is not on PATH")
    if urlsplit(amqp_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        require_or_skip("the broker under test is not local: rabbitmqctl cannot reach it")


def test_every_record_is_stored_then_acked_and_the_queue_empties(amqp_url, admin, work_queue):
    """50 records reach the sink once each and leave the queue (nothing unacked)."""
    batch = records(50)
    publish(admin, work_queue, batch)
    sink = ProbeSink()
    running = RunningWorker(Worker(amqp_url, work_queue, sink, concurrency=3))
    wait_until(lambda: len(sink.stored) == 50, 10, "50 records stored")
    summary = running.stop()
    assert sorted(sink.stored) == sorted(r.id for r in batch)
    assert (summary.handled, summary.failed, summary.undecodable) == (50, 0, 0)
    assert ready(admin, work_queue) == 0
    assert (sink.opened, sink.closed) == (1, 1)


def test_batches_finishing_out_of_order_are_all_acked_once(amqp_url, admin, work_queue):
    """1,000 records, 4 threads whose writes end out of order: each stored once, all acked.

    The acks of the threads' batches interleave, and are folded into multiple-acks
    where that says the same: none may be left unacked (it would be back in the
    queue once the worker's connection closed). That none is acked early is the
    unit tests' part (``tests/unit/test_ack_coalescing.py``).
    """
    batch = records(1000)
    publish(admin, work_queue, batch)
    pauses = iter([0.0, 0.004, 0.001, 0.002] * 1000)

    def uneven(record: LogRecord, attempt: int) -> None:
        threading.Event().wait(next(pauses) / 10)

    sink = ProbeSink(uneven)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, concurrency=4, prefetch=200))
    wait_until(lambda: len(sink.stored) == 1000, 30, "1,000 records stored")
    summary = running.stop()
    assert sorted(sink.stored) == sorted(r.id for r in batch)
    assert (summary.handled, summary.failed) == (1000, 0)
    assert ready(admin, work_queue) == 0


def test_a_record_is_not_acked_while_the_sink_is_still_writing_it(
    amqp_url, admin, work_queue, broker_ctl
):
    """While write() runs the broker counts the record unacked; after it returns, gone."""
    release = threading.Event()
    writing = threading.Event()

    def slow(record: LogRecord, attempt: int) -> None:
        writing.set()
        release.wait(10)

    sink = ProbeSink(slow)
    running = RunningWorker(Worker(amqp_url, work_queue, sink))
    publish(admin, work_queue, records(1))
    assert writing.wait(10)
    assert unacked(work_queue) == 1
    release.set()
    wait_until(lambda: unacked(work_queue) == 0, 10, "the ack")
    assert running.stop().handled == 1
    assert ready(admin, work_queue) == 0


def test_a_recoverable_sink_failure_brings_the_record_back(amqp_url, admin, work_queue):
    """A record whose write fails recoverably is requeued, redelivered and then stored."""

    def flaky(record: LogRecord, attempt: int) -> Exception | None:
        return ConnectionLost("the database went away") if attempt <= 2 else None

    sink = ProbeSink(flaky)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK))
    [sent] = records(1)
    publish(admin, work_queue, [sent])
    wait_until(lambda: sink.stored == [sent.id], 10, "the third attempt to store it")
    summary = running.stop()
    assert sink.attempts[sent.id] == 3
    assert (summary.handled, summary.failed, summary.rejected, summary.retried) == (1, 2, 0, 2)
    assert ready(admin, work_queue) == 0
    assert ready(admin, dead_queue(work_queue)) == 0


def test_a_failed_for_good_record_goes_to_the_dead_letter_queue(amqp_url, admin, work_queue):
    """A non-recoverable sink error is not retried: the record is dead-lettered at once."""
    sink = ProbeSink(lambda r, n: DecodeError("the sink cannot store this"))
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK))
    [sent] = records(1)
    publish(admin, work_queue, [sent])
    wait_until(lambda: ready(admin, dead_queue(work_queue)) == 1, 10, "the dead-lettered record")
    summary = running.stop()
    assert sink.attempts[sent.id] == 1
    assert (summary.handled, summary.failed, summary.rejected) == (0, 1, 1)
    assert (summary.retried, summary.dead_lettered) == (0, 1)
    dead = admin.get(dead_queue(work_queue), auto_ack=True)
    assert dead is not None and dead.properties.message_id == sent.id
    assert dead.properties.headers[ATTEMPTS_HEADER] == 1
    assert dead.properties.headers[REASON_HEADER].startswith("not recoverable: DecodeError: ")


def test_an_exception_raised_by_write_counts_as_that_records_failure(amqp_url, admin, work_queue):
    """A sink that raises (a bug) has the record dead-lettered, and the worker keeps going."""
    [bad, good] = records(2)

    def buggy(record: LogRecord, attempt: int) -> None:
        if record.id == bad.id:
            raise ValueError("a bug in the sink")

    sink = ProbeSink(buggy)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK))
    publish(admin, work_queue, [bad, good])
    wait_until(lambda: sink.stored == [good.id], 10, "the good record stored")
    wait_until(lambda: ready(admin, dead_queue(work_queue)) == 1, 10, "the bad one dead-lettered")
    summary = running.stop()
    assert (summary.handled, summary.rejected) == (1, 1)


def test_a_plain_body_reaches_the_sink_as_a_record(amqp_url, admin, work_queue):
    """A body that is not logbus JSON (a JSON array) is stored as a record of its text."""
    seen: list[LogRecord] = []
    sink = ProbeSink(lambda record, attempt: seen.append(record))  # type: ignore[func-returns-value]
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK))
    plain = Message(b'["not", "logbus"]', Properties(message_id="plain-1"), "", work_queue)
    admin.publish(plain)
    [good] = records(1)
    publish(admin, work_queue, [good])
    wait_until(lambda: sink.stored == ["plain-1", good.id], 10, "both records")
    summary = running.stop()
    assert (summary.handled, summary.undecodable, summary.failed) == (2, 0, 0)
    assert (seen[0].message, seen[0].key) == ('["not", "logbus"]', work_queue)


def test_n_threads_hand_n_records_to_the_sink_at_once(amqp_url, admin, work_queue):
    """With concurrency 4, four writes are in progress together (they meet at a barrier)."""
    barrier = threading.Barrier(4, timeout=10)

    def meet(record: LogRecord, attempt: int) -> None:
        barrier.wait()  # BrokenBarrierError (a failure) unless 4 threads write at once

    sink = ProbeSink(meet)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, concurrency=4))
    publish(admin, work_queue, records(8))
    wait_until(lambda: len(sink.stored) == 8, 15, "two rounds of four")
    summary = running.stop()
    assert (summary.handled, summary.failed) == (8, 0)
    assert not barrier.broken


def test_stop_finishes_and_acks_in_flight_records_and_requeues_the_rest(
    amqp_url, admin, work_queue
):
    """stop() while two threads are writing: what they hold is acked, the others requeued."""
    release = threading.Event()
    in_flight = threading.Semaphore(0)

    def held(record: LogRecord, attempt: int) -> None:
        in_flight.release()
        release.wait(10)

    sink = ProbeSink(held)
    # A transport of the test's: it stays open, so what is requeued is the worker's doing.
    with AmqpTransport(amqp_url) as transport:
        running = RunningWorker(Worker(transport, work_queue, sink, concurrency=2, prefetch=10))
        publish(admin, work_queue, records(10))
        for _ in range(2):
            assert in_flight.acquire(timeout=10)
        wait_until(lambda: ready(admin, work_queue) == 0, 10, "all 10 prefetched")
        running.worker.stop()
        threading.Timer(0.3, release.set).start()  # the writes end after stop() was called
        summary = running.join()
        # Each thread finishes the batch it took (at least the record it was writing);
        # nothing is written twice, and everything else goes back to the queue.
        written = len(sink.attempts)
        assert 2 <= summary.handled == written < 10
        assert set(sink.attempts.values()) == {1}
        left = 10 - written
        wait_until(lambda: ready(admin, work_queue) == left, 10, "the unstarted records requeued")


def test_default_prefetch_is_two_per_thread_and_at_least_two_thousand():
    """The default keeps enough in flight: max(2000, 2 x threads)."""
    assert [default_prefetch(n) for n in (1, 4, 1000, 1024)] == [2000, 2000, 2000, 2048]


def test_default_prefetch_is_two_batches_per_thread_for_a_sink_that_fills_batches():
    """With batches of 50 it is 2 x threads x 50, and never past AMQP's 65535."""
    assert [default_prefetch(n, 50) for n in (1, 40)] == [2000, 4000]
    assert default_prefetch(1, 20) == 2000  # two batches of 20 are fewer than the floor
    assert default_prefetch(1024, 1000) == 65535


def test_worker_on_a_shared_transport_leaves_it_open(amqp_url, admin, work_queue):
    """A worker given a transport leaves it open (and its consumer cancelled) when it stops."""
    with AmqpTransport(amqp_url) as transport:
        sink = ProbeSink()
        running = RunningWorker(Worker(transport, work_queue, sink))
        publish(admin, work_queue, records(1))
        wait_until(lambda: len(sink.stored) == 1, 10, "the record")
        running.stop()
        assert transport.declare_queue(work_queue, passive=True).consumer_count == 0


def test_a_deleted_queue_ends_the_worker_with_connection_lost(amqp_url, admin, unique_name):
    """When the broker cancels the consumer (queue deleted), run() raises instead of idling."""
    name = f"{unique_name}.doomed"
    admin.declare_queue(name, durable=False)
    sink = ProbeSink()
    running = RunningWorker(Worker(amqp_url, name, sink, retry=QUICK))
    try:
        wait_until(
            lambda: admin.declare_queue(name, passive=True).consumer_count == 1, 10, "consumer"
        )
        admin.delete_queue(name)
        with pytest.raises(ConnectionLost, match="deleted"):
            running.join(10)
        assert sink.closed == 1
    finally:
        remove_retry_queues(admin, name, QUICK)


@pytest.mark.faults
def test_the_worker_keeps_going_after_the_broker_closes_its_connection(
    healthy_private_broker, unique_name
):
    """A broker-side close: the transport reconnects, the consumer is back, records flow."""
    url, name, queue = healthy_private_broker.url, f"worker-{unique_name}", f"{unique_name}.tasks"
    with AmqpTransport(url, connection_name=f"admin-{unique_name}") as admin:
        admin.declare_queue(queue, durable=True)
        try:
            with AmqpTransport(url, connection_name=name) as transport:
                sink = ProbeSink()
                running = RunningWorker(Worker(transport, queue, sink))
                first = records(5, "before")
                publish(admin, queue, first)
                wait_until(lambda: len(set(sink.stored)) == 5, 10, "records before the close")
                healthy_private_broker.close_connection(name)
                then = records(5, "after")
                publish(admin, queue, then)
                wait_until(
                    lambda: set(sink.stored) >= {r.id for r in first + then}, 20, "all records"
                )
                summary = running.stop()
            assert summary.handled >= 10
            assert ready(admin, queue) == 0
        finally:
            admin.delete_queue(queue)
            remove_retry_queues(admin, queue, RetryPolicy())


# -- batches, metrics, health -------------------------------------------------------------


class BatchingSink(ProbeSink):
    """A ProbeSink with the batching hints ``max_batch`` and ``max_wait``; notes write sizes."""

    def __init__(self, max_batch: int, max_wait: float) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.sizes: list[int] = []

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        self.sizes.append(len(batch))
        return super().write(batch)


def test_no_write_holds_more_than_the_sinks_max_batch(amqp_url, admin, work_queue):
    """30 waiting records reach a sink of max_batch 8 in writes of 8 at most."""
    publish(admin, work_queue, records(30))
    sink = BatchingSink(max_batch=8, max_wait=0.2)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK))
    wait_until(lambda: len(sink.stored) == 30, 10, "30 records stored")
    running.stop()
    assert sum(sink.sizes) == 30
    assert max(sink.sizes) == 8


def test_the_default_prefetch_holds_two_batches_per_thread_of_a_batching_sink(amqp_url, work_queue):
    """A sink filling batches of 500 (max_wait) with 3 threads: prefetch 2 x 3 x 500."""
    worker = Worker(amqp_url, work_queue, BatchingSink(500, 0.1), concurrency=3)
    assert worker.prefetch == 3000
    assert Worker(amqp_url, work_queue, BatchingSink(500, 0.0), concurrency=3).prefetch == 2000


def test_a_thread_waits_up_to_max_wait_for_a_batch_to_fill(amqp_url, admin, work_queue):
    """Three records published one by one reach a sink of max_batch 3 in a single write."""
    sink = BatchingSink(max_batch=3, max_wait=10.0)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK))
    wait_until(lambda: admin.declare_queue(work_queue, passive=True).consumer_count == 1, 10, "c")
    for record in records(3):
        publish(admin, work_queue, [record])
    wait_until(lambda: len(sink.stored) == 3, 10, "the batch of three")
    running.stop()
    assert sink.sizes == [3]


def test_stop_does_not_wait_for_a_batch_to_fill(amqp_url, admin, work_queue):
    """A thread waiting 30 s to fill a batch stops at once; its record goes back unwritten."""
    sink = BatchingSink(max_batch=100, max_wait=30.0)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK))
    publish(admin, work_queue, records(1))
    wait_until(lambda: ready(admin, work_queue) == 0, 10, "the record taken")
    running.stop(timeout=10)  # fails if stop waited for the 30 s
    assert sink.sizes == []
    wait_until(lambda: ready(admin, work_queue) == 1, 10, "the record requeued")


def counter(metrics: WorkerMetrics, name: str) -> int:
    """The value of counter ``logbus_worker_<name>_total`` in the metrics' exposition."""
    prefix = f"logbus_worker_{name}_total{{"
    [line] = [line for line in metrics.render().splitlines() if line.startswith(prefix)]
    return int(float(line.rsplit(" ", 1)[1]))


def test_the_metrics_hook_counts_what_the_worker_does(amqp_url, admin, work_queue):
    """Received, written, failed, retried and dead-lettered, as they happened; a plain body
    is written like any record (undecodable stays 0)."""
    [good, refused, flaky, other] = records(4)

    def behave(record: LogRecord, attempt: int) -> Exception | None:
        if record.id == refused.id:
            return ValueError("never")
        if record.id == flaky.id and attempt == 1:
            return ConnectionLost("once")
        return None

    metrics = WorkerMetrics(work_queue, "probe")
    sink = ProbeSink(behave)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, retry=QUICK, metrics=metrics))
    publish(admin, work_queue, [good, refused, flaky, other])
    admin.publish(Message(b"[]", Properties(message_id="bad"), "", work_queue))
    wait_until(lambda: len(sink.stored) == 4, 10, "four records stored")
    wait_until(lambda: ready(admin, dead_queue(work_queue)) == 1, 10, "one dead letter")
    summary = running.stop()
    counts = {
        name: counter(metrics, name)
        for name in ("received", "written", "failed", "retried", "dead_lettered", "undecodable")
    }
    # 5 deliveries, and the flaky one again after its delay.
    assert counts == {
        "received": 6,
        "written": 4,
        "failed": 2,
        "retried": 1,
        "dead_lettered": 1,
        "undecodable": 0,
    }
    assert (summary.retried, summary.dead_lettered) == (1, 1)
    batches = [line for line in metrics.render().splitlines() if "batch_records_count" in line]
    assert float(batches[0].rsplit(" ", 1)[1]) >= 1


def test_health_says_whether_the_worker_is_consuming(amqp_url, work_queue):
    """Unhealthy before start and after stop; healthy, with its queue, while it consumes."""
    worker = Worker(amqp_url, work_queue, ProbeSink(), retry=QUICK)
    assert worker.health()[0] is False
    running = RunningWorker(worker)
    wait_until(lambda: worker.health()[0], 10, "a healthy worker")
    _, details = worker.health()
    assert details["queue"] == work_queue
    assert details["consuming"] is True
    running.stop()
    assert worker.health()[0] is False


def test_redelivered_records_are_counted_apart_from_first_deliveries(
    amqp_url, admin, work_queue, unique_name
):
    """Four records taken before by a consumer that went away come back redelivered: the
    summary and the metrics count them apart (they may have been written before)."""
    batch = records(10)
    publish(admin, work_queue, batch)
    with AmqpTransport(amqp_url, connection_name=f"taker-{unique_name}") as taker:
        for _ in range(4):
            assert taker.get(work_queue) is not None  # never acked: back when it closes
    wait_until(lambda: ready(admin, work_queue) == 10, 10, "the four back in the queue")
    metrics = WorkerMetrics(work_queue, "probe")
    sink = ProbeSink()
    running = RunningWorker(Worker(amqp_url, work_queue, sink, metrics=metrics))
    wait_until(lambda: len(sink.stored) == 10, 10, "ten records stored")
    summary = running.stop()
    assert (summary.handled, summary.redelivered) == (10, 4)
    assert "10 handled (4 of them redelivered, perhaps written before" in str(summary)
    assert (counter(metrics, "written"), counter(metrics, "redelivered")) == (10, 4)


def test_the_metrics_gauge_the_queue_depth(amqp_url, admin, work_queue):
    """A worker holding one record (prefetch 1, its sink busy) sees 9 of 10 left ready."""
    release = threading.Event()

    def behave(record: LogRecord, attempt: int) -> Exception | None:
        release.wait(30)
        return None

    publish(admin, work_queue, records(10))
    metrics = WorkerMetrics(work_queue, "probe")
    sink = ProbeSink(behave)
    running = RunningWorker(Worker(amqp_url, work_queue, sink, prefetch=1, metrics=metrics))

    def depth() -> float | None:
        found = [
            line for line in metrics.render().splitlines() if line.startswith("logbus_worker_queue")
        ]
        return float(found[0].rsplit(" ", 1)[1]) if found else None

    try:
        wait_until(lambda: depth() == 9, 20, "the depth gauge to read 9")
    finally:
        release.set()
    wait_until(lambda: len(sink.stored) == 10, 10, "ten records stored")
    running.stop()
