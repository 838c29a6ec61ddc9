"""The in-process broker beyond the contract suite: thread safety and RabbitMQ's corners."""

from __future__ import annotations

import queue
import threading
from collections import Counter

import pytest

from logbus.broker import Broker, open_session
from logbus.errors import AccessRefused, NotFound
from logbus.message import Message, Properties


def msg(exchange: str, key: str, body: bytes = b"x", **props) -> Message:
    """A message with the given properties."""
    return Message(body, Properties(**props), exchange, key)


def test_concurrent_publishers_and_consumers_lose_and_duplicate_nothing():
    """4 publisher threads and 3 competing consumers: every message acked exactly once."""
    broker = Broker("threads")
    admin = open_session(broker)
    admin.declare_queue("work")
    per_publisher, publishers = 2_000, 4
    total = per_publisher * publishers
    seen: Counter[bytes] = Counter()
    seen_lock = threading.Lock()
    done = threading.Event()

    def consume() -> None:
        session = open_session(broker)
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        session.consume("work", inbox.put, prefetch=50)
        while not done.is_set():
            try:
                with session.waiting():  # pipelined acks apply before blocking
                    delivered = inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            with seen_lock:
                seen[delivered.message.body] += 1
                if sum(seen.values()) >= total:
                    done.set()
            session.settle_later(delivered.delivery_tag, multiple=False, requeue=None)
        session.close()

    def publish(n: int) -> None:
        session = open_session(broker)
        for i in range(per_publisher):
            session.publish(msg("", "work", f"{n}-{i}".encode()))

    threads = [threading.Thread(target=consume) for _ in range(3)]
    threads += [threading.Thread(target=publish, args=(n,)) for n in range(publishers)]
    for t in threads:
        t.start()
    assert done.wait(30), f"only {sum(seen.values())} of {total} delivered"
    for t in threads:
        t.join(10)
    assert len(seen) == total
    assert set(seen.values()) == {1}


def test_auto_delete_queue_goes_when_its_last_consumer_cancels():
    """An auto-delete queue is deleted once it had a consumer and the last one left."""
    session = open_session(Broker())
    session.declare_queue("temp", auto_delete=True)
    tag = session.consume("temp", lambda d: None)
    session.cancel(tag)
    with pytest.raises(NotFound, match="temp"):
        session.declare_queue("temp", passive=True)


def test_repeated_deaths_in_one_queue_increment_the_x_death_count():
    """A message rejected twice from the same queue has one x-death entry with count 2."""
    session = open_session(Broker())
    session.declare_exchange("dlx", "fanout")
    session.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx"})
    session.bind_queue("work", "dlx")
    session.publish(msg("", "work"))
    for _ in range(2):
        delivered = session.get("work")
        assert delivered is not None
        session.reject(delivered.delivery_tag, requeue=False)
    delivered = session.get("work")
    assert delivered is not None
    (death,) = delivered.message.properties.headers["x-death"]
    assert death["count"] == 2
    assert death["reason"] == "rejected"


def test_an_automatic_dead_letter_cycle_is_dropped():
    """A message expiring back into the queue it expired from, never rejected, is dropped."""
    broker = Broker()
    session = open_session(broker)
    session.declare_exchange("loop", "fanout")
    session.declare_queue("a", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "loop"})
    session.bind_queue("a", "loop")
    session.publish(msg("", "a"))
    session.publish(msg("", "a"))
    assert (
        session.declare_queue(
            "a", arguments={"x-message-ttl": 0, "x-dead-letter-exchange": "loop"}, passive=True
        ).message_count
        == 0
    )


def test_publishing_to_an_internal_exchange_is_refused():
    """An internal exchange only takes messages from other exchanges."""
    session = open_session(Broker())
    session.declare_exchange("inner", "fanout", internal=True)
    with pytest.raises(AccessRefused, match="inner"):
        session.publish(msg("inner", ""))


def test_the_amq_prefix_is_reserved():
    """Declaring an amq.* exchange or queue is refused as RabbitMQ refuses it."""
    session = open_session(Broker())
    with pytest.raises(AccessRefused):
        session.declare_exchange("amq.mine", "topic")
    with pytest.raises(AccessRefused):
        session.declare_queue("amq.mine")


def test_headers_routed_messages_bypass_the_route_cache_correctly():
    """Two messages with the same key but different headers route by their own headers."""
    session = open_session(Broker())
    session.declare_exchange("h", "headers")
    session.declare_queue("web1")
    session.bind_queue("web1", "h", "", {"host": "web1"})
    session.publish(msg("h", "k", headers={"host": "web1"}))
    session.publish(msg("h", "k", headers={"host": "db1"}))
    session.publish(msg("h", "k"))
    assert session.declare_queue("web1", passive=True).message_count == 1


def test_a_new_binding_is_seen_by_the_next_publish():
    """Routing decisions cached for a key are dropped when bindings change."""
    session = open_session(Broker())
    session.declare_exchange("t", "topic")
    session.declare_queue("q")
    session.publish(msg("t", "kern.info"))
    session.bind_queue("q", "t", "kern.*")
    session.publish(msg("t", "kern.info"))
    session.unbind_queue("q", "t", "kern.*")
    session.publish(msg("t", "kern.info"))
    assert session.declare_queue("q", passive=True).message_count == 1
