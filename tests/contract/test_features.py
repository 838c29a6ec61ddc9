"""Contract: RabbitMQ 3.10's queue and exchange features, the same on every transport (issue 15).

Priorities, a single active consumer, queue expiry, alternate exchanges, ``CC``/``BCC``
and the quorum delivery limit: what RabbitMQ does with each (checked against a live
node with plain pika first), and the 406/405 it answers where it refuses one.
"""

from __future__ import annotations

import time

import pytest

from logbus.errors import PreconditionFailed, ResourceLocked, Unroutable
from logbus.message import Message, Properties
from tests.contract.test_delivery import nothing_more, put, take


def drain(transport, queue: str) -> list[str]:
    """Every ready message of ``queue`` by basic.get with auto-ack, as text."""
    out: list[str] = []
    while (got := transport.get(queue, auto_ack=True)) is not None:
        out.append(got.body.decode())
    return out


# -- priorities ------------------------------------------------------------------------


def test_a_priority_queue_serves_higher_priorities_first_fifo_within_one(make):
    """x-max-priority 5: priority 9 counts as 5, none as 0; FIFO within a priority."""
    q = make.queue("work", arguments={"x-max-priority": 5})
    for body, priority in (("a", None), ("b", 1), ("c", 5), ("d", 9), ("e", 0), ("f", 5)):
        put(make.transport, q, body, properties=Properties(priority=priority))
    assert drain(make.transport, q) == ["c", "d", "f", "b", "a", "e"]


def test_a_requeued_message_returns_to_its_place_within_its_priority(make):
    """Two high-priority gets requeued come back before the rest, in publish order."""
    q = make.queue("work", arguments={"x-max-priority": 2})
    for body, priority in (("low", 0), ("h1", 2), ("h2", 2), ("h3", 2)):
        put(make.transport, q, body, properties=Properties(priority=priority))
    first, second = make.transport.get(q), make.transport.get(q)
    assert first is not None and second is not None
    second.reject(requeue=True)
    first.reject(requeue=True)
    assert drain(make.transport, q) == ["h1", "h2", "h3", "low"]


@pytest.mark.parametrize("value", [256, -1, "5"])
def test_an_invalid_max_priority_is_refused(make, value):
    """x-max-priority must be an integer from 0 to 255."""
    with pytest.raises(PreconditionFailed, match="x-max-priority"):
        make.queue("work", arguments={"x-max-priority": value})


def test_a_quorum_queue_refuses_priorities(make):
    """Quorum queues of RabbitMQ 3.10 have no priorities: 406, never ignored."""
    with pytest.raises(PreconditionFailed, match="x-max-priority"):
        make.queue("work", arguments={"x-queue-type": "quorum", "x-max-priority": 5})


# -- single active consumer ------------------------------------------------------------


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_one_consumer_is_active_and_the_next_takes_over(make, open_transport, queue_type):
    """Only the first consumer gets messages; when its connection goes the next one
    gets them, redelivered."""
    args = {"x-single-active-consumer": True, "x-queue-type": queue_type}
    q = make.queue("work", arguments=args)
    first_connection = open_transport()
    first = first_connection.consume(q, prefetch=10)
    second = open_transport().consume(q, prefetch=10)
    put(make.transport, q, "m1", "m2")
    assert [d.body for d in take(first, 2)] == [b"m1", b"m2"]
    assert nothing_more(second)
    first_connection.close()
    taken = take(second, 2)
    assert [(d.body, d.redelivered) for d in taken] == [(b"m1", True), (b"m2", True)]


def test_basic_get_on_a_single_active_consumer_quorum_queue_is_resource_locked(make):
    """RabbitMQ 3.10 refuses basic.get there with 405."""
    q = make.queue("work", arguments={"x-single-active-consumer": True, "x-queue-type": "quorum"})
    with pytest.raises(ResourceLocked, match="single active consumer"):
        make.transport.get(q)


def test_single_active_consumer_must_be_a_boolean(make):
    """A string for x-single-active-consumer is refused."""
    with pytest.raises(PreconditionFailed, match="x-single-active-consumer"):
        make.queue("work", arguments={"x-single-active-consumer": "true"})


# -- queue expiry ----------------------------------------------------------------------


def test_an_unused_queue_expires(make):
    """x-expires: a queue nobody consumes, gets or declares is deleted after that long.

    Publishing does not count as use: mandatory publishes find it until it is gone.
    """
    q = make.queue("work", arguments={"x-expires": 300})
    message = Message(b"x", Properties(), "", q)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        try:
            make.transport.publish(message, mandatory=True)
        except Unroutable:
            return
        time.sleep(0.05)
    pytest.fail("the queue was still there 15 s after its x-expires of 300 ms")


def test_a_consumer_keeps_an_expiring_queue(make, open_transport):
    """While a consumer is on it, an x-expires queue stays (checked past its expiry)."""
    q = make.queue("work", arguments={"x-expires": 200})
    consumer = open_transport().consume(q, prefetch=1)
    assert nothing_more(consumer, wait=0.6)  # three times its x-expires
    put(make.transport, q, "still-here")
    assert [d.body for d in take(consumer, 1)] == [b"still-here"]


