"""Contract: RabbitMQ's queue semantics where the in-process broker once differed (issue 15)."""

from __future__ import annotations

import time

import pytest

from logbus.errors import InvalidExpiration, NotFound, PreconditionFailed, ResourceLocked
from logbus.message import Message, Properties
from tests.contract.test_delivery import put, take


def test_ttl_zero_reaches_a_waiting_consumer(make, open_transport):
    """A message with expiration 0 is delivered when a consumer is waiting for it."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=1)
    put(make.transport, q, "now", properties=Properties(expiration="0"))
    assert [d.body for d in take(consumer, 1)] == [b"now"]


def test_requeued_messages_return_to_their_original_positions(make):
    """Two gets requeued in publish order come back in publish order, ahead of the rest."""
    q = make.queue("work")
    put(make.transport, q, "m1", "m2", "m3")
    first, second = make.transport.get(q), make.transport.get(q)
    assert first is not None and second is not None
    first.reject(requeue=True)
    second.reject(requeue=True)
    bodies = [make.transport.get(q, auto_ack=True) for _ in range(3)]
    assert [d.body for d in bodies if d is not None] == [b"m1", b"m2", b"m3"]


def test_an_ack_frees_a_slot_before_a_later_requeue(make, open_transport):
    """Ack m2 then requeue m1 with prefetch 2: m3 is delivered before m1 comes back."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=2)
    put(make.transport, q, "m1", "m2", "m3")
    m1, m2 = take(consumer, 2)
    m2.ack()
    m1.nack(requeue=True)
    assert [d.body for d in take(consumer, 2)] == [b"m3", b"m1"]


def test_a_requeue_past_the_bound_drops_from_the_head(make):
    """With x-max-length 1, a requeued message that becomes the head is dropped."""
    q = make.queue("work", arguments={"x-max-length": 1})
    put(make.transport, q, "m1")
    held = make.transport.get(q)
    assert held is not None
    put(make.transport, q, "m2")
    held.reject(requeue=True)
    got = make.transport.get(q, auto_ack=True)
    assert got is not None and got.body == b"m2"
    assert make.transport.get(q) is None


@pytest.mark.parametrize("expiration", ["abc", "-1", "1.5"])
def test_an_invalid_expiration_is_refused(make, open_transport, expiration):
    """A per-message expiration that is not decimal digits is refused, never published.

    The in-process broker answers RabbitMQ's 406; amqp:// refuses before sending, with
    the same class: a 406 (PreconditionFailed) that is also bad input (exit 65).
    """
    q = make.queue("work")
    message = Message(b"x", Properties(expiration=expiration), "", q)
    with pytest.raises(InvalidExpiration, match="invalid expiration"):
        open_transport().publish(message, mandatory=False)


def test_unchecked_arguments_may_differ_on_redeclare(make):
    """RabbitMQ compares only the arguments it knows; x-unknown-arg may change."""
    q = make.queue("work", arguments={"x-unknown-arg": "a"})
    info = make.transport.declare_queue(q, arguments={"x-unknown-arg": "b"})
    assert info.name == q


def test_changing_exclusive_on_redeclare_is_resource_locked(make, open_transport):
    """Redeclaring a queue as exclusive when it is not fails with 405, not 406."""
    q = make.queue("work")
    with pytest.raises(ResourceLocked):
        open_transport().declare_queue(q, exclusive=True)


def test_a_no_op_unbind_keeps_an_auto_delete_exchange(make):
    """Unbinding a binding that is not there leaves an auto-delete exchange alone."""
    x = make.exchange("x", "direct", auto_delete=True)
    q = make.queue("work")
    make.transport.bind_queue(q, x, "a")
    make.transport.unbind_queue(q, x, "missing")
    make.transport.declare_exchange(x, "direct", auto_delete=True, passive=True)


def test_settling_a_get_after_its_queue_was_deleted_is_accepted(make, open_transport):
    """An ack for a basic.get delivery of a deleted queue is not an error."""
    transport = open_transport()
    q = make.queue("work")
    put(make.transport, q, "m1")
    held = transport.get(q)
    assert held is not None
    make.transport.delete_queue(q)
    held.ack()
    transport.declare_queue(make.names("other"), exclusive=True)  # still open and usable


def test_multiple_stays_on_its_consumer(make, open_transport):
    """ack(multiple=True) on one consumer's delivery leaves another consumer's unacked."""
    transport = open_transport()
    q1, q2 = make.queue("one"), make.queue("two")
    first = transport.consume(q1, prefetch=5)
    second = transport.consume(q2, prefetch=5)
    put(make.transport, q2, "b1")
    take(second, 1)  # b1, held unacked by the other consumer
    put(make.transport, q1, "a1")
    (a1,) = take(first, 1)
    a1.ack(multiple=True)
    transport.close()
    got = make.transport.get(q2, auto_ack=True)
    assert got is not None and got.body == b"b1" and got.redelivered


def test_a_non_durable_stream_is_refused(make):
    """A stream queue must be durable: PRECONDITION_FAILED, as for a quorum queue."""
    with pytest.raises(PreconditionFailed):
        make.queue("log", durable=False, arguments={"x-queue-type": "stream"})


