"""Contract: consumers, prefetch, acks, requeue, redelivery, dead letters, TTL, bounds."""

from __future__ import annotations

import time

import pytest

from logbus.errors import NotConfirmed, PreconditionFailed, ResourceLocked
from logbus.message import Message, Properties
from logbus.transports import Consumer, Delivery, Transport
from logbus.transports.base import Settlement, get_many, settle_many


def put(transport: Transport, queue: str, *bodies: str, properties: Properties | None = None):
    """Publish bodies straight to a queue through the default exchange."""
    transport.publish_many(
        Message(b.encode(), properties or Properties(), "", queue) for b in bodies
    )


def take(consumer: Consumer, n: int, timeout: float = 5.0) -> list[Delivery]:
    """Exactly n deliveries, failing if they do not come before the deadline."""
    out: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        delivery = consumer.get(timeout=max(0.0, left)) if left > 0 else None
        assert delivery is not None, f"only {len(out)} of {n} deliveries arrived"
        out.append(delivery)
    return out


def nothing_more(consumer: Consumer, wait: float = 0.3) -> bool:
    """True when no further delivery arrives within ``wait`` seconds."""
    return consumer.get(timeout=wait) is None


def test_competing_consumers_share_round_robin(make, open_transport):
    """Two consumers on one queue get alternate messages."""
    q = make.queue("work")
    a = open_transport().consume(q, prefetch=100)
    b = open_transport().consume(q, prefetch=100)
    put(make.transport, q, *[str(i) for i in range(10)])
    got_a = [d.body for d in take(a, 5)]
    got_b = [d.body for d in take(b, 5)]
    assert sorted(got_a + got_b) == sorted(str(i).encode() for i in range(10))
    assert got_a == [str(i).encode() for i in (0, 2, 4, 6, 8)]


def test_prefetch_bounds_unacked_deliveries(make, open_transport):
    """A consumer with prefetch 3 holds at most 3 unacked; an ack lets one more in."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=3)
    put(make.transport, q, *[str(i) for i in range(6)])
    first = take(consumer, 3)
    assert nothing_more(consumer)
    first[0].ack()
    assert [d.body for d in take(consumer, 1)] == [b"3"]


def test_busy_consumer_does_not_hoard_with_fair_dispatch(make, open_transport):
    """With prefetch 1, a consumer that has not acked gets nothing while another is free."""
    q = make.queue("work")
    slow = open_transport().consume(q, prefetch=1)
    fast = open_transport().consume(q, prefetch=1)
    put(make.transport, q, *[str(i) for i in range(5)])
    held = take(slow, 1)
    bodies = []
    for _ in range(4):
        (d,) = take(fast, 1)
        bodies.append(d.body)
        d.ack()
    assert bodies == [b"1", b"2", b"3", b"4"]
    held[0].ack()


def test_nack_with_requeue_redelivers_with_the_flag(make, open_transport):
    """A requeued message comes back with redelivered=True."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=1)
    put(make.transport, q, "m")
    (first,) = take(consumer, 1)
    assert first.redelivered is False
    first.nack(requeue=True)
    (again,) = take(consumer, 1)
    assert again.body == b"m"
    assert again.redelivered is True
    again.ack()


def test_reject_without_requeue_drops_the_message(make, open_transport):
    """A rejected message without a dead-letter exchange is gone."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=1)
    put(make.transport, q, "m")
    take(consumer, 1)[0].reject(requeue=False)
    assert nothing_more(consumer)
    assert make.transport.declare_queue(q, passive=True).message_count == 0


def test_closing_a_connection_requeues_its_unacked_messages(make, open_transport):
    """Unacked deliveries of a closed connection go to another consumer, redelivered."""
    q = make.queue("work")
    doomed = open_transport()
    consumer = doomed.consume(q, prefetch=10)
    put(make.transport, q, "a", "b")
    take(consumer, 2)
    doomed.close()
    survivor = open_transport().consume(q, prefetch=10)
    again = take(survivor, 2)
    assert [d.body for d in again] == [b"a", b"b"]
    assert all(d.redelivered for d in again)


def test_multiple_ack_settles_every_earlier_delivery(make, open_transport):
    """ack(multiple=True) on the third delivery acks the first three."""
    q = make.queue("work")
    conn = open_transport()
    consumer = conn.consume(q, prefetch=10)
    put(make.transport, q, "a", "b", "c")
    deliveries = take(consumer, 3)
    deliveries[2].ack(multiple=True)
    conn.close()
    assert make.transport.declare_queue(q, passive=True).message_count == 0


def test_settling_a_delivery_twice_is_refused(make, open_transport):
    """A second ack of the same delivery raises instead of corrupting the channel."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=1)
    put(make.transport, q, "a")
    (d,) = take(consumer, 1)
    d.ack()
    with pytest.raises(PreconditionFailed):
        d.ack()


