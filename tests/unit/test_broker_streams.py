"""The in-process broker's stream queues: what the contract suite cannot show on RabbitMQ.

RabbitMQ grants a stream consumer credit per chunk and drops retained data per
segment, so the exact prefetch bound and per-message retention are checked here
on the broker itself; its refusals are compared with RabbitMQ's own replies in
``tests/integration/test_stream_parity.py``.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from logbus.broker import Broker, Session, open_session
from logbus.broker.journal import Journal
from logbus.broker.queues import Delivered
from logbus.broker.streams import StreamState, max_age_seconds
from logbus.errors import NotImplementedByBroker, PreconditionFailed
from logbus.message import PERSISTENT, Message, Properties

STREAM = {"x-queue-type": "stream"}


@pytest.fixture
def session() -> Iterator[Session]:
    """A session on a fresh broker."""
    broker = Broker("streams-test")
    yield open_session(broker)
    broker.close()


def put(session: Session, q: str, *bodies: str) -> None:
    """Publish persistent bodies straight to ``q``."""
    for body in bodies:
        session.publish(Message(body.encode(), Properties(delivery_mode=PERSISTENT), "", q))


def consumer(session: Session, q: str, prefetch: int = 10, offset: object = "first"):
    """A consumer's inbox (a SimpleQueue of Delivered) and its tag."""
    inbox: queue.SimpleQueue[Delivered] = queue.SimpleQueue()
    arguments = {"x-stream-offset": offset}
    tag = session.consume(q, inbox.put, prefetch=prefetch, arguments=arguments)
    return inbox, tag


def drain(inbox: queue.SimpleQueue[Delivered]) -> list[Delivered]:
    """What the inbox holds now (deliveries happen under the broker's lock, synchronously)."""
    out = []
    while not inbox.empty():
        out.append(inbox.get_nowait())
    return out


def test_a_stream_consumer_holds_at_most_its_prefetch_until_it_acks(session):
    """Prefetch 2 of five: two delivered; one ack lets exactly one more through."""
    session.declare_queue("s", arguments=STREAM)
    put(session, "s", *(f"m{i}" for i in range(5)))
    inbox, _ = consumer(session, "s", prefetch=2)
    first = drain(inbox)
    assert [d.message.body for d in first] == [b"m0", b"m1"]
    session.ack(first[0].delivery_tag)
    assert [d.message.body for d in drain(inbox)] == [b"m2"]


def test_retention_by_bytes_drops_the_oldest_messages(session):
    """x-max-length-bytes 4 with two-byte bodies keeps the newest two; offsets stay."""
    session.declare_queue("s", arguments={**STREAM, "x-max-length-bytes": 4})
    put(session, "s", "m0", "m1", "m2", "m3")
    inbox, _ = consumer(session, "s")
    got = drain(inbox)
    assert [(d.message.body, d.message.properties.headers["x-stream-offset"]) for d in got] == [
        (b"m2", 2),
        (b"m3", 3),
    ]
    assert (
        session.declare_queue("s", arguments={**STREAM, "x-max-length-bytes": 4}).message_count == 2
    )


def test_retention_by_age_drops_what_is_older(session):
    """Messages appended before x-max-age are gone for a consumer attaching later."""
    session.declare_queue("s", arguments={**STREAM, "x-max-age": "10s"})
    stream = session._broker._queues["s"]
    assert isinstance(stream, StreamState)
    now = datetime.now(UTC).timestamp()
    stream.append(Message(b"old"), now - 60)
    stream.append(Message(b"new"), now)
    inbox, _ = consumer(session, "s")
    assert [d.message.body for d in drain(inbox)] == [b"new"]


def test_max_age_reads_rabbitmq_units():
    """7D, 12h, 30m, 5s, 1Y, 2M in seconds; other spellings are not ages."""
    assert [max_age_seconds(v) for v in ("7D", "12h", "30m", "5s", "1Y", "2M")] == [
        7 * 86400,
        12 * 3600,
        1800,
        5,
        365 * 86400,
        60 * 86400,
    ]
    assert [max_age_seconds(v) for v in ("7d", "7", 7, "7 D", "")] == [None] * 5


