"""Local concurrency: the in-process transports against bare queues, in one process.

Run as ``python bench/local.py``. Every figure is measured in this run and printed
next to its baseline. Each transport has a ``bench_<name>()`` part that ``main()``
runs in turn; a part imports its concurrency library itself, so the others never
depend on it.

gevent:// — greenlets on one hub, with no monkey-patching: nothing here needs it
(gevent:// is correct without it), and patching would change what the thread and
process parts measure.
  throughput   a publisher greenlet publishes 50,000 record bodies to gevent:// while a
               consumer greenlet gets and acks each (default prefetch); the baseline
               passes the same bodies through a bare gevent.queue.Queue between a
               producer greenlet and a consumer greenlet. Best of 3 each.
  I/O-bound    2,000 records whose handler waits 10 ms (gevent.sleep) each, consumed by
               1 greenlet and then by 50 greenlets sharing one consumer; the prefetch
               follows the concurrency (1, then 50).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from logbus import LogRecord
from logbus.message import PERSISTENT, Message, Properties
from logbus.transports import DEFAULT_PREFETCH, Transport, connect

BODY = LogRecord(facility="kern", severity="critical", message="disk /dev/sda1 failed").to_bytes()
PROPERTIES = Properties(content_type="application/json", delivery_mode=PERSISTENT)
ROUNDS = 3

THROUGHPUT_COUNT = 50_000
THROUGHPUT_TARGET = 0.3
IO_COUNT = 2_000
IO_WAIT = 0.010
IO_CONCURRENCY = 50
IO_TARGET = 20.0


def rate(count: int, seconds: float) -> float:
    """Records per second."""
    return count / seconds if seconds else float("inf")


def best_of(rounds: int, fn: Callable[[], float]) -> float:
    """The highest of ``rounds`` runs of ``fn``, which returns records/s."""
    return max(fn() for _ in range(rounds))


def fresh_queue(transport: Transport) -> str:
    """A server-named queue that goes with the transport."""
    return transport.declare_queue("", exclusive=True).name


# -- gevent:// ----------------------------------------------------------------


def bare_gevent_queue(bodies: list[bytes]) -> float:
    """Records/s through a gevent.queue.Queue from a producer greenlet to a consumer greenlet."""
    import gevent
    import gevent.queue

    queue: gevent.queue.Queue[bytes | None] = gevent.queue.Queue()
    received = 0

    def produce() -> None:
        for body in bodies:
            queue.put(body)
        queue.put(None)

    def consume() -> None:
        nonlocal received
        while queue.get() is not None:
            received += 1

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(produce), gevent.spawn(consume)], raise_error=True)
    elapsed = time.perf_counter() - started
    assert received == len(bodies), received
    return rate(received, elapsed)


def gevent_publish_consume(bodies: list[bytes]) -> tuple[float, float, float]:
    """Records/s from a publisher greenlet through gevent:// to a consumer greenlet acking each.

    Also the seconds of each side: the publisher never yields, so it finishes before the
    consumer starts, as the bare Queue's producer does.
    """
    import gevent

    with connect(f"gevent://bench-{secrets.token_hex(4)}") as transport:
        queue = fresh_queue(transport)
        consumer = transport.consume(queue, prefetch=DEFAULT_PREFETCH)
        published = 0.0

        def produce() -> None:
            nonlocal published
            for body in bodies:
                transport.publish(Message(body, PROPERTIES, "", queue))
            published = time.perf_counter()

        def consume() -> None:
            for _ in bodies:
                delivery = consumer.get(timeout=10)
                assert delivery is not None, "a record never arrived"
                delivery.ack()

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(produce), gevent.spawn(consume)], raise_error=True)
        ended = time.perf_counter()
        return rate(len(bodies), ended - started), published - started, ended - published


def gevent_io_bound(concurrency: int, count: int) -> float:
    """Seconds for ``concurrency`` greenlets to handle ``count`` records waiting IO_WAIT each."""
    import gevent

    with connect(f"gevent://bench-{secrets.token_hex(4)}") as transport:
        queue = fresh_queue(transport)
        transport.publish_many(Message(BODY, PROPERTIES, "", queue) for _ in range(count))
        consumer = transport.consume(queue, prefetch=concurrency)
        handled = 0

        def work() -> None:
            nonlocal handled
            for delivery in consumer:
                gevent.sleep(IO_WAIT)  # the handler's I/O
                delivery.ack()
                handled += 1
                if handled == count:
                    consumer.cancel()  # ends every greenlet's iteration

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(work) for _ in range(concurrency)], raise_error=True)
        elapsed = time.perf_counter() - started
        assert handled == count, handled
        return elapsed


def bench_gevent() -> None:
    """gevent:// against a bare gevent.queue.Queue, then 1 against 50 I/O-bound greenlets."""
    bodies = [BODY] * THROUGHPUT_COUNT
    print(
        f"# gevent:// throughput: {THROUGHPUT_COUNT:,} records, publisher greenlet -> "
        f"consumer greenlet acking each, best of {ROUNDS}"
    )
    base = best_of(ROUNDS, lambda: bare_gevent_queue(bodies))
    mine, publishing, consuming = max(gevent_publish_consume(bodies) for _ in range(ROUNDS))
    print(f"gevent.queue   {base:>12,.0f} records/s  (bare Queue, producer -> consumer greenlet)")
    print(
        f"gevent://      {mine:>12,.0f} records/s  "
        f"ratio={mine / base:.2f}x (target >= {THROUGHPUT_TARGET}x)"
    )
    per_record = 1e6 / THROUGHPUT_COUNT
    print(
        f"  per record: publish {publishing * per_record:.2f} us, get+ack "
        f"{consuming * per_record:.2f} us; bare Queue put+get {1e6 / base:.2f} us"
    )
    print()
    print(
        f"# gevent:// I/O-bound: {IO_COUNT:,} records, handler waits {IO_WAIT * 1000:.0f} ms "
        "(gevent.sleep), prefetch = greenlets"
    )
    one = gevent_io_bound(1, IO_COUNT)
    many = gevent_io_bound(IO_CONCURRENCY, IO_COUNT)
    print(f"1 greenlet     {rate(IO_COUNT, one):>12,.0f} records/s  {one:6.2f} s")
    print(f"{IO_CONCURRENCY} greenlets   {rate(IO_COUNT, many):>12,.0f} records/s  {many:6.2f} s")
    print(
        f"gevent:// {IO_CONCURRENCY} greenlets speed-up={one / many:.1f}x "
        f"(target >= {IO_TARGET:.0f}x)"
    )


def main() -> None:
    """Run every local benchmark and print each figure next to its baseline."""
    bench_gevent()


if __name__ == "__main__":
    main()
