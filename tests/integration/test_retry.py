"""Retries through delay queues and the dead-letter queue, on RabbitMQ and on memory://.

The worker runs in this process on a transport of the test's, wrapped in a
:class:`Recorder` that notes what the worker publishes (to delay and
dead-letter queues) and the headers of every delivery it receives, so the
attempt count and history can be seen on the way, not only at the end.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from time import monotonic
from typing import Any

import pytest

from logbus.errors import (
    ConfigError,
    ConnectionLost,
    NotConfirmed,
    NotFound,
    PreconditionFailed,
    TopologyError,
)
from logbus.message import Message, Properties
from logbus.record import LogRecord
from logbus.transports import connect
from logbus.transports.base import Delivery, Transport
from logbus.worker import Worker
from logbus.worker.retry import (
    ATTEMPTS_HEADER,
    EXCHANGE_HEADER,
    HISTORY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    RetryPolicy,
    dead_queue,
    delay_queue,
    remove_retry_queues,
    retry_queues,
)
from tests.support import RunningWorker, wait_until

DEADLINE = 15.0
FAST = RetryPolicy(max_attempts=3, delay=0.05, backoff=1)


class ScriptedSink:
    """A sink doing, for each record, what ``script(record, attempt)`` returns (None: store).

    It notes when each attempt began (``monotonic``) and what it saw.
    """

    def __init__(self, script: Callable[[LogRecord, int], Exception | None]) -> None:
        self.script = script
        self.began: dict[str, list[float]] = defaultdict(list)
        self.seen: list[LogRecord] = []
        self.stored: list[str] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to close."""

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        results = []
        for record in batch:
            with self._lock:
                self.began[record.id].append(monotonic())
                self.seen.append(record)
                attempt = len(self.began[record.id])
            outcome = self.script(record, attempt)
            if outcome is None:
                with self._lock:
                    self.stored.append(record.id)
            results.append(outcome)
        return results

    def attempts(self, record_id: str) -> int:
        with self._lock:
            return len(self.began[record_id])


