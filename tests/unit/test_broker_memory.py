"""The broker's memory: paged durable queues, the accounted bytes, the watermark, the trim."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logbus.broker import Broker, Session, open_session
from logbus.broker import watermark as watermark_module
from logbus.broker.journal import Journal
from logbus.broker.paging import PAGED_OVERHEAD, PagedEntry
from logbus.broker.watermark import Watermark
from logbus.message import PERSISTENT, TRANSIENT, Message, Properties

Opener = Callable[[], Broker]


@pytest.fixture
def open_broker(tmp_path: Path) -> Iterator[Opener]:
    """Build brokers on one data directory; every one is closed at teardown."""
    opened: list[Broker] = []

    def opener() -> Broker:
        broker = Broker("memory-test", journal=Journal(tmp_path / "data", fsync="never"))
        opened.append(broker)
        return broker

    yield opener
    for broker in opened:
        broker.close()


def sample_bodies(count: int) -> list[bytes]:
    """Distinct bodies of varied sizes, some not UTF-8, so a mix-up would show."""
    return [os.urandom(i % 7) + f"record {i} ".encode() * (1 + i % 40) for i in range(count)]


def publish(session: Session, queue: str, bodies: list[bytes], mode: int = PERSISTENT) -> None:
    """Publish each body to ``queue`` through the default exchange."""
    for body in bodies:
        session.publish(Message(body, Properties(delivery_mode=mode, priority=3), "", queue))


def drain(session: Session, queue: str) -> list[Message]:
    """Take and ack every message of ``queue``."""
    taken = []
    while (delivered := session.get(queue, auto_ack=True)) is not None:
        taken.append(delivered.message)
    return taken


LAZY = {"x-queue-mode": "lazy"}


def test_a_lazy_durable_queue_keeps_index_entries_not_messages(open_broker):
    """Persistent messages in a lazy durable queue are paged: no body bytes are accounted."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work", arguments=LAZY)
    bodies = sample_bodies(300)
    publish(session, "work", bodies)
    queue = broker._queues["work"]
    assert all(type(entry) is PagedEntry and entry.cached is None for entry in queue.ready)
    assert queue.ready_bytes == sum(map(len, bodies))  # x-max-length-bytes still counts them
    assert broker.held_bytes() == len(bodies) * PAGED_OVERHEAD  # index entries, no bodies


def test_paging_out_drops_the_messages_a_default_queue_kept(open_broker):
    """A default durable queue keeps its messages until the broker pages; then only entries."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    bodies = sample_bodies(300)
    publish(session, "work", bodies)
    assert broker.held_bytes() > sum(map(len, bodies))
    assert broker.page(True) == len(bodies)
    assert broker.held_bytes() == len(bodies) * PAGED_OVERHEAD
    publish(session, "work", [b"paged at once"])
    assert broker.held_bytes() == (len(bodies) + 1) * PAGED_OVERHEAD
    assert [m.body for m in drain(session, "work")] == [*bodies, b"paged at once"]


def test_paged_messages_are_delivered_intact_and_in_order(open_broker):
    """Each paged message comes back with its exact body, properties and key, in order."""
    session = open_session(open_broker())
    session.declare_queue("work", arguments=LAZY)
    bodies = sample_bodies(300)
    publish(session, "work", bodies)
    taken = drain(session, "work")
    assert [m.body for m in taken] == bodies
    assert {(m.routing_key, m.properties.priority, m.properties.delivery_mode) for m in taken} == {
        ("work", 3, PERSISTENT)
    }


def test_paged_messages_come_back_intact_in_order_after_a_restart(open_broker):
    """A restart recovers paged messages from the journal, bodies intact, in order."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    bodies = sample_bodies(300)
    publish(session, "work", bodies)
    broker.close()
    recovered = open_broker()
    assert all(type(entry) is PagedEntry for entry in recovered._queues["work"].ready)
    assert [m.body for m in drain(open_session(recovered), "work")] == bodies


def test_paged_messages_survive_a_compaction_that_moves_them(open_broker):
    """Compacting rewrites the file; entries follow their records and read intact."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work", arguments=LAZY)
    bodies = sample_bodies(200)
    publish(session, "work", bodies)
    for _ in range(50):  # acked: their records are dead weight the compaction drops
        assert session.get("work", auto_ack=True) is not None
    journal = broker._journal
    assert journal is not None
    before = broker._queues["work"].ready[0]
    assert isinstance(before, PagedEntry)
    old_offset = before.offset
    journal.compact()
    assert before.offset != old_offset
    assert [m.body for m in drain(session, "work")] == bodies[50:]


def test_transient_messages_stay_in_memory_and_are_accounted(open_broker):
    """A transient message is not paged: its body counts towards the watermark."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    publish(session, "work", [b"x" * 100_000], mode=TRANSIENT)
    assert broker.held_bytes() > 100_000


def test_accounted_bytes_fall_to_nothing_after_a_drain():
    """What the broker reports holding goes back to zero once its queues are drained."""
    broker = Broker("memory-test")
    session = open_session(broker)
    session.declare_queue("work", durable=False)
    publish(session, "work", [b"y" * 10_000] * 200)
    assert broker.held_bytes() > 2_000_000
    unacked = []
    while (delivered := session.get("work")) is not None:
        unacked.append(delivered.delivery_tag)
    assert broker.held_bytes() > 2_000_000  # unacked deliveries are still held
    for tag in unacked:
        session.ack(tag)
    assert broker.held_bytes() == 0


def test_the_watermark_alarms_above_its_limit_and_clears_below():
    """The alarm follows the accounted bytes across the limit, both ways."""
    held = [0]
    mark = Watermark(lambda: held[0], 1_000)
    mark.sample()
    assert not mark.alarmed
    held[0] = 1_000
    mark.sample()
    assert mark.alarmed
    assert not mark.wait_clear(0)
    held[0] = 999
    mark.sample()
    assert not mark.alarmed
    assert mark.report().accounted == 999


def test_memory_is_given_back_once_after_a_drain(monkeypatch):
    """After what is held falls far below its peak, memory is given back, once."""
    calls: list[int] = []
    monkeypatch.setattr(watermark_module, "give_back", lambda: calls.append(1))
    monkeypatch.setattr(watermark_module, "TRIM_BYTES", 1_000)
    held = [0]
    mark = Watermark(lambda: held[0], 1 << 30)
    for value in (500, 5_000, 4_000):  # growing, then a small fall: nothing to give back
        held[0] = value
        mark.sample()
    assert calls == []
    for value in (100, 50):
        held[0] = value
        mark.sample()
    assert calls == [1]


def test_the_broker_pages_above_half_its_limit_and_stops_below_a_quarter():
    """Paging starts at PAGING_RATIO of the limit and ends below half of that (hysteresis)."""
    calls: list[bool] = []
    held = [0]
    mark = Watermark(lambda: held[0], 1_000, page=calls.append)
    for value in (100, 499, 500, 300, 260, 249, 600):
        held[0] = value
        mark.sample()
    assert calls == [True, False, True]
