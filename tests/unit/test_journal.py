"""The broker's disk journal: what survives a restart, what does not, and damaged files."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from logbus.broker import Broker, Session, open_session
from logbus.broker.journal import JOURNAL_NAME, FsyncPolicy, Journal
from logbus.errors import ConfigError, NotFound, PreconditionFailed
from logbus.message import PERSISTENT, TRANSIENT, Message, Properties

Opener = Callable[..., Broker]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The broker's data directory (not created yet)."""
    return tmp_path / "data"


@pytest.fixture
def open_broker(data_dir: Path) -> Iterator[Opener]:
    """Build brokers on ``data_dir``; every one is closed at teardown."""
    opened: list[Broker] = []

    def opener(fsync: FsyncPolicy = "never", interval: float = 1.0) -> Broker:
        broker = Broker("journal-test", journal=Journal(data_dir, fsync=fsync, interval=interval))
        opened.append(broker)
        return broker

    yield opener
    for broker in opened:
        broker.close()


def restart(broker: Broker, open_broker: Opener) -> Session:
    """Close ``broker`` (its sessions stay open, as in a crash) and open a new one on its data."""
    broker.close()
    return open_session(open_broker())


def persistent(key: str, body: bytes, exchange: str = "", **props: Any) -> Message:
    """A persistent message."""
    return Message(body, Properties(delivery_mode=PERSISTENT, **props), exchange, key)


def bodies(session: Session, queue: str) -> list[bytes]:
    """Take every message of ``queue`` (acking it) and return their bodies."""
    taken = []
    while (delivered := session.get(queue, auto_ack=True)) is not None:
        taken.append(delivered.message.body)
    return taken


def journal_file(data_dir: Path) -> Path:
    """The journal file in a data directory."""
    return data_dir / JOURNAL_NAME


def test_persistent_records_of_a_durable_queue_survive_a_restart_in_order(open_broker):
    """Persistent messages of a durable queue come back after a restart, in queue order."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    for i in range(5):
        session.publish(persistent("work", f"record-{i}".encode()))
    session = restart(broker, open_broker)
    assert bodies(session, "work") == [f"record-{i}".encode() for i in range(5)]


def test_recovered_messages_are_marked_redelivered(open_broker):
    """After a restart every recovered message is flagged redelivered, as when in doubt."""
    broker = open_broker()
    open_session(broker).declare_queue("work")
    open_session(broker).publish(persistent("work", b"never delivered"))
    session = restart(broker, open_broker)
    delivered = session.get("work")
    assert delivered is not None
    assert delivered.redelivered


def test_transient_messages_do_not_survive_a_restart(open_broker):
    """A transient message in a durable queue is gone after a restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(Message(b"transient", Properties(delivery_mode=TRANSIENT), "", "work"))
    session.publish(persistent("work", b"persistent"))
    session = restart(broker, open_broker)
    assert bodies(session, "work") == [b"persistent"]


def test_non_durable_queues_do_not_survive_a_restart(open_broker):
    """A non-durable queue, persistent messages and all, is gone after a restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("scratch", durable=False)
    session.publish(persistent("scratch", b"lost with its queue"))
    session = restart(broker, open_broker)
    with pytest.raises(NotFound):
        session.declare_queue("scratch", passive=True)


def test_exclusive_queues_do_not_survive_a_restart(open_broker):
    """An exclusive queue belongs to its connection: it is not journaled, even if durable."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("mine", durable=True, exclusive=True)
    session = restart(broker, open_broker)
    with pytest.raises(NotFound):
        session.declare_queue("mine", passive=True)


def test_non_durable_exchanges_do_not_survive_a_restart(open_broker):
    """A non-durable exchange is gone after a restart."""
    broker = open_broker()
    open_session(broker).declare_exchange("passing", "fanout", durable=False)
    session = restart(broker, open_broker)
    with pytest.raises(NotFound):
        session.declare_exchange("passing", "fanout", passive=True)


def test_acked_records_do_not_come_back(open_broker):
    """A message acknowledged before the restart stays gone."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"done"))
    session.publish(persistent("work", b"pending"))
    delivered = session.get("work")
    assert delivered is not None
    session.ack(delivered.delivery_tag)
    session = restart(broker, open_broker)
    assert bodies(session, "work") == [b"pending"]


def test_unacked_records_come_back(open_broker):
    """A message delivered but not acknowledged when the broker stopped is delivered again."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    inbox: list[object] = []
    session.consume("work", inbox.append, prefetch=10)
    session.publish(persistent("work", b"in flight"))
    assert len(inbox) == 1
    session = restart(broker, open_broker)
    assert bodies(session, "work") == [b"in flight"]


