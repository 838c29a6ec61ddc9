"""gevent:// without monkey-patching, where deliveries can come from real threads.

Each test runs in a fresh interpreter that never patches: there the broker's TTL
reaper is a real thread, and so is any thread the program starts.
"""

from __future__ import annotations

PRELUDE = """
import threading

import gevent.monkey

from logbus.message import Message
from logbus.transports import connect

assert not gevent.monkey.is_module_patched("threading")
"""


def test_a_dead_letter_from_the_reaper_thread_wakes_a_waiting_greenlet(run_python):
    """A TTL dead letter, made on the real reaper thread, reaches get() waiting with no timeout."""
    result = run_python(
        PRELUDE
        + """
with connect("gevent://ttl") as transport:
    transport.declare_exchange("dlx", "fanout")
    transport.declare_queue("dead")
    transport.bind_queue("dead", "dlx")
    transport.declare_queue(
        "work", arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "dlx"}
    )
    consumer = transport.consume("dead", prefetch=1)
    transport.publish(Message(b"old", routing_key="work"))
    delivery = consumer.get()  # only the reaper thread can deliver this
    reaper = transport.broker._reaper
    print(delivery.body.decode(), reaper is not None and reaper.ident != threading.get_ident())
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["old", "True"]


def test_a_real_thread_publishing_reaches_a_greenlet_consumer_in_order(run_python):
    """Every message a real thread publishes reaches a greenlet consumer, in order."""
    result = run_python(
        PRELUDE
        + """
with connect("gevent://threads") as transport:
    transport.declare_queue("q")
    consumer = transport.consume("q", prefetch=50)

    def publish():
        with connect("gevent://threads") as own:
            for i in range(500):
                own.publish(Message(str(i).encode(), routing_key="q"))

    thread = threading.Thread(target=publish)
    thread.start()
    got = []
    while len(got) < 500:
        delivery = consumer.get(timeout=10)
        assert delivery is not None, f"only {len(got)} arrived"
        got.append(int(delivery.body))
        delivery.ack()
    thread.join()
    print(got == list(range(500)))
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


def test_a_delivery_parked_by_a_thread_stays_ahead_of_later_ones(run_python):
    """A delivery made on a thread is read before one made afterwards on the consumer's own."""
    result = run_python(
        PRELUDE
        + """
with connect("gevent://order") as transport:
    transport.declare_queue("q")
    consumer = transport.consume("q")

    def publish_a():
        with connect("gevent://order") as own:
            own.publish(Message(b"a", routing_key="q"))

    thread = threading.Thread(target=publish_a)
    thread.start()
    thread.join()  # a real join: the hub has not run, so "a" is still parked
    transport.publish(Message(b"b", routing_key="q"))
    first, second = consumer.get(timeout=5), consumer.get(timeout=5)
    print(first.body.decode(), second.body.decode(), first.delivery_tag < second.delivery_tag)
"""
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["a", "b", "True"]
