"""Contract: stream queues (``x-queue-type: stream``) as RabbitMQ 3.10 serves them, on every
transport.

What only some transports can show is elsewhere: a consumer without prefetch
and ``basic.get`` (refused by logbus's AMQP transport before, or answered by
RabbitMQ with a connection close) are compared with plain pika in
``tests/integration/test_stream_parity.py``; retention, which RabbitMQ applies
per segment, in ``tests/unit/test_broker_streams.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from logbus.errors import PreconditionFailed
from tests.contract.test_delivery import nothing_more, put, take

STREAM = {"x-queue-type": "stream"}


def offsets(deliveries: list) -> list[int]:
    """The ``x-stream-offset`` header of each delivery."""
    return [d.properties.headers["x-stream-offset"] for d in deliveries]


def read(open_transport, queue: str, n: int, offset: object = None, prefetch: int = 10) -> list:
    """Exactly ``n`` deliveries of a new consumer starting at ``offset``, each acked."""
    arguments = None if offset is None else {"x-stream-offset": offset}
    consumer = open_transport().consume(queue, prefetch=prefetch, arguments=arguments)
    got = take(consumer, n)
    for delivery in got:
        delivery.ack()
    assert nothing_more(consumer)
    return got


def test_consuming_a_stream_leaves_every_message_in_it(make, open_transport):
    """Two consumers from the first offset each read all of it; a third does again."""
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, "m0", "m1", "m2")
    for _ in range(3):
        assert [d.body for d in read(open_transport, q, 3, "first")] == [b"m0", b"m1", b"m2"]


def test_each_delivery_carries_its_offset_header(make, open_transport):
    """Offsets count from 0 in publish order; other headers are kept beside it."""
    from logbus.message import Properties

    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, "a", "b", properties=Properties(headers={"app": "x"}))
    got = read(open_transport, q, 2, "first")
    assert offsets(got) == [0, 1]
    assert all(d.properties.headers["app"] == "x" for d in got)
    assert not any(d.redelivered for d in got)


def test_an_integer_offset_starts_there(make, open_transport):
    """x-stream-offset 2 of five messages reads m2, m3, m4."""
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, *(f"m{i}" for i in range(5)))
    assert [d.body for d in read(open_transport, q, 3, 2)] == [b"m2", b"m3", b"m4"]


def test_an_offset_past_the_end_waits_for_that_offset(make, open_transport):
    """x-stream-offset 3 of a two-message stream: m2 is not delivered, m3 is."""
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, "m0", "m1")
    consumer = open_transport().consume(q, prefetch=10, arguments={"x-stream-offset": 3})
    assert nothing_more(consumer)
    put(make.transport, q, "m2")
    put(make.transport, q, "m3")
    (got,) = take(consumer, 1)
    assert (got.body, offsets([got])) == (b"m3", [3])
    assert nothing_more(consumer)


def test_without_an_offset_a_consumer_reads_only_what_comes_next(make, open_transport):
    """The default is ``next``: what was there before is not delivered, what comes is."""
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, "old")
    consumer = open_transport().consume(q, prefetch=10)
    assert nothing_more(consumer)
    put(make.transport, q, "new")
    (got,) = take(consumer, 1)
    assert (got.body, offsets([got])) == (b"new", [1])


def test_last_delivers_the_newest_message_last(make, open_transport):
    """``last`` ends with the newest message (RabbitMQ starts at its chunk: maybe earlier)."""
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, "m0", "m1", "m2")
    consumer = open_transport().consume(q, prefetch=10, arguments={"x-stream-offset": "last"})
    got = []
    while (delivery := consumer.get(timeout=0.5)) is not None:
        got.append(delivery)
        delivery.ack()
    assert got and got[-1].body == b"m2"


def test_a_timestamp_offset_reads_what_was_appended_since(make, open_transport):
    """A timestamp before the stream reads all of it; one in the future, only new ones."""
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, "m0", "m1")
    past = datetime.now(UTC) - timedelta(hours=1)
    assert [d.body for d in read(open_transport, q, 2, past)] == [b"m0", b"m1"]
    future = datetime.now(UTC) + timedelta(hours=1)
    consumer = open_transport().consume(q, prefetch=10, arguments={"x-stream-offset": future})
    assert nothing_more(consumer)


def test_acks_give_a_stream_consumer_its_credit_back(make, open_transport):
    """With prefetch 1, acking each delivery lets the whole stream through, in order.

    (RabbitMQ grants credit per chunk, so it may send a whole chunk past the
    prefetch; the in-process broker's exact bound is in tests/unit.)
    """
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, *(f"m{i}" for i in range(5)))
    consumer = open_transport().consume(q, prefetch=1, arguments={"x-stream-offset": "first"})
    got = []
    for _ in range(5):
        (delivery,) = take(consumer, 1)
        got.append(delivery.body)
        delivery.ack()
    assert got == [f"m{i}".encode() for i in range(5)]


def test_a_closed_consumer_leaves_its_unacked_messages_in_place(make, open_transport):
    """Unacked stream deliveries are not requeued anywhere: a new reader sees the same log."""
    q = make.queue("history", arguments=STREAM)
    put(make.transport, q, "m0", "m1")
    reader = open_transport()
    take(reader.consume(q, prefetch=10, arguments={"x-stream-offset": "first"}), 2)
    reader.close()
    assert offsets(read(open_transport, q, 2, "first")) == [0, 1]


@pytest.mark.parametrize("offset", ["first", None])
def test_cancelling_a_stream_consumer_with_deliveries_in_flight_keeps_the_connection(
    make, open_transport, offset
):
    """A stream consumer cancelled while the broker is still sending to it: the
    transport's connection stays up (pika rejects what arrives after a basic.cancel,
    and RabbitMQ closes the connection for a reject on a stream). Seen through a
    delivery of another queue held unacked on the same transport: a dropped
    connection would deliver it again."""
    q = make.queue("history", arguments=STREAM)
    other = make.queue("work")
    transport = open_transport()
    put(make.transport, other, "held")
    worker = transport.consume(other, prefetch=1)
    (held,) = take(worker, 1)
    arguments = None if offset is None else {"x-stream-offset": offset}
    consumer = transport.consume(q, prefetch=500, arguments=arguments)
    if offset is None:
        assert nothing_more(consumer, 0.1)  # consuming from "next"
    put(make.transport, q, *(f"m{i}" for i in range(2000)))
    for _ in range(1000):
        (delivery,) = take(consumer, 1)
        delivery.ack()  # credit back: the broker sends more, to arrive after the cancel
    consumer.cancel()
    while consumer.get(timeout=5) is not None:  # what it had received before the cancel
        pass
    assert consumer.ended
    assert nothing_more(worker, 0.5)  # no redelivery: the connection did not drop
    held.ack()
    put(transport, other, "after")
    assert [(d.body, d.redelivered) for d in take(worker, 1)] == [(b"after", False)]


@pytest.mark.parametrize(
    ("flags", "word"),
    [
        ({"durable": False}, "non-durable"),
        ({"exclusive": True}, "exclusive-owner"),
        ({"auto_delete": True}, "auto-delete"),
    ],
)
def test_a_stream_must_be_durable_shared_and_kept(make, flags, word):
    """A non-durable, exclusive or auto-delete stream is refused (406), naming the flag."""
    with pytest.raises(PreconditionFailed, match=word):
        make.queue("history", arguments=STREAM, **{"durable": True, **flags})


@pytest.mark.parametrize(
    "argument",
    [{"x-max-length": 5}, {"x-message-ttl": 5}, {"x-overflow": "reject-publish"}],
)
def test_a_stream_refuses_the_arguments_of_other_queue_types(make, argument):
    """x-max-length, x-message-ttl, x-overflow on a stream: 406 naming the argument."""
    (key,) = argument
    with pytest.raises(PreconditionFailed, match=key):
        make.queue("history", arguments={**STREAM, **argument})


def test_a_malformed_max_age_is_refused(make):
    """x-max-age must be a count and a unit such as 7D (406 otherwise)."""
    with pytest.raises(PreconditionFailed, match="x-max-age"):
        make.queue("history", arguments={**STREAM, "x-max-age": "7 days"})