@pytest.mark.parametrize(("queue_type", "order"), [("quorum", "m2 m1 m0"), ("classic", "m0 m1 m2")])
def test_what_one_publish_drops_is_dead_lettered_in_the_queue_types_order(
    make, open_transport, queue_type, order
):
    """x-max-length-bytes 6 holding m0 m1 m2, then a 6-byte message: all three are
    dropped from the head by one publish. A quorum queue dead-letters them newest
    first (RabbitMQ gathers one command's drops newest in front), a classic one oldest
    first."""
    dlx = make.exchange("dlx", "fanout", durable=False)
    dlq = make.queue("dead")
    make.transport.bind_queue(dlq, dlx, "")
    args = {"x-queue-type": queue_type, "x-max-length-bytes": 6, "x-dead-letter-exchange": dlx}
    q = make.queue("work", arguments=args)
    put(make.transport, q, "m0", "m1", "m2", "xxxxxx")
    dead = take(open_transport().consume(dlq, prefetch=10), 3)  # dead-lettering is async
    assert " ".join(d.body.decode() for d in dead) == order
    kept = make.transport.get(q, auto_ack=True)
    assert kept is not None and kept.body == b"xxxxxx"


def test_a_closed_connection_returns_its_channels_in_the_order_they_were_opened(
    make, open_transport
):
    """A closing connection returns its channels' messages channel by channel, oldest
    channel first, a cancelled consumer's in its place: m0, held by a consumer cancelled
    before the one holding m1 m2 was made, comes back first. All three expired while
    held, so a quorum queue dead-letters them in the order they came back."""
    dlx = make.exchange("dlx", "fanout", durable=False)
    dlq = make.queue("dead")
    make.transport.bind_queue(dlq, dlx, "")
    args = {"x-queue-type": "quorum", "x-dead-letter-exchange": dlx}
    q = make.queue("work", arguments=args)
    transport = open_transport()
    first = transport.consume(q, prefetch=5)
    brief = Properties(expiration="50")
    put(make.transport, q, "m0", properties=brief)
    take(first, 1)
    first.cancel()  # m0 stays unacked on the first consumer's channel
    second = transport.consume(q, prefetch=5)
    put(make.transport, q, "m1", "m2", properties=brief)
    take(second, 2)
    time.sleep(0.1)  # all three expire while held
    transport.close()
    dead = take(open_transport().consume(dlq, prefetch=10), 3)
    assert " ".join(d.body.decode() for d in dead) == "m0 m1 m2"


def test_a_message_dropped_at_the_delivery_limit_credits_its_consumer_twice(make, open_transport):
    """RabbitMQ 3.10 credits a consumer both for settling and for returning a nacked
    message that a quorum queue drops at its x-delivery-limit: with prefetch 1, the
    consumer is then sent the next two messages without acking the first."""
    q = make.queue("work", arguments={"x-queue-type": "quorum", "x-delivery-limit": 0})
    consumer = open_transport().consume(q, prefetch=1)
    put(make.transport, q, "m0")
    (m0,) = take(consumer, 1)
    m0.nack(requeue=True)  # its first return passes the limit: dropped
    put(make.transport, q, "m1", "m2")
    assert [d.body for d in take(consumer, 2)] == [b"m1", b"m2"]


def test_a_quorum_queue_dead_letters_a_steps_trim_before_its_expiry(make, open_transport):
    """A closed consumer returns m0 (expired while held) and m1 to a quorum queue that
    holds m2 under x-max-length 1: m0 expires at the head and m1 is dropped by the
    bound in the same step, and the bound's dead letter goes out first (rabbit_fifo
    puts a step's trim in front of its other effects)."""
    dlx = make.exchange("dlx", "fanout", durable=False)
    dlq = make.queue("dead")
    make.transport.bind_queue(dlq, dlx, "")
    args = {"x-queue-type": "quorum", "x-max-length": 1, "x-dead-letter-exchange": dlx}
    q = make.queue("work", arguments=args)
    transport = open_transport()
    consumer = transport.consume(q, prefetch=2)
    put(make.transport, q, "m0", properties=Properties(expiration="50"))
    put(make.transport, q, "m1")
    take(consumer, 2)
    put(make.transport, q, "m2")
    time.sleep(0.1)  # m0 expires while held
    transport.close()
    dead = take(open_transport().consume(dlq, prefetch=10), 2)
    assert " ".join(d.body.decode() for d in dead) == "m1 m0"
    kept = make.transport.get(q, auto_ack=True)
    assert kept is not None and kept.body == b"m2"


def test_a_refused_get_returns_what_was_got_before_it(make, open_transport):
    """A basic.get refused (NOT_FOUND) closes the channel gets come on: a message got on
    it and not settled goes back to its queue at once."""
    q = make.queue("work")
    transport = open_transport()
    put(make.transport, q, "m0")
    held = transport.get(q)
    assert held is not None
    with pytest.raises(NotFound):
        transport.get(make.names("missing"))
    again = transport.get(q, auto_ack=True)
    assert again is not None and again.body == b"m0" and again.redelivered