def take_many(consumer: Consumer, n: int, limit: int, timeout: float = 5.0) -> list[list[Delivery]]:
    """Batches from get_many (at most ``limit`` each) until n deliveries came, in order."""
    batches: list[list[Delivery]] = []
    deadline = time.monotonic() + timeout
    while sum(len(batch) for batch in batches) < n:
        left = deadline - time.monotonic()
        got = sum(len(batch) for batch in batches)
        assert left > 0, f"only {got} of {n} deliveries arrived"
        batch = get_many(consumer, limit, timeout=left)
        assert 1 <= len(batch) <= limit
        batches.append(batch)
    return batches


def test_get_many_hands_over_deliveries_in_order_at_most_limit_at_a_time(make, open_transport):
    """Batches of get_many hold at most its limit, in queue order; empty after the timeout."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=10)
    put(make.transport, q, *[str(i) for i in range(7)])
    batches = take_many(consumer, 7, limit=3)
    assert [d.body for batch in batches for d in batch] == [str(i).encode() for i in range(7)]
    assert get_many(consumer, 3, timeout=0.3) == []


def test_get_many_waits_for_the_first_delivery(make, open_transport):
    """A get_many waiting on an empty queue returns the message published meanwhile."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=10)
    assert get_many(consumer, 5, timeout=0) == []
    put(make.transport, q, "late")
    assert [d.body for d in get_many(consumer, 5, timeout=5.0)] == [b"late"]


def test_settle_many_acks_exactly_the_deliveries_given(make, open_transport):
    """Acking the 1st and 3rd of four leaves the 2nd and 4th unacked: they come back."""
    q = make.queue("work")
    doomed = open_transport()
    consumer = doomed.consume(q, prefetch=10)
    put(make.transport, q, "a", "b", "c", "d")
    a, b, c, _d = take(consumer, 4)
    settle_many([c, a])
    assert (a.settled, b.settled, c.settled) == (Settlement.ACK, None, Settlement.ACK)
    doomed.close()
    again = take(open_transport().consume(q, prefetch=10), 2)
    assert [delivery.body for delivery in again] == [b"b", b"d"]
    assert all(delivery.redelivered for delivery in again)


def test_settle_many_acks_a_whole_batch(make, open_transport):
    """A batch acked with settle_many is gone from the queue for good."""
    q = make.queue("work")
    conn = open_transport()
    consumer = conn.consume(q, prefetch=10)
    put(make.transport, q, *[str(i) for i in range(6)])
    settle_many([d for batch in take_many(consumer, 6, limit=6) for d in batch])
    conn.close()
    assert nothing_more(open_transport().consume(q, prefetch=10))
    assert make.transport.declare_queue(q, passive=True).message_count == 0