def test_acks_after_a_restart_strike_off_recovered_records(open_broker):
    """A recovered message acked after a restart does not come back after the next one."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"first"))
    session.publish(persistent("work", b"second"))
    broker.close()
    broker = open_broker()
    session = open_session(broker)
    delivered = session.get("work")
    assert delivered is not None
    session.ack(delivered.delivery_tag)
    session = restart(broker, open_broker)
    assert bodies(session, "work") == [b"second"]


def test_dead_lettered_record_is_in_the_dlx_queue_after_restart(open_broker):
    """A rejected message lives on in the dead-letter queue, x-death and all, not in its own."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_exchange("dlx", "fanout")
    session.declare_queue("dead")
    session.bind_queue("dead", "dlx")
    session.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx"})
    session.publish(persistent("work", b"poison"))
    delivered = session.get("work")
    assert delivered is not None
    session.nack(delivered.delivery_tag, requeue=False)
    session = restart(broker, open_broker)
    assert session.get("work") is None
    dead = session.get("dead")
    assert dead is not None
    assert dead.message.body == b"poison"
    death = dead.message.properties.headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("rejected", "work")
    assert isinstance(death["time"], datetime)


def test_queue_bindings_survive_a_restart(open_broker):
    """A durable queue's binding to a durable exchange still routes after a restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_exchange("logs", "topic")
    session.declare_queue("kern")
    session.bind_queue("kern", "logs", "kern.*")
    session = restart(broker, open_broker)
    session.publish(persistent("kern.critical", b"disk failed", "logs"))
    session.publish(persistent("mail.info", b"not for kern", "logs"))
    assert bodies(session, "kern") == [b"disk failed"]


def test_exchange_to_exchange_bindings_survive_a_restart(open_broker):
    """An exchange-to-exchange binding between durable exchanges still routes after a restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_exchange("logs", "topic")
    session.declare_exchange("everything", "fanout")
    session.bind_exchange("everything", "logs", "#")
    session.declare_queue("all")
    session.bind_queue("all", "everything")
    session = restart(broker, open_broker)
    session.publish(persistent("kern.critical", b"through two exchanges", "logs"))
    assert bodies(session, "all") == [b"through two exchanges"]


def test_removed_bindings_stay_removed_after_a_restart(open_broker):
    """An unbind before the restart is kept: the binding does not come back."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_exchange("logs", "topic")
    session.declare_queue("kern")
    session.bind_queue("kern", "logs", "kern.*")
    session.unbind_queue("kern", "logs", "kern.*")
    session = restart(broker, open_broker)
    session.publish(persistent("kern.critical", b"unrouted", "logs"))
    assert bodies(session, "kern") == []


def test_deleted_queue_stays_deleted_after_a_restart(open_broker):
    """A durable queue deleted before the restart does not come back, nor do its messages."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"deleted with its queue"))
    session.delete_queue("work")
    session = restart(broker, open_broker)
    with pytest.raises(NotFound):
        session.declare_queue("work", passive=True)


def test_deleted_exchange_takes_its_bindings_along(open_broker):
    """An exchange deleted and declared again has none of its old bindings after a restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_exchange("logs", "fanout")
    session.declare_queue("all")
    session.bind_queue("all", "logs")
    session.delete_exchange("logs")
    session.declare_exchange("logs", "fanout")
    session = restart(broker, open_broker)
    session.publish(persistent("", b"unrouted", "logs"))
    assert bodies(session, "all") == []


def test_purged_records_do_not_come_back(open_broker):
    """Messages purged before the restart stay gone."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"purged"))
    assert session.purge_queue("work") == 1
    session = restart(broker, open_broker)
    assert bodies(session, "work") == []


