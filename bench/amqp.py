"""Publishing and consuming on RabbitMQ: logbus against the plain-client baselines.

Run as ``python bench/amqp.py [URL]`` (default: the local broker). Every figure
is measured in this run, on this broker, and printed next to its baseline:

publishing (records/s, persistent bodies to a durable queue):
  tutorial        a new connection per message (the tutorial's send.py)
  pika            one connection, basic_publish in a loop, no confirms
  pika-confirm    one connection, confirms on, one round trip per message
  aio-pika        aio-pika, confirms on, awaiting each publish
  ceiling         raw pika SelectConnection, confirms pipelined (window 5,000), the same
                  properties and headers as a logbus record: the most this broker
                  confirms of such persistent messages; no client does better
  logbus-sync     logbus.Emitter.emit_many (confirmed, persistent, pipelined)
  logbus-async    logbus.AsyncEmitter.emit_many (confirmed, persistent, pipelined)

consuming with acks (records/s, two competing consumers):
  prefetch-1      the tutorial worker: basic_qos(prefetch_count=1), ack each
  logbus          logbus consumers with the default prefetch
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import aio_pika
import pika

from logbus import Emitter, LogRecord
from logbus.message import Message, Properties
from logbus.settings import Settings
from logbus.topology import EmitTarget, Queue, Topology
from logbus.transports import DEFAULT_PREFETCH, connect

URL = sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1:5672/%2F"
COUNT = 20_000
TUTORIAL_COUNT = 300
BODY = LogRecord(facility="kern", severity="critical", message="disk /dev/sda1 failed").to_bytes()


def rate(count: int, seconds: float) -> float:
    """Records per second."""
    return count / seconds if seconds else float("inf")


def timed(fn: Callable[[], int]) -> float:
    """Records/s of ``fn``, which returns how many records it moved."""
    started = time.perf_counter()
    count = fn()
    return rate(count, time.perf_counter() - started)


def fresh_queue(channel: pika.adapters.blocking_connection.BlockingChannel) -> str:
    """A durable queue of our own for one case (deleted by the caller)."""
    name = f"bench-{secrets.token_hex(4)}"
    channel.queue_declare(name, durable=True)
    return name


def persistent() -> pika.BasicProperties:
    """What the tutorial uses for durable work: delivery_mode 2."""
    return pika.BasicProperties(delivery_mode=2, content_type="application/json")


def tutorial(queue: str) -> int:
    """One connection per message, as the tutorial's send.py does."""
    for _ in range(TUTORIAL_COUNT):
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        channel.basic_publish("", queue, BODY, persistent())
        connection.close()
    return TUTORIAL_COUNT