class _RecordingConsumer:
    """A consumer that notes the headers of every delivery it hands out."""

    def __init__(self, inner: Any, headers: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._headers = headers

    def get(self, timeout: float | None = None) -> Delivery | None:
        delivery: Delivery | None = self._inner.get(timeout)
        if delivery is not None:
            self._headers.append(dict(delivery.properties.headers))
        return delivery

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Recorder:
    """A transport passing everything through, noting publishes and delivered headers.

    ``refuse`` publishes (``publish_many`` calls) fail with ``NotConfirmed``
    first, as a broker in trouble would.
    """

    def __init__(self, inner: Transport, refuse: int = 0) -> None:
        self._inner = inner
        self.url = inner.url
        self.refuse = refuse
        self.published: list[Message] = []
        self.delivered: list[dict[str, Any]] = []

    def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        batch = list(messages)
        if self.refuse > 0:
            self.refuse -= 1
            raise NotConfirmed("the test's broker refused it", unconfirmed=len(batch))
        self._inner.publish_many(batch, mandatory=mandatory)
        self.published.extend(batch)

    def consume(self, queue: str, **options: Any) -> _RecordingConsumer:
        return _RecordingConsumer(self._inner.consume(queue, **options), self.delivered)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Running(RunningWorker):
    """A worker on a thread of its own, given this module's deadline to stop."""

    timeout = DEADLINE


@dataclass
class Broker:
    """This test's broker: its URL, a connection to look with, a work queue fed by an exchange."""

    url: str
    admin: Transport
    queue: str
    exchange: str
    policies: list[RetryPolicy] = field(default_factory=list)
    connections: list[Transport] = field(default_factory=list)

    def worker(
        self, sink: ScriptedSink, policy: RetryPolicy, *, refuse: int = 0
    ) -> tuple[Running, Recorder]:
        """A worker on its own (recorded) connection, running; cleaned up with the test."""
        self.policies.append(policy)
        connection = connect(self.url)
        self.connections.append(connection)
        transport = Recorder(connection, refuse=refuse)
        return Running(Worker(transport, self.queue, sink, retry=policy)), transport

    def emit(self, record: LogRecord, key: str = "kern.info") -> None:
        """Publish ``record`` through the test's exchange with ``key``, confirmed."""
        self.admin.publish(Message(record.to_bytes(), record.to_properties(), self.exchange, key))

    def ready(self, queue: str) -> int:
        """Messages ready in ``queue``."""
        return self.admin.declare_queue(queue, passive=True).message_count

    def take_dead(self) -> Delivery:
        """The one record on the dead-letter queue, removed."""
        delivery = self.admin.get(dead_queue(self.queue), auto_ack=True)
        assert delivery is not None, "nothing on the dead-letter queue"
        return delivery


@pytest.fixture(params=["amqp", "memory"])
def broker(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Broker]:
    """RabbitMQ (the reference) or the in-process broker, with this test's queue and exchange."""
    url = request.getfixturevalue("amqp_url") if request.param == "amqp" else None
    url = url or f"memory://{unique_name}"
    queue, exchange = f"{unique_name}.tasks", f"{unique_name}.in"
    with connect(url) as admin:
        admin.declare_exchange(exchange, "topic", durable=False)
        admin.declare_queue(queue, durable=True)
        admin.bind_queue(queue, exchange, "#")
        made = Broker(url, admin, queue, exchange)
        yield made
        for connection in made.connections:
            connection.close()
        for policy in made.policies:
            remove_retry_queues(admin, queue, policy)
        admin.delete_queue(queue)
        admin.delete_exchange(exchange)


def attempts(history: Any) -> list[int]:
    """The attempt numbers of an ``x-logbus-history`` header."""
    return [int(entry["attempt"]) for entry in history]


def text(value: Any) -> str:
    """A header value as text (pika may hand over bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# -- retrying ---------------------------------------------------------------------------------


def test_a_record_failing_twice_is_stored_on_its_third_attempt_after_the_delays(broker):
    """Two recoverable failures: tried again after at least 0.2 s, then 0.4 s, then stored."""
    policy = RetryPolicy(max_attempts=5, delay=0.2, backoff=2)

    def twice(record: LogRecord, attempt: int) -> Exception | None:
        return ConnectionLost("the database went away") if attempt <= 2 else None

    sink = ScriptedSink(twice)
    running, recorder = broker.worker(sink, policy)
    record = LogRecord.from_key("kern.info", "try me")
    broker.emit(record)
    wait_until(lambda: sink.stored == [record.id], DEADLINE, "the third attempt to store it")
    summary = running.stop()
    first, second, third = sink.began[record.id]
    assert second - first >= 0.2
    assert third - second >= 0.4
    assert (summary.handled, summary.failed, summary.retried, summary.dead_lettered) == (1, 2, 2, 0)
    assert [m.routing_key for m in recorder.published] == [
        delay_queue(broker.queue, 200),
        delay_queue(broker.queue, 400),
    ]
    # What the third delivery carried: two attempts counted, each with its error.
    last = recorder.delivered[-1]
    assert last[ATTEMPTS_HEADER] == 2
    assert attempts(last[HISTORY_HEADER]) == [1, 2]
    errors = {text(entry["error"]) for entry in last[HISTORY_HEADER]}
    assert errors == {"ConnectionLost: the database went away"}
    assert all(text(entry["at"]).endswith("Z") for entry in last[HISTORY_HEADER])
    for queue in (broker.queue, delay_queue(broker.queue, 200), dead_queue(broker.queue)):
        assert broker.ready(queue) == 0


def test_a_record_that_always_fails_is_dead_lettered_after_max_attempts(broker):
    """A record failing recoverably every time ends on <queue>.dead after max_attempts."""
    sink = ScriptedSink(lambda record, attempt: ConnectionLost("still down"))
    running, _ = broker.worker(sink, FAST)
    record = LogRecord.from_key("kern.warning", "never stored")
    broker.emit(record, "kern.warning")
    wait_until(lambda: broker.ready(dead_queue(broker.queue)) == 1, DEADLINE, "the dead letter")
    summary = running.stop()
    assert sink.attempts(record.id) == 3
    assert (summary.failed, summary.retried, summary.dead_lettered) == (3, 2, 1)
    dead = broker.take_dead()
    headers = dead.properties.headers
    assert dead.body == record.to_bytes()
    assert dead.properties.message_id == record.id
    assert headers[ATTEMPTS_HEADER] == 3
    assert text(headers[REASON_HEADER]) == "gave up after 3 attempts: ConnectionLost: still down"
    assert attempts(headers[HISTORY_HEADER]) == [1, 2, 3]
    assert text(headers[EXCHANGE_HEADER]) == broker.exchange
    assert text(headers[ROUTING_KEY_HEADER]) == "kern.warning"
    assert text(headers[QUEUE_HEADER]) == broker.queue
    assert broker.ready(broker.queue) == 0


def test_a_failure_that_is_not_recoverable_goes_straight_to_the_dead_letter_queue(broker):
    """A sink error that says retrying is useless: one attempt, then <queue>.dead."""
    sink = ScriptedSink(lambda record, attempt: ValueError("no such column: host"))
    running, recorder = broker.worker(sink, RetryPolicy(delay=0.05))
    record = LogRecord.from_key("kern.info", "bad for this sink")
    broker.emit(record)
    wait_until(lambda: broker.ready(dead_queue(broker.queue)) == 1, DEADLINE, "the dead letter")
    summary = running.stop()
    assert sink.attempts(record.id) == 1
    assert (summary.failed, summary.rejected, summary.retried, summary.dead_lettered) == (
        1,
        1,
        0,
        1,
    )
    assert [m.routing_key for m in recorder.published] == [dead_queue(broker.queue)]
    headers = broker.take_dead().properties.headers
    assert text(headers[REASON_HEADER]) == "not recoverable: ValueError: no such column: host"
    assert headers[ATTEMPTS_HEADER] == 1
    assert attempts(headers[HISTORY_HEADER]) == [1]


def test_a_latin1_body_that_fails_is_dead_lettered_exactly_as_published(broker):
    """A body that is not UTF-8 reaches the sink as a record; refused, it is parked byte for
    byte, with why."""
    sink = ScriptedSink(lambda record, attempt: ValueError("refused"))
    running, _ = broker.worker(sink, FAST)
    body = b"caf\xe9"
    broker.admin.publish(
        Message(body, Properties(message_id="latin-1"), broker.exchange, "Kern.Info")
    )
    wait_until(lambda: broker.ready(dead_queue(broker.queue)) == 1, DEADLINE, "the dead letter")
    summary = running.stop()
    [seen] = sink.seen
    assert (seen.message, seen.fields["body_base64"], seen.key) == (
        "caf\\xe9",
        "Y2Fm6Q==",
        "Kern.Info",
    )
    assert (summary.undecodable, summary.dead_lettered) == (0, 1)
    dead = broker.take_dead()
    assert dead.body == body
    assert dead.properties.message_id == "latin-1"
    assert text(dead.properties.headers[REASON_HEADER]).startswith("not recoverable: ")


def test_a_record_counting_attempts_past_the_maximum_is_dead_lettered_on_its_next_failure(broker):
    """The count travels in the headers: a record claiming 7 attempts of 3 is not retried."""
    sink = ScriptedSink(lambda record, attempt: ConnectionLost("down"))
    running, recorder = broker.worker(sink, FAST)
    record = LogRecord.from_key("kern.info", "old hand")
    headers = {**record.to_properties().headers, ATTEMPTS_HEADER: 7}
    properties = record.to_properties().with_headers(headers)
    broker.admin.publish(Message(record.to_bytes(), properties, broker.exchange, "kern.info"))
    wait_until(lambda: broker.ready(dead_queue(broker.queue)) == 1, DEADLINE, "the dead letter")
    summary = running.stop()
    assert sink.attempts(record.id) == 1
    assert summary.retried == 0
    assert [m.routing_key for m in recorder.published] == [dead_queue(broker.queue)]
    dead = broker.take_dead().properties.headers
    assert dead[ATTEMPTS_HEADER] == 8
    assert text(dead[REASON_HEADER]).startswith("gave up after 8 attempts: ")


def test_a_plain_text_record_keeps_its_routing_key_when_it_comes_back(broker):
    """Back from the delay queue, a plain-text body still takes facility and severity
    from the key it was first published with, not from the work queue's name."""

    def once(record: LogRecord, attempt: int) -> Exception | None:
        return OSError("disk full") if attempt == 1 else None

    sink = ScriptedSink(once)
    running, _ = broker.worker(sink, FAST)
    plain = Message(b"disk /dev/sda1 failed", Properties(message_id="plain-1"), broker.exchange)
    broker.admin.publish(replace(plain, routing_key="kern.crit"))
    wait_until(lambda: sink.stored == ["plain-1"], DEADLINE, "the second attempt")
    running.stop()
    assert [(r.facility, r.severity.word, r.message) for r in sink.seen] == [
        ("kern", "critical", "disk /dev/sda1 failed")
    ] * 2


def test_a_refused_publish_to_the_delay_queue_requeues_the_record(broker):
    """When the broker will not take the delayed copy, the original goes back: nothing lost."""

    def once(record: LogRecord, attempt: int) -> Exception | None:
        return ConnectionLost("blip") if attempt == 1 else None

    sink = ScriptedSink(once)
    running, recorder = broker.worker(sink, FAST, refuse=1)
    record = LogRecord.from_key("kern.info", "keep me")
    broker.emit(record)
    wait_until(lambda: sink.stored == [record.id], DEADLINE, "the redelivered record stored")
    summary = running.stop()
    assert sink.attempts(record.id) == 2
    assert recorder.published == []  # the only publish was refused; the record was requeued
    assert (summary.handled, summary.failed, summary.retried) == (1, 1, 0)
    assert recorder.delivered[-1].get(ATTEMPTS_HEADER) is None  # redelivered as it was
    for queue in (broker.queue, delay_queue(broker.queue, 50), dead_queue(broker.queue)):
        assert broker.ready(queue) == 0


# -- the queues -------------------------------------------------------------------------------


def test_the_worker_declares_delay_queues_that_feed_back_into_the_work_queue(broker):
    """Each delay queue holds its delay as TTL and dead-letters to the work queue by name."""
    policy = RetryPolicy(max_attempts=4, delay=0.5, backoff=2, max_delay=1)
    running, _ = broker.worker(ScriptedSink(lambda record, attempt: None), policy)
    running.stop()
    for ms in (500, 1000):
        arguments = {
            "x-message-ttl": ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": broker.queue,
        }
        # The same declaration again is accepted only if every argument is the same.
        broker.admin.declare_queue(delay_queue(broker.queue, ms), arguments=arguments)
    broker.admin.declare_queue(dead_queue(broker.queue))
    with pytest.raises(NotFound):
        broker.admin.declare_queue(delay_queue(broker.queue, 2000), passive=True)


def test_a_delay_queue_ends_its_delay_in_the_work_queue(broker):
    """A message put in a delay queue is back in the work queue once its TTL has passed."""
    policy = RetryPolicy(max_attempts=2, delay=0.1)
    running, _ = broker.worker(ScriptedSink(lambda record, attempt: None), policy)
    running.stop()
    broker.admin.publish(Message(b"x", Properties(), "", delay_queue(broker.queue, 100)))
    wait_until(lambda: broker.ready(broker.queue) == 1, DEADLINE, "the message back in the queue")
    assert broker.ready(delay_queue(broker.queue, 100)) == 0


def test_a_dead_letter_queue_declared_otherwise_is_reported_as_a_mismatch(broker):
    """A transient <queue>.dead already there: start() fails naming what differs and the way out."""
    broker.admin.declare_queue(dead_queue(broker.queue), durable=False)
    broker.policies.append(FAST)
    worker = Worker(broker.url, broker.queue, ScriptedSink(lambda r, n: None), retry=FAST)
    with pytest.raises(TopologyError, match=r"durable: broker has false, config has true"):
        worker.start()
    with pytest.raises(PreconditionFailed):  # and it is still the transient one
        broker.admin.declare_queue(dead_queue(broker.queue), durable=True)


# -- the policy -------------------------------------------------------------------------------


def test_delays_grow_by_the_backoff_up_to_the_maximum():
    """1 s doubling, capped at 5 s: 1, 2, 4, 5, 5; after the last attempt, no delay."""
    policy = RetryPolicy(max_attempts=6, delay=1, backoff=2, max_delay=5)
    assert [policy.delay_ms(n) for n in range(1, 7)] == [1000, 2000, 4000, 5000, 5000, None]
    assert policy.delays_ms() == [1000, 2000, 4000, 5000]


def test_the_default_policy_is_five_attempts_from_one_second_doubling():
    """Defaults: 5 attempts, 1 s doubling, at most 5 minutes; four delay queues."""
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.delay, policy.backoff, policy.max_delay) == (
        5,
        1.0,
        2.0,
        300.0,
    )
    assert policy.delays_ms() == [1000, 2000, 4000, 8000]