def test_records_dropped_at_max_length_do_not_come_back(open_broker):
    """Messages dropped from the head by x-max-length stay dropped after a restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("bounded", arguments={"x-max-length": 2})
    for body in (b"a", b"b", b"c"):
        session.publish(persistent("bounded", body))
    session = restart(broker, open_broker)
    assert bodies(session, "bounded") == [b"b", b"c"]


def test_queue_arguments_survive_a_restart(open_broker):
    """A recovered queue keeps its arguments: redeclaring it otherwise is refused."""
    broker = open_broker()
    open_session(broker).declare_queue("bounded", arguments={"x-max-length": 2})
    session = restart(broker, open_broker)
    session.declare_queue("bounded", arguments={"x-max-length": 2})
    with pytest.raises(PreconditionFailed):
        session.declare_queue("bounded", arguments={"x-max-length": 3})


def test_properties_and_headers_json_lacks_survive_exactly(open_broker):
    """Bytes, datetimes, Decimals, nested tables and arrays, and tag look-alikes round-trip."""
    headers = {
        "raw": b"\x00\xff",
        "when": datetime(2024, 6, 1, 12, 30, tzinfo=UTC),
        "price": Decimal("1.50"),
        "nested": {"list": [1, "two", [True, None, 2.5]], "table": {"$bytes": "not a tag"}},
        "host": "web1",
    }
    props = Properties(
        content_type="application/json",
        delivery_mode=PERSISTENT,
        message_id="id-1",
        timestamp=1_717_000_000,
        app_id="logbus",
        headers=headers,
    )
    broker = open_broker()
    open_session(broker).declare_queue("work")
    open_session(broker).publish(Message(b"{}", props, "", "work"))
    session = restart(broker, open_broker)
    delivered = session.get("work")
    assert delivered is not None
    assert delivered.message.properties == props
    assert (delivered.message.exchange, delivered.message.routing_key) == ("", "work")


def test_message_expired_while_the_broker_was_down_is_not_delivered(open_broker, monkeypatch):
    """A per-message TTL counts in wall-clock time across the restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"stale", expiration="60000"))
    broker.close()
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    assert open_session(open_broker()).get("work") is None


def test_records_expired_while_running_do_not_come_back(open_broker):
    """A message the expiry thread removed stays removed after a restart."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("brief", arguments={"x-message-ttl": 1})
    session.publish(persistent("brief", b"short-lived"))
    deadline = time.monotonic() + 10
    while session.declare_queue("brief", passive=True).message_count:
        assert time.monotonic() < deadline, "the message never expired"
        time.sleep(0.005)
    session = restart(broker, open_broker)
    assert bodies(session, "brief") == []


def test_header_value_that_cannot_be_stored_is_refused(open_broker):
    """A header value no AMQP table can hold is refused rather than silently not persisted."""
    session = open_session(open_broker())
    session.declare_queue("work")
    with pytest.raises(PreconditionFailed):
        session.publish(persistent("work", b"x", headers={"odd": {1, 2}}))


def test_torn_final_record_is_ignored(open_broker, data_dir):
    """A record cut short at the end of the file (a crash mid-write) is dropped, the rest kept."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"complete"))
    session.publish(persistent("work", b"torn apart"))
    broker.close()
    path = journal_file(data_dir)
    os.truncate(path, path.stat().st_size - 3)
    assert bodies(open_session(open_broker()), "work") == [b"complete"]


def test_garbled_final_record_is_ignored(open_broker, data_dir):
    """A last record whose bytes did not all reach the disk is treated as torn, not damage."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"complete"))
    session.publish(persistent("work", b"garbled"))
    broker.close()
    path = journal_file(data_dir)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert bodies(open_session(open_broker()), "work") == [b"complete"]


def test_zero_filled_tail_is_ignored(open_broker, data_dir):
    """Zeros a crash left past the last record are not mistaken for damage."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"kept"))
    broker.close()
    with journal_file(data_dir).open("ab") as file:
        file.write(bytes(100))
    assert bodies(open_session(open_broker()), "work") == [b"kept"]


def test_corruption_in_the_middle_is_a_config_error_naming_file_and_offset(open_broker, data_dir):
    """A damaged record followed by others stops the broker with where the damage is."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"damaged-record"))
    session.publish(persistent("work", b"after it"))
    broker.close()
    path = journal_file(data_dir)
    data = bytearray(path.read_bytes())
    data[data.index(b"damaged-record")] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"{path} is damaged at offset \d+"):
        Journal(data_dir)


def test_a_file_that_is_not_a_journal_is_a_config_error(data_dir):
    """Something else at the journal's path is refused, not overwritten."""
    data_dir.mkdir()
    journal_file(data_dir).write_bytes(b"hello")
    with pytest.raises(ConfigError, match="not a logbus journal"):
        Journal(data_dir)


