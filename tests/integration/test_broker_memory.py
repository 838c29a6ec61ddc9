"""A served broker's memory bound: publishers blocked above the watermark, paged queues on restart.

These listen on Unix sockets and start ``logbus broker serve`` processes, so they are
integration tests; the accounting and paging themselves are in
``tests/unit/test_broker_memory.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from logbus.broker import Broker
from logbus.broker.server import BrokerServer, listen
from logbus.broker.watermark import Watermark
from logbus.errors import NotConfirmed
from logbus.message import PERSISTENT, Message, Properties
from logbus.transports.inprocess.local import LocalTransport

DEADLINE = 20.0
LIMIT = 256 * 1024
BODY = b"z" * 10_000


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait for ``condition`` on a deadline, failing with ``what`` if it never holds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.01)


@pytest.fixture
def served(directory: str) -> Iterator[tuple[str, Broker, Watermark]]:
    """A broker served in this process with a small memory limit, sampled every 10 ms."""
    sock = os.path.join(directory, "broker.sock")
    broker = Broker("memory")
    watermark = Watermark(broker.held_bytes, LIMIT, interval=0.01).start()
    listener, key = listen(sock)
    with BrokerServer(broker, listener, authkey=key, watermark=watermark):
        yield f"local://{sock}", broker, watermark
    watermark.close()


def test_the_watermark_blocks_a_publisher_until_consumers_drain_below_it(served):
    """Above the limit publishes go unconfirmed; after a drain the same connection publishes."""
    url, broker, watermark = served
    publisher = LocalTransport(url, settings=SimpleNamespace(confirm_timeout=0.5))
    consumer = LocalTransport(url)
    try:
        publisher.declare_queue("held", durable=False)
        message = Message(BODY, Properties(), "", "held")
        with pytest.raises(NotConfirmed, match="blocked publishing"):
            for _ in range(2_000):  # 20 MB at most; the alarm comes after ~25
                publisher.publish(message)
        assert watermark.alarmed
        assert broker.held_bytes() >= LIMIT
        deliveries = consumer.consume("held", prefetch=10)
        while watermark.alarmed:  # the consumer's connection is never blocked
            delivery = deliveries.get(timeout=DEADLINE)
            assert delivery is not None
            delivery.ack()
        wait_until(lambda: publisher._link.blocked is None, "the unblocked notice")
        publisher.publish(message)  # confirmed again
    finally:
        publisher.close()
        consumer.close()


def serve_process(sock: str, data_dir: str) -> subprocess.Popen[bytes]:
    """``logbus broker serve`` with a data directory, ready for clients."""
    options = ["--data-dir", data_dir, "--memory-limit", "64M", "--fsync", "never"]
    process = subprocess.Popen(
        [sys.executable, "-m", "logbus", "broker", "serve", "--listen", sock, *options],
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: os.path.exists(sock) or process.poll() is not None, "the socket")
    assert process.poll() is None, process.communicate()[1].decode()
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and wait for the broker to flush and exit."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(DEADLINE) == 0


def test_a_paged_durable_queue_delivers_every_body_intact_after_a_serve_restart(directory):
    """Records of a durable queue come back from the journal intact, in order, after a restart."""
    sock = os.path.join(directory, "broker.sock")
    data_dir = os.path.join(directory, "data")
    bodies = [os.urandom(i % 5) + f"record {i}".encode() * (1 + i % 30) for i in range(500)]
    process = serve_process(sock, data_dir)
    try:
        with LocalTransport(f"local://{sock}") as transport:
            transport.declare_queue("paged", arguments={"x-queue-mode": "lazy"})
            props = Properties(delivery_mode=PERSISTENT)
            transport.publish_many(Message(body, props, "", "paged") for body in bodies)
            first = transport.get("paged")
            assert first is not None
            assert first.message.body == bodies[0]
            first.ack()
    finally:
        stop(process)
    process = serve_process(sock, data_dir)
    try:
        with LocalTransport(f"local://{sock}") as transport:
            taken = []
            while (delivery := transport.get("paged", auto_ack=True)) is not None:
                taken.append(delivery.message.body)
                assert delivery.redelivered
        assert taken == bodies[1:]
    finally:
        stop(process)