def test_a_huge_number_of_attempts_stays_at_the_maximum_delay():
    """Attempt 999 of a doubling policy waits the maximum (no overflow on the way)."""
    policy = RetryPolicy(max_attempts=1000, delay=1, backoff=10, max_delay=60)
    assert policy.delay_ms(999) == 60000


def test_never_retrying_has_no_delay_queues():
    """RetryPolicy.never(): one attempt, no delays."""
    assert RetryPolicy.never().delays_ms() == []
    assert RetryPolicy.never().delay_ms(1) is None


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"max_attempts": 0}, "max attempts must be 1..1000"),
        ({"max_attempts": True}, "max attempts must be a whole number"),
        ({"delay": 0}, "retry delay must be 1ms.."),
        ({"delay": float("nan")}, "retry delay must be 1ms.."),
        ({"backoff": 0.5}, "retry backoff must be 1 or more"),
        ({"delay": 10, "max_delay": 5}, "retry max delay must be between the first delay"),
        ({"max_delay": 10**8}, "retry max delay must be between the first delay"),
        (
            {"max_attempts": 100, "delay": 0.001, "backoff": 1.1, "max_delay": 3600},
            "different delays, each a queue of its own",
        ),
    ],
)
def test_an_impossible_policy_is_a_config_error(options: Mapping[str, Any], problem: str):
    """Each impossible setting is refused with a message naming it."""
    with pytest.raises(ConfigError, match=re.escape(problem)):
        RetryPolicy(**options)