@pytest.mark.parametrize("value", [0, -1, "5"])
def test_an_invalid_expires_is_refused(make, value):
    """x-expires must be a positive integer."""
    with pytest.raises(PreconditionFailed, match="x-expires"):
        make.queue("work", arguments={"x-expires": value})


# -- alternate exchanges ---------------------------------------------------------------


def test_unroutable_messages_go_to_the_alternate_exchange(make):
    """What the exchange cannot route goes to its AE, and mandatory then counts it routed."""
    ae = make.exchange("ae", "fanout", durable=False)
    x = make.exchange("x", "direct", durable=False, arguments={"alternate-exchange": ae})
    caught, bound = make.queue("caught"), make.queue("bound")
    make.transport.bind_queue(caught, ae, "")
    make.transport.bind_queue(bound, x, "k")
    make.transport.publish(Message(b"routed", Properties(), x, "k"), mandatory=True)
    make.transport.publish(Message(b"stray", Properties(), x, "other"), mandatory=True)
    assert drain(make.transport, bound) == ["routed"]
    assert drain(make.transport, caught) == ["stray"]


def test_a_missing_alternate_exchange_leaves_the_message_unroutable(make):
    """An AE that does not exist routes nothing: a mandatory publish is returned."""
    x = make.exchange("x", "direct", durable=False, arguments={"alternate-exchange": "no-such"})
    with pytest.raises(Unroutable):
        make.transport.publish(Message(b"lost", Properties(), x, "k"), mandatory=True)


def test_an_alternate_exchange_must_be_a_string(make):
    """A number as alternate-exchange is refused with 406."""
    with pytest.raises(PreconditionFailed, match="alternate-exchange"):
        make.exchange("x", "direct", durable=False, arguments={"alternate-exchange": 5})


# -- CC and BCC ------------------------------------------------------------------------


def test_cc_and_bcc_add_routing_keys_and_bcc_is_taken_off(make):
    """CC and BCC name more queues; every copy keeps CC and loses BCC."""
    main, copy, blind = make.queue("main"), make.queue("copy"), make.queue("blind")
    headers = {"CC": [copy], "BCC": [blind], "other": 1}
    put(make.transport, main, "memo", properties=Properties(headers=headers))
    for q in (main, copy, blind):
        got = make.transport.get(q, auto_ack=True)
        assert got is not None and got.body == b"memo"
        assert got.routing_key == main
        assert "BCC" not in got.properties.headers
        assert got.properties.headers["CC"] == [copy]
        assert got.properties.headers["other"] == 1


def test_a_cc_header_that_is_not_an_array_is_refused(make, open_transport):
    """CC as a string: RabbitMQ closes the channel with 406."""
    q = make.queue("main")
    message = Message(b"memo", Properties(headers={"CC": q}), "", q)
    with pytest.raises(PreconditionFailed, match="CC"):
        open_transport().publish(message, mandatory=False)


# -- quorum delivery limit -------------------------------------------------------------


def test_a_message_returned_past_the_delivery_limit_is_dead_lettered(make):
    """x-delivery-limit 1: the second return dead-letters it with reason delivery_limit;
    each delivery carries x-delivery-count."""
    dlx = make.exchange("dlx", "fanout", durable=False)
    dlq = make.queue("dead")
    make.transport.bind_queue(dlq, dlx, "")
    args = {"x-queue-type": "quorum", "x-delivery-limit": 1, "x-dead-letter-exchange": dlx}
    q = make.queue("work", arguments=args)
    put(make.transport, q, "m")
    counts = []
    for _ in range(2):
        got = make.transport.get(q)
        assert got is not None
        counts.append(got.properties.headers.get("x-delivery-count"))
        got.nack(requeue=True)
    assert counts == [0, 1]
    assert make.transport.get(q) is None
    dead = make.transport.get(dlq, auto_ack=True)
    assert dead is not None and dead.body == b"m"
    assert dead.properties.headers["x-death"][0]["reason"] == "delivery_limit"


def test_a_classic_queue_refuses_a_delivery_limit(make):
    """x-delivery-limit is a quorum queue's: a classic queue answers 406."""
    with pytest.raises(PreconditionFailed, match="x-delivery-limit"):
        make.queue("work", arguments={"x-delivery-limit": 2})


def test_a_cancelled_quorum_consumer_counts_until_it_settles(make, open_transport):
    """RabbitMQ 3.10 keeps a cancelled quorum consumer, and counts it, while it holds
    unacked deliveries."""
    q = make.queue("work", arguments={"x-queue-type": "quorum"})
    consumer = open_transport().consume(q, prefetch=5)
    put(make.transport, q, "m")
    (held,) = take(consumer, 1)
    consumer.cancel()
    assert make.transport.declare_queue(q, passive=True).consumer_count == 1
    held.ack()
    deadline = time.monotonic() + 5.0
    while make.transport.declare_queue(q, passive=True).consumer_count and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)  # the ack travels asynchronously on amqp://
    assert make.transport.declare_queue(q, passive=True).consumer_count == 0