def plain_pika(queue: str, confirm: bool) -> int:
    """basic_publish in a loop on one channel, with or without per-message confirms."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    if confirm:
        channel.confirm_delivery()
    props = persistent()
    for _ in range(COUNT):
        channel.basic_publish("", queue, BODY, props)
    connection.process_data_events(0)
    connection.close()
    return COUNT


async def plain_aio(queue: str) -> int:
    """aio-pika with confirms, awaiting every publish in turn."""
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    for _ in range(COUNT):
        await channel.default_exchange.publish(
            aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), queue
        )
    await connection.close()
    return COUNT


def ceiling(queue: str) -> int:
    """Confirmed persistent publishing with nothing but pika and a window of 5,000."""
    from pika.adapters.select_connection import SelectConnection

    window, state = 5_000, {"sent": 0, "acked": 0}
    shape = RECORDS[0].to_properties()  # the properties and headers logbus sends
    props = pika.BasicProperties(
        content_type=shape.content_type,
        delivery_mode=shape.delivery_mode,
        message_id=shape.message_id,
        timestamp=shape.timestamp,
        app_id=shape.app_id,
        headers=dict(shape.headers),
    )

    def pump(channel: Any) -> None:
        while state["sent"] < COUNT and state["sent"] - state["acked"] < window:
            channel.basic_publish("", queue, BODY, props, mandatory=True)
            state["sent"] += 1

    def on_ack(frame: Any) -> None:
        method = frame.method
        state["acked"] = max(state["acked"], method.delivery_tag)
        if state["acked"] >= COUNT:
            connection.close()
        else:
            pump(channels[0])

    channels: list[Any] = []

    def on_channel(channel: Any) -> None:
        channels.append(channel)
        channel.confirm_delivery(on_ack, callback=lambda _frame: pump(channel))

    connection = SelectConnection(
        pika.URLParameters(URL),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    return COUNT


def topology_for(queue: str) -> Topology:
    """Records go through the default exchange straight into ``queue``."""
    return Topology(
        exchanges=(),
        queues=(Queue(name=queue, durable=True),),
        bindings=(),
        emit=(EmitTarget(exchange="", key=queue),),
    )


# Built once, before any timing: the baselines get ready bodies, logbus ready records
# (encoding them, and the properties and headers, is part of what is timed).
RECORDS = [
    LogRecord(facility="kern", severity="critical", message=f"disk failed {i}")
    for i in range(COUNT)
]


def logbus_sync(queue: str) -> int:
    """Emitter.emit_many: confirmed, persistent, pipelined."""
    batch = RECORDS
    with Emitter(URL, topology=topology_for(queue), settings=Settings(url=URL)) as emitter:
        emitter.emit_many(batch)
    return COUNT


async def logbus_async(queue: str) -> int:
    """AsyncEmitter.emit_many: confirmed, persistent, pipelined."""
    from logbus import AsyncEmitter

    batch = RECORDS
    async with AsyncEmitter(URL, topology=topology_for(queue)) as emitter:
        await emitter.emit_many(batch)
    return COUNT


def fill(queue: str, count: int) -> None:
    """Put ``count`` persistent bodies in ``queue`` (not timed)."""
    transport = connect(URL)
    transport.publish_many(
        Message(BODY, Properties(delivery_mode=2), "", queue) for _ in range(count)
    )
    transport.close()


def consume_prefetch_one(queue: str, count: int) -> tuple[float, list[int]]:
    """Two tutorial workers (prefetch 1, ack each) drain ``count`` records."""
    got = [0, 0]
    done = threading.Event()

    def worker(i: int) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)

        def on_message(ch, method, _props, _body) -> None:  # type: ignore[no-untyped-def]
            ch.basic_ack(method.delivery_tag)
            got[i] += 1
            if sum(got) >= count:
                done.set()

        channel.basic_consume(queue, on_message)
        while not done.is_set():
            connection.process_data_events(0.05)
        connection.close()

    return _run_workers(worker, got, done)


def consume_logbus(queue: str, count: int) -> tuple[float, list[int]]:
    """Two logbus consumers (default prefetch) drain ``count`` records, acking each."""
    got = [0, 0]
    done = threading.Event()

    def worker(i: int) -> None:
        transport = connect(URL)
        consumer = transport.consume(queue, prefetch=DEFAULT_PREFETCH)
        while not done.is_set():
            delivery = consumer.get(timeout=0.05)
            if delivery is None:
                continue
            delivery.ack()
            got[i] += 1
            if sum(got) >= count:
                done.set()
        consumer.cancel()
        transport.close()

    return _run_workers(worker, got, done)


def _run_workers(
    worker: Callable[[int], None], got: list[int], done: threading.Event
) -> tuple[float, list[int]]:
    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    done.wait(120)
    elapsed = time.perf_counter() - started
    for t in threads:
        t.join(10)
    return rate(sum(got), elapsed), got


def main() -> None:
    """Run every case on the broker at URL and print the ratios."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    queues: list[str] = []

    def case(fn: Callable[[str], int]) -> float:
        queue = fresh_queue(channel)
        queues.append(queue)
        return timed(lambda: fn(queue))

    try:
        print(f"# publishing {COUNT:,} persistent records (tutorial: {TUTORIAL_COUNT})")
        results = {
            "tutorial": case(tutorial),
            "pika": case(lambda q: plain_pika(q, confirm=False)),
            "pika-confirm": case(lambda q: plain_pika(q, confirm=True)),
            "aio-pika": case(lambda q: asyncio.run(plain_aio(q))),
            "ceiling": case(ceiling),
            "logbus-sync": case(logbus_sync),
            "logbus-async": case(lambda q: asyncio.run(logbus_async(q))),
        }
        for name, value in results.items():
            print(f"{name:<14} {value:>10,.0f} records/s")
        for mine in ("logbus-sync", "logbus-async"):
            print(
                f"{mine} / pika-confirm = {results[mine] / results['pika-confirm']:.1f}x "
                f"(target >= 5x); {mine} / pika (no confirms) = "
                f"{results[mine] / results['pika']:.2f}x (target >= 0.8x); "
                f"{mine} / tutorial = {results[mine] / results['tutorial']:.0f}x; "
                f"{mine} / ceiling = {results[mine] / results['ceiling']:.2f}x"
            )
        print(
            "(pika without confirms does not wait for the broker to store anything; "
            f"ceiling / pika = {results['ceiling'] / results['pika']:.2f}x is what "
            "confirmed persistent publishing can reach here at most)"
        )
        print()
        print(f"# consuming {COUNT:,} records with acks, two competing consumers")
        q1 = fresh_queue(channel)
        q2 = fresh_queue(channel)
        queues += [q1, q2]
        fill(q1, COUNT)
        fill(q2, COUNT)
        base, base_split = consume_prefetch_one(q1, COUNT)
        mine, mine_split = consume_logbus(q2, COUNT)
        print(f"prefetch-1     {base:>10,.0f} records/s split={base_split}")
        print(f"logbus         {mine:>10,.0f} records/s split={mine_split}")
        share = min(mine_split) / max(1, sum(mine_split))
        print(
            f"logbus / prefetch-1 = {mine / base:.1f}x (target >= 5x); "
            f"fair dispatch: smaller share {share:.0%} (fair >= 40%)"
        )
    finally:
        for queue in queues:
            channel.queue_delete(queue)
        connection.close()


if __name__ == "__main__":
    main()
