"""How the worker's threads take batches from a consumer (``Taker``), on ``memory://``."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import pytest

from logbus.errors import ConnectionLost
from logbus.message import Message
from logbus.transports import Transport, connect
from logbus.transports.base import Consumer, Delivery, settle_many
from logbus.worker.batching import Batching, Taker


@pytest.fixture
def transport() -> Iterator[Transport]:
    """A session on a broker of this test's own, with a queue ``tasks``."""
    with connect(f"memory://batching-{secrets.token_hex(4)}") as opened:
        opened.declare_queue("tasks")
        yield opened


def put(transport: Transport, count: int, first: int = 0) -> None:
    """Publish ``count`` messages numbered from ``first`` to ``tasks``."""
    numbers = range(first, first + count)
    transport.publish_many(Message(str(i).encode(), routing_key="tasks") for i in numbers)


def arrived(transport: Transport) -> None:
    """Wait until every message left the queue for the consumer (prefetched)."""
    deadline = time.monotonic() + 5
    while transport.declare_queue("tasks", passive=True).message_count > 0:
        assert time.monotonic() < deadline, "the messages did not reach the consumer"
        threading.Event().wait(0.01)


def bodies(batch: list[Delivery]) -> list[int]:
    """The numbers the batch's messages carry."""
    return [int(delivery.body) for delivery in batch]


def taker(
    consumer: Consumer, *, max_batch: int = 100, max_wait: float = 0.0, concurrency: int = 1
) -> Taker:
    """A taker of ``consumer`` for a sink with these hints, never stopping."""
    return Taker(
        consumer,
        Batching(max_batch, max_wait),
        concurrency,
        prefetch=100,
        stopping=lambda: False,
        poll=0.05,
    )


def test_one_thread_takes_everything_waiting_up_to_max_batch(transport):
    """Alone, a thread takes what has arrived, at most max_batch at a time, in order."""
    consumer = transport.consume("tasks", prefetch=100)
    put(transport, 25)
    arrived(transport)
    take = taker(consumer, max_batch=10)
    batches = [take.take() for _ in range(3)]
    assert [len(batch) for batch in batches] == [10, 10, 5]
    assert [n for batch in batches for n in bodies(batch)] == list(range(25))


def test_a_thread_takes_only_its_share_and_leaves_the_rest_for_the_others(transport):
    """With 4 threads and 8 waiting, the first takes 1 + 7 // 4 = 2 and the others get some."""
    consumer = transport.consume("tasks", prefetch=100)
    put(transport, 8)
    arrived(transport)
    take = taker(consumer, concurrency=4)
    sizes = [len(take.take()) for _ in range(4)]
    assert sizes[0] == 2
    assert all(size >= 1 for size in sizes)
    assert sum(sizes) <= 8


def test_a_sink_that_waits_gets_its_batch_filled_by_records_that_come_later(transport):
    """max_wait: with one record in hand the thread waits for two more, then writes three."""
    consumer = transport.consume("tasks", prefetch=100)
    put(transport, 1)
    later = threading.Timer(0.2, put, (transport, 2, 1))
    later.start()
    batch = taker(consumer, max_batch=3, max_wait=5.0).take()
    later.join()
    assert bodies(batch) == [0, 1, 2]


def test_a_sink_that_waits_gets_what_came_once_max_wait_is_over(transport):
    """max_wait over with fewer than max_batch in hand: the batch goes as it is."""
    consumer = transport.consume("tasks", prefetch=100)
    put(transport, 2)
    started = time.monotonic()
    batch = taker(consumer, max_batch=10, max_wait=0.2).take()
    assert bodies(batch) == [0, 1]
    assert time.monotonic() - started < 3


def test_take_returns_nothing_once_the_worker_is_stopping(transport):
    """A thread waiting for records stops waiting when the flag goes up."""
    consumer = transport.consume("tasks", prefetch=100)
    stopping = threading.Event()
    take = Taker(consumer, Batching(), 1, 100, stopping=stopping.is_set, poll=0.05)
    threading.Timer(0.1, stopping.set).start()
    assert take.take() == []


def test_cancel_returns_what_no_thread_took(transport):
    """What was received and not taken comes back from cancel(), to be requeued."""
    consumer = transport.consume("tasks", prefetch=100)
    put(transport, 6)
    arrived(transport)
    take = taker(consumer, concurrency=2)
    taken = take.take()
    left = take.cancel()
    assert sorted(bodies(taken) + bodies(left)) == list(range(6))
    settle_many(left)
    settle_many(taken)


def test_a_consumer_the_broker_cancelled_raises_connection_lost():
    """The queue deleted under the consumer: take() says so instead of waiting forever."""

    class Cancelled:
        queue = "tasks"
        tag = "t"
        cancelled = True

        def get(self, timeout: float | None = None) -> Delivery | None:
            return None

    take = Taker(Cancelled(), Batching(), 1, 10, stopping=lambda: False, poll=0.01)  # type: ignore[arg-type]
    with pytest.raises(ConnectionLost, match="deleted"):
        take.take()


def test_received_counts_every_delivery_once(transport):
    """The metrics hook hears of each delivery taken from the consumer, once."""
    consumer = transport.consume("tasks", prefetch=100)
    put(transport, 12)
    arrived(transport)
    counted: list[int] = []
    take = Taker(
        consumer, Batching(5), 2, 100, stopping=lambda: False, received=counted.append, poll=0.05
    )
    got = 0
    while got < 12:
        got += len(take.take())
    assert sum(counted) == 12