def test_a_work_queue_name_leaving_no_room_for_its_retry_queues_is_refused():
    """A 250-byte queue name cannot have <name>.retry.1000: declaring says so."""
    with (
        connect("memory://retry-long-name") as transport,
        pytest.raises(ConfigError, match="over 255 bytes"),
    ):
        Worker(transport, "q" * 250, ScriptedSink(lambda r, n: None)).start()


def test_remove_retry_queues_tolerates_queues_that_are_not_there():
    """Cleaning up after a worker that never ran deletes nothing and raises nothing."""
    with connect("memory://retry-remove") as transport:
        assert remove_retry_queues(transport, "nothing-here", RetryPolicy()) == 0


def test_retry_queues_names_the_delay_queues_of_a_policy_and_the_dead_letter_queue():
    """What a worker declares for a queue, by name: one delay queue per delay, then .dead."""
    policy = RetryPolicy(max_attempts=4, delay=1.0, backoff=2)
    assert retry_queues("jobs", policy) == [
        "jobs.retry.1000",
        "jobs.retry.2000",
        "jobs.retry.4000",
        "jobs.dead",
    ]


def test_a_server_named_queue_gets_retry_queues_outside_the_reserved_prefix():
    """amq.gen-... is the broker's prefix: its delay and dead queues are logbus.amq.gen-...."""
    from logbus.worker.retry import dead_queue, delay_queue

    assert delay_queue("amq.gen-abc", 1000) == "logbus.amq.gen-abc.retry.1000"
    assert dead_queue("amq.gen-abc") == "logbus.amq.gen-abc.dead"
    assert dead_queue("logbus.tasks") == "logbus.tasks.dead"


def test_a_worker_on_a_server_named_queue_starts_and_declares_its_retry_queues():
    """A worker consuming a queue the broker named can declare its retry queues."""
    from logbus.worker.retry import dead_queue

    with connect("memory://") as transport:
        name = transport.declare_queue("", exclusive=True).name
        assert name.startswith("amq.")
        worker = Worker(transport, name, "console")
        worker.start()
        worker.stop()
        worker.wait()
        assert transport.declare_queue(dead_queue(name), passive=True).message_count == 0