def test_opening_compacts_the_file_and_keeps_the_state(open_broker, data_dir):
    """Reopening rewrites the log as its live state: smaller, with the same messages."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    for i in range(50):
        session.publish(persistent("work", bytes([i]) * 1000))
    for _ in range(45):
        delivered = session.get("work")
        assert delivered is not None
        session.ack(delivered.delivery_tag)
    broker.close()
    before = journal_file(data_dir).stat().st_size
    session = open_session(open_broker())
    assert journal_file(data_dir).stat().st_size < before / 5
    assert bodies(session, "work") == [bytes([i]) * 1000 for i in range(45, 50)]


def test_file_compacts_itself_when_it_outgrows_the_live_state(open_broker, data_dir):
    """A running broker's log is rewritten once it is several times its live size."""
    broker = open_broker()
    assert broker._journal is not None
    broker._journal.compact_min_bytes = 0
    session = open_session(broker)
    session.declare_queue("work")
    for i in range(40):
        session.publish(persistent("work", bytes([i]) * 1000))
        delivered = session.get("work")
        assert delivered is not None
        if i < 39:
            session.ack(delivered.delivery_tag)
    assert journal_file(data_dir).stat().st_size < 10_000
    session = restart(broker, open_broker)
    assert bodies(session, "work") == [bytes([39]) * 1000]


def test_fsync_always_fsyncs_each_persistent_publish(open_broker, monkeypatch):
    """Under fsync="always" a publish returns only after an fsync of its record."""
    session = open_session(open_broker("always"))
    session.declare_queue("work")
    calls: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd)))
    for i in range(3):
        session.publish(persistent("work", b"%d" % i))
    assert len(calls) == 3


def test_fsync_never_does_not_fsync_publishes(open_broker, monkeypatch):
    """Under fsync="never" publishing leaves writing back to the OS."""
    session = open_session(open_broker("never"))
    session.declare_queue("work")
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    for i in range(3):
        session.publish(persistent("work", b"%d" % i))
    assert calls == []


def test_fsync_interval_fsyncs_in_the_background(open_broker, monkeypatch):
    """Under fsync="interval" a background thread fsyncs what was written."""
    synced = threading.Event()
    real_fsync = os.fsync
    session = open_session(open_broker("interval", interval=0.01))
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.set(), real_fsync(fd)))
    session.declare_queue("work")
    session.publish(persistent("work", b"eventually on disk"))
    assert synced.wait(10)


def test_concurrent_publishers_under_fsync_always_lose_nothing(open_broker):
    """Publishers sharing fsyncs from several threads: every record is there after a restart."""
    broker = open_broker("always")
    open_session(broker).declare_queue("work")

    def publish(n: int) -> None:
        session = open_session(broker)
        for i in range(100):
            session.publish(persistent("work", f"{n}-{i}".encode()))

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    session = restart(broker, open_broker)
    assert sorted(bodies(session, "work")) == sorted(
        f"{n}-{i}".encode() for n in range(4) for i in range(100)
    )


def test_acks_after_close_are_not_journaled(open_broker):
    """Once the broker is closed its journal is too: a late ack is not recorded, at least once."""
    broker = open_broker()
    session = open_session(broker)
    session.declare_queue("work")
    session.publish(persistent("work", b"acked too late"))
    delivered = session.get("work")
    assert delivered is not None
    broker.close()
    session.ack(delivered.delivery_tag)
    assert bodies(open_session(open_broker()), "work") == [b"acked too late"]


def test_data_directory_is_created_private(data_dir):
    """The data directory is created with mode 0700."""
    Journal(data_dir, fsync="never").close()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_a_data_directory_serves_one_journal_at_a_time(data_dir):
    """A second journal on a directory in use is refused with a clear error."""
    first = Journal(data_dir, fsync="never")
    try:
        with pytest.raises(ConfigError, match="in use by another logbus broker"):
            Journal(data_dir, fsync="never")
    finally:
        first.close()


def test_unknown_fsync_policy_is_a_config_error(data_dir):
    """An fsync policy other than always, interval or never is refused."""
    with pytest.raises(ConfigError, match="fsync policy"):
        Journal(data_dir, fsync="sometimes")  # type: ignore[arg-type]