def test_get_purge_nack_and_reject_are_not_implemented_on_a_stream(session):
    """basic.get, queue.purge, basic.nack and basic.reject: RabbitMQ's 540."""
    session.declare_queue("s", arguments=STREAM)
    put(session, "s", "m0")
    with pytest.raises(NotImplementedByBroker, match=r"basic\.get not supported by stream"):
        session.get("s")
    with pytest.raises(NotImplementedByBroker, match=r"queue\.purge not supported by stream"):
        session.purge_queue("s")
    inbox, _ = consumer(session, "s")
    (delivered,) = drain(inbox)
    for settle in (session.nack, session.reject):
        with pytest.raises(NotImplementedByBroker, match=r"basic\.nack and basic\.reject"):
            settle(delivered.delivery_tag)
    session.ack(delivered.delivery_tag)


def test_a_consumer_without_prefetch_is_refused(session):
    """Prefetch 0 on a stream: 406, consumer prefetch count is not set."""
    session.declare_queue("s", arguments=STREAM)
    with pytest.raises(PreconditionFailed, match="consumer prefetch count is not set"):
        session.consume("s", lambda _d: None, prefetch=0)


def test_an_offset_that_is_no_place_is_refused(session):
    """x-stream-offset 'soon' is refused naming the forms that are taken."""
    session.declare_queue("s", arguments=STREAM)
    with pytest.raises(PreconditionFailed, match="use first, last, next, an offset or a timestamp"):
        session.consume("s", lambda _d: None, prefetch=1, arguments={"x-stream-offset": "soon"})


def test_offsets_before_the_first_and_past_the_end(session):
    """An offset before the first reads from the first; one past the end waits for it."""
    session.declare_queue("s", arguments=STREAM)
    put(session, "s", "m0", "m1")
    inbox, _ = consumer(session, "s", offset=-5)
    assert [d.message.body for d in drain(inbox)] == [b"m0", b"m1"]
    inbox, _ = consumer(session, "s", offset=3)
    assert drain(inbox) == []
    put(session, "s", "m2", "m3")
    assert [d.message.body for d in drain(inbox)] == [b"m3"]


def test_a_journaled_stream_keeps_its_messages_across_a_restart(tmp_path: Path):
    """With a journal, a stream and its persistent messages come back after a restart."""
    broker = Broker("j", journal=Journal(tmp_path / "data", fsync="never"))
    session = open_session(broker)
    session.declare_queue("s", arguments={**STREAM, "x-max-length-bytes": 4})
    put(session, "s", "m0", "m1", "m2")
    broker.close()
    broker = Broker("j", journal=Journal(tmp_path / "data", fsync="never"))
    try:
        session = open_session(broker)
        inbox, _ = consumer(session, "s")
        got = [d.message for d in drain(inbox)]
        # Retention struck m0 off; the rest restart at offset 0, their header rewritten.
        assert [(m.body, m.properties.headers["x-stream-offset"]) for m in got] == [
            (b"m1", 0),
            (b"m2", 1),
        ]
    finally:
        broker.close()


def test_a_streams_log_counts_toward_the_memory_watermark_until_retention_drops_it():
    """The memory the watermark accounts includes a stream's log, and falls as retention drops."""
    broker = Broker("streams-memory-test")
    session = open_session(broker)
    session.declare_queue("s", arguments={**STREAM, "x-max-length-bytes": 20_000})
    before = broker.held_bytes()
    put(session, "s", "a" * 10_000, "b" * 10_000)
    held = broker.held_bytes()
    assert held - before >= 20_000  # two 10,000-byte bodies, read by nobody, still held
    put(session, "s", "c", "d")  # past 20,000 bytes: retention drops the oldest big one
    assert broker.held_bytes() < held - 5_000
    broker.close()