def test_settle_many_with_requeue_redelivers_the_batch(make, open_transport):
    """A batch nacked with requeue comes back, each with redelivered=True."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=10)
    put(make.transport, q, "a", "b")
    first = take(consumer, 2)
    settle_many(first, Settlement.NACK, requeue=True)
    again = take(consumer, 2)
    assert sorted(d.body for d in again) == [b"a", b"b"]
    assert all(d.redelivered for d in again)
    settle_many(again)


def test_settle_many_refuses_a_settled_delivery_and_settles_none(make, open_transport):
    """One delivery of the batch already acked: PreconditionFailed, the others untouched."""
    q = make.queue("work")
    consumer = open_transport().consume(q, prefetch=10)
    put(make.transport, q, "a", "b")
    a, b = take(consumer, 2)
    a.ack()
    with pytest.raises(PreconditionFailed):
        settle_many([b, a])
    assert b.settled is None
    with pytest.raises(PreconditionFailed):
        settle_many([b, b])
    settle_many([b])
    assert b.settled is Settlement.ACK


def test_get_takes_one_message_and_none_when_empty(make, transport):
    """basic.get returns the head message, then None."""
    q = make.queue("work")
    put(transport, q, "a")
    d = transport.get(q)
    assert d is not None
    assert d.body == b"a"
    d.ack()
    assert transport.get(q) is None


def test_purge_removes_ready_messages(make, transport):
    """Purging returns and removes the ready messages."""
    q = make.queue("work")
    put(transport, q, "a", "b", "c")
    assert transport.purge_queue(q) == 3
    assert transport.get(q) is None


def test_rejected_message_is_dead_lettered_with_x_death(make, open_transport):
    """reject(requeue=False) sends it to the DLX with an x-death entry."""
    dlx = make.exchange("dlx", "fanout")
    dead = make.queue("dead")
    make.transport.bind_queue(dead, dlx)
    q = make.queue("work", arguments={"x-dead-letter-exchange": dlx})
    consumer = open_transport().consume(q, prefetch=1)
    put(make.transport, q, "poison")
    take(consumer, 1)[0].reject(requeue=False)
    dead_consumer = open_transport().consume(dead, prefetch=1)
    (d,) = take(dead_consumer, 1)
    assert d.body == b"poison"
    (death,) = d.properties.headers["x-death"]
    assert death["queue"] == q
    assert death["reason"] == "rejected"
    assert death["count"] == 1
    assert list(death["routing-keys"]) == [q]
    d.ack()


def test_dead_letter_routing_key_replaces_the_original(make, open_transport):
    """x-dead-letter-routing-key is the key dead letters are published with."""
    dlx = make.exchange("dlx", "direct")
    dead = make.queue("dead")
    make.transport.bind_queue(dead, dlx, "parked")
    q = make.queue(
        "work", arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "parked"}
    )
    consumer = open_transport().consume(q, prefetch=1)
    put(make.transport, q, "m")
    take(consumer, 1)[0].nack(requeue=False)
    (d,) = take(open_transport().consume(dead, prefetch=1), 1)
    assert d.routing_key == "parked"
    d.ack()


def test_message_ttl_expires_into_the_dead_letter_queue(make, open_transport):
    """A queue TTL dead-letters unconsumed messages with reason expired."""
    dlx = make.exchange("dlx", "fanout")
    dead = make.queue("dead")
    make.transport.bind_queue(dead, dlx)
    q = make.queue("work", arguments={"x-message-ttl": 50, "x-dead-letter-exchange": dlx})
    put(make.transport, q, "old")
    (d,) = take(open_transport().consume(dead, prefetch=1), 1)
    assert d.properties.headers["x-death"][0]["reason"] == "expired"
    d.ack()
    assert make.transport.declare_queue(q, passive=True).message_count == 0


def test_per_message_expiration_is_honoured(make, open_transport):
    """A message with expiration '50' is dead-lettered when it expires."""
    dlx = make.exchange("dlx", "fanout")
    dead = make.queue("dead")
    make.transport.bind_queue(dead, dlx)
    q = make.queue("work", arguments={"x-dead-letter-exchange": dlx})
    put(make.transport, q, "short", properties=Properties(expiration="50"))
    (d,) = take(open_transport().consume(dead, prefetch=1), 1)
    assert d.body == b"short"
    assert d.properties.expiration is None
    d.ack()


def test_max_length_drop_head_drops_the_oldest(make, transport):
    """At x-max-length with drop-head, the oldest ready message goes."""
    q = make.queue("work", arguments={"x-max-length": 2})
    put(transport, q, "a", "b", "c")
    bodies = []
    while (d := transport.get(q)) is not None:
        bodies.append(d.body)
        d.ack()
    assert bodies == [b"b", b"c"]


def test_max_length_reject_publish_refuses_new_messages(make, transport):
    """At x-max-length with reject-publish, the publish is not confirmed."""
    q = make.queue("work", arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    put(transport, q, "a", "b")
    with pytest.raises(NotConfirmed):
        put(transport, q, "c")
    assert transport.declare_queue(q, passive=True).message_count == 2


def test_exclusive_queue_is_locked_to_its_connection(make, names, open_transport):
    """Another connection cannot use an exclusive queue (RESOURCE_LOCKED)."""
    owner = open_transport()
    q = owner.declare_queue(names("excl"), exclusive=True, auto_delete=True).name
    with pytest.raises(ResourceLocked):
        open_transport().consume(q)


def test_exclusive_queue_goes_with_its_connection(names, open_transport):
    """Closing the owner deletes its exclusive queue."""
    owner = open_transport()
    q = owner.declare_queue("", exclusive=True).name
    assert q
    owner.close()
    from logbus.errors import NotFound

    with pytest.raises(NotFound):
        open_transport().declare_queue(q, passive=True)


def test_deleting_a_queue_reports_its_ready_messages(make, transport):
    """queue.delete returns how many messages went with it."""
    q = make.queue("work")
    put(transport, q, "a", "b")
    assert transport.delete_queue(q) == 2
