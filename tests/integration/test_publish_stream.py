"""Emitter.emit_stream on the pika transport: records keep flowing into the confirm window,
and each is reported confirmed, in order, as its confirm comes (what ingest's RELP answers
and readers' back-pressure follow), also through connection resets."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from logbus.emitter import Emitter
from logbus.record import LogRecord, decode
from logbus.topology import EmitTarget, Topology
from logbus.transports.amqp import AmqpTransport
from logbus.transports.amqp.pika_transport import STEP
from tests.integration.test_publish_faults import Flapping

RECORDS = 20_000


class Feed:
    """Hands out records in uneven takes, as a gateway's inbound queue would, and checks
    that progress never reports more than was handed out."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.taken = 0
        self.confirmed = 0
        self.reports = 0
        self.lock = threading.Lock()
        self.overrun = False
        self.rooms: list[int] = []

    def take(self, room: int) -> tuple[list[LogRecord], bool]:
        self.rooms.append(room)
        n = min(room, 1 + self.taken % 700, self.total - self.taken)
        records = [
            LogRecord(facility="user", severity="info", message=f"line {self.taken + i}")
            for i in range(n)
        ]
        with self.lock:
            self.taken += n
        return records, self.taken < self.total

    def progress(self, count: int) -> None:
        with self.lock:
            self.confirmed += count
            self.reports += 1
            self.overrun = self.overrun or self.confirmed > self.taken


@pytest.fixture
def queue(amqp_url: str, unique_name: str) -> Iterator[tuple[AmqpTransport, str]]:
    with AmqpTransport(amqp_url, connection_name=f"logbus-{unique_name}-admin") as admin:
        admin.declare_queue(unique_name, durable=True)
        try:
            yield admin, unique_name
        finally:
            admin.delete_queue(unique_name)


def _stream(url: str, queue: str, feed: Feed) -> int:
    transport = AmqpTransport(url, reconnect_max_delay=0.5)
    try:
        emitter = Emitter(
            transport=transport,
            topology=Topology(),
            declare_topology=False,
            targets=[EmitTarget(exchange="", key=queue)],
        )
        return emitter.emit_stream(feed.take, feed.progress)
    finally:
        transport.close()


def test_a_stream_reports_every_record_confirmed_in_order_and_all_arrive(
    amqp_url: str, queue: tuple[AmqpTransport, str]
) -> None:
    """Every record handed out is reported confirmed exactly once, never ahead of being taken,
    in many reports (per confirm, not one at the end), and the queue holds them in order."""
    admin, name = queue
    feed = Feed(RECORDS)
    assert _stream(amqp_url, name, feed) == RECORDS
    assert (feed.confirmed, feed.overrun) == (RECORDS, False)
    assert feed.reports > 10, "confirms were reported per batch, not as they came"
    # Taken a step at a time (the I/O thread gets each as soon as it is encoded), never
    # a whole window at once.
    assert max(feed.rooms) == STEP
    got = []
    while (delivery := admin.get(name, auto_ack=True)) is not None:
        got.append(delivery.message.body)
    assert [decode(body).message for body in got] == [f"line {i}" for i in range(RECORDS)]


def test_a_stream_through_connection_resets_reports_each_record_once(
    amqp_url: str, queue: tuple[AmqpTransport, str]
) -> None:
    """Through a reset every second the stream goes on; every record is reported once, and
    the queue holds every one (at least once)."""
    admin, name = queue
    feed = Feed(30_000)
    with Flapping(amqp_url) as flapping:
        assert _stream(flapping.url, name, feed) == 30_000
    assert flapping.resets >= 1, "no reset happened: the test proved nothing"
    assert (feed.confirmed, feed.overrun) == (30_000, False)
    assert admin.declare_queue(name, passive=True).message_count >= 30_000


def test_publishes_are_sent_joined_through_the_pika_this_project_pins(
    amqp_url: str, queue: tuple[AmqpTransport, str]
) -> None:
    """The publisher finds pika's send queue (so a burst of frames goes out in one send),
    and joining its tail keeps every byte in order."""
    from collections import deque

    from logbus.transports.amqp.pika_publish import _join_tail, _tx_buffers

    admin, name = queue
    feed = Feed(500)
    assert _stream(amqp_url, name, feed) == 500
    assert _tx_buffers(admin._core.publisher.channel) is not None
    buffers = deque([b"head", b"a", b"bc", b"d"])
    _join_tail(buffers, 3)
    assert list(buffers) == [b"head", b"abcd"]


def test_a_small_window_is_topped_up_half_a_window_at_a_time(
    amqp_url: str, queue: tuple[AmqpTransport, str]
) -> None:
    """A window smaller than two steps is taken half of it at a time, so half of it is in
    flight while the other half is encoded, and every record arrives."""
    admin, name = queue
    feed = Feed(300)
    with AmqpTransport(amqp_url, publish_window=10) as transport:
        emitter = Emitter(
            transport=transport,
            topology=Topology(),
            declare_topology=False,
            targets=[EmitTarget(exchange="", key=name)],
        )
        assert emitter.emit_stream(feed.take, feed.progress) == 300
    assert max(feed.rooms) == 5
    assert (feed.confirmed, feed.overrun) == (300, False)
    assert admin.declare_queue(name, passive=True).message_count == 300
