"""The AMQP transport under faults, against a real RabbitMQ: it reconnects and loses nothing.

Broker-side closes happen on the private node (``tests/private_broker.py``), never
on the shared broker: :meth:`PrivateBroker.close_connection` closes the connection
found by its ``connection_name`` client property, and those tests carry the
``faults`` marker. Network faults go through the ``proxy`` fixture, a TCP
forwarder (:class:`tests.proxy.Proxy`) a test can cut and restore.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from time import monotonic

import pytest

from logbus.errors import ConnectionLost, LogbusError, NotConfirmed
from logbus.message import Message, Properties
from logbus.transports.amqp import AmqpTransport
from tests.private_broker import PrivateBroker
from tests.proxy import with_address
from tests.support import wait_until

RABBITMQCTL = shutil.which("rabbitmqctl")
STREAM = 2000  # records published around a fault
AFTER_FAULT = 300  # records still published once the fault happened


# -- helpers shared with test_amqp_transport ---------------------------------------------


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl -q <args>`` on the shared broker (to read only); its output."""
    assert RABBITMQCTL is not None
    done = subprocess.run(
        [RABBITMQCTL, "-q", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()}"
    return done.stdout


@dataclass(frozen=True)
class BrokerConnection:
    """A connection as the broker lists it."""

    pid: str
    heartbeat: int


def broker_connection(
    name: str, timeout: float = 10.0, ctl: Callable[..., str] = rabbitmqctl
) -> BrokerConnection:
    """The broker's entry for the connection whose ``connection_name`` is ``name``, as
    ``ctl`` (quiet ``rabbitmqctl`` against the shared broker, by default) lists it."""
    deadline = monotonic() + timeout
    while True:
        listing = ctl(
            "list_connections", "--no-table-headers", "pid", "timeout", "client_properties"
        )
        for line in listing.splitlines():
            pid, heartbeat, properties = line.split("\t", 2)
            if f'"{name}"' in properties:
                return BrokerConnection(pid, int(heartbeat))
        if monotonic() > deadline:
            raise AssertionError(f"the broker lists no connection named {name!r}")
        threading.Event().wait(0.1)


def reconnected(
    transport: AmqpTransport, old_pid: str, broker: PrivateBroker
) -> Callable[[], bool]:
    """A condition: the transport is connected again, on a new connection to ``broker``."""

    def check() -> bool:
        if not transport.connected:
            return False
        listed = broker_connection(transport.connection_name, ctl=partial(broker.ctl, "-q"))
        return listed.pid != old_pid

    return check


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture
def admin(healthy_private_broker: PrivateBroker, unique_name: str) -> Iterator[AmqpTransport]:
    """A second connection to the private node for setting up, publishing, draining and
    cleaning up."""
    name = f"logbus-{unique_name}-admin"
    with AmqpTransport(healthy_private_broker.url, connection_name=name) as transport:
        yield transport


@pytest.fixture
def queue(admin: AmqpTransport, unique_name: str) -> Iterator[str]:
    """A durable queue for this test, deleted afterwards."""
    name = f"{unique_name}-q"
    admin.declare_queue(name)
    yield name
    admin.delete_queue(name)


@pytest.fixture
def victim(healthy_private_broker: PrivateBroker, unique_name: str) -> Iterator[AmqpTransport]:
    """The connection to the private node a test breaks, named so the broker can find it."""
    with AmqpTransport(
        healthy_private_broker.url, connection_name=f"logbus-{unique_name}", confirm_timeout=20
    ) as transport:
        yield transport


def record(i: int) -> Message:
    """A small persistent message numbered ``i``."""
    return Message(str(i).encode(), Properties(delivery_mode=2, message_id=str(i)))


def drain(transport: AmqpTransport, queue: str, expect: set[int]) -> Counter[int]:
    """Consume ``queue`` until every number in ``expect`` came and then a quiet second."""
    consumer = transport.consume(queue, prefetch=500)
    seen: Counter[int] = Counter()
    deadline = monotonic() + 20
    while monotonic() < deadline:
        delivery = consumer.get(timeout=1.0)
        if delivery is None:
            if expect <= seen.keys():
                break
            continue
        seen[int(delivery.body)] += 1
        delivery.ack()
    consumer.cancel()
    return seen


def to_queue(queue: str, message: Message) -> Message:
    return Message(message.body, message.properties, "", queue)


# -- tests -----------------------------------------------------------------------------


@pytest.mark.faults
def test_confirmed_publishes_survive_a_broker_side_close(
    healthy_private_broker, victim, admin, queue
):
    """Every record confirmed while the broker force-closes the connection arrives at least once."""
    confirmed: list[int] = []
    failures: list[LogbusError] = []
    closed = threading.Event()

    def stream() -> None:
        stop_at: int | None = None
        i = 0
        while stop_at is None or i < stop_at:
            if stop_at is None and closed.is_set():
                stop_at = max(STREAM, i + AFTER_FAULT)
            try:
                victim.publish(to_queue(queue, record(i)))
            except LogbusError as exc:
                failures.append(exc)
                return
            confirmed.append(i)
            i += 1

    publisher = threading.Thread(target=stream)
    publisher.start()
    wait_until(lambda: len(confirmed) >= 500 or bool(failures), 10, "the first records")
    old_pid = healthy_private_broker.close_connection(victim.connection_name)
    closed.set()
    publisher.join(25)
    assert not publisher.is_alive()
    assert failures == []
    assert reconnected(victim, old_pid, healthy_private_broker)()
    seen = drain(admin, queue, set(confirmed))
    lost = set(confirmed) - seen.keys()
    assert not lost, f"{len(lost)} confirmed records lost, e.g. {sorted(lost)[:5]}"
    print(f"{len(confirmed)} confirmed, duplicates: {sum(seen.values()) - len(seen)}")


@pytest.mark.faults
def test_pipelined_batch_survives_a_broker_side_close(healthy_private_broker, victim, admin, queue):
    """A publish_many streaming across a broker-side close confirms all, and all arrive."""
    yielded: list[int] = []
    started, closed = threading.Event(), threading.Event()
    failures: list[LogbusError] = []

    def records() -> Iterator[Message]:
        i = 0
        stop_at: int | None = None
        while stop_at is None or i < stop_at:
            if i == 500:
                started.set()
            if stop_at is None and closed.is_set():
                stop_at = max(STREAM, i + AFTER_FAULT)
            yielded.append(i)
            yield to_queue(queue, record(i))
            i += 1

    def publish() -> None:
        try:
            victim.publish_many(records())
        except LogbusError as exc:
            failures.append(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    assert started.wait(10)
    old_pid = healthy_private_broker.close_connection(victim.connection_name)
    closed.set()
    publisher.join(25)
    assert not publisher.is_alive()
    assert failures == []
    assert reconnected(victim, old_pid, healthy_private_broker)()
    seen = drain(admin, queue, set(yielded))
    lost = set(yielded) - seen.keys()
    assert not lost, f"{len(lost)} confirmed records lost, e.g. {sorted(lost)[:5]}"
    print(f"{len(yielded)} confirmed, duplicates: {sum(seen.values()) - len(seen)}")


@pytest.mark.faults
def test_consumer_keeps_delivering_after_a_broker_side_close(
    healthy_private_broker, victim, admin, queue
):
    """The same consumer object gets every record, published before and after a forced close."""
    half = STREAM // 2
    admin.publish_many(to_queue(queue, record(i)) for i in range(half))
    consumer = victim.consume(queue, prefetch=50)
    tag = consumer.tag
    seen: Counter[int] = Counter()
    started = threading.Event()

    def consume() -> None:
        deadline = monotonic() + 25
        while len(seen) < STREAM and monotonic() < deadline:
            delivery = consumer.get(timeout=0.5)
            if delivery is None:
                continue
            seen[int(delivery.body)] += 1
            delivery.ack()  # a no-op for deliveries from before the close
            if len(seen) >= half // 4:
                started.set()

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(10)
    old_pid = healthy_private_broker.close_connection(victim.connection_name)
    wait_until(reconnected(victim, old_pid, healthy_private_broker), 15, "the reconnect")
    admin.publish_many(to_queue(queue, record(i)) for i in range(half, STREAM))
    worker.join(25)
    assert not worker.is_alive()
    assert consumer.tag == tag
    missing = set(range(STREAM)) - seen.keys()
    assert not missing, f"{len(missing)} records never delivered, e.g. {sorted(missing)[:5]}"
    print(f"duplicates: {sum(seen.values()) - len(seen)}")


@pytest.mark.faults
def test_delivery_from_before_a_close_is_settled_as_a_no_op(
    healthy_private_broker, victim, admin, queue
):
    """Acking a delivery whose connection died does not raise; the broker redelivers it."""
    admin.publish(to_queue(queue, record(1)))
    consumer = victim.consume(queue, prefetch=1)
    before = consumer.get(timeout=5)
    assert before is not None
    old_pid = healthy_private_broker.close_connection(victim.connection_name)
    wait_until(reconnected(victim, old_pid, healthy_private_broker), 15, "the reconnect")
    before.ack()
    again = consumer.get(timeout=5)
    assert again is not None
    assert (again.body, again.redelivered) == (b"1", True)
    again.ack()
    consumer.cancel()
    assert admin.declare_queue(queue, passive=True).message_count == 0


@pytest.mark.faults
def test_exclusive_queue_and_binding_are_declared_again(
    healthy_private_broker, victim, admin, unique_name
):
    """An exclusive queue and its binding, gone with the old connection, come back."""
    exchange = f"{unique_name}-x"
    victim.declare_exchange(exchange, "topic", durable=False, auto_delete=False)
    try:
        own = victim.declare_queue(f"{unique_name}-own", exclusive=True).name
        victim.bind_queue(own, exchange, "kern.*")
        old_pid = healthy_private_broker.close_connection(victim.connection_name)
        wait_until(reconnected(victim, old_pid, healthy_private_broker), 15, "the reconnect")
        admin.publish(Message(b"after", Properties(), exchange, "kern.critical"))
        delivery = victim.get(own)
        assert delivery is not None
        assert delivery.body == b"after"
        delivery.ack()
    finally:
        admin.delete_exchange(exchange)


@pytest.mark.faults
def test_server_named_queue_comes_back_renamed_with_its_consumer(
    healthy_private_broker, victim, admin
):
    """A server-named exclusive queue is redeclared; its consumer follows the new name."""
    old_name = victim.declare_queue("", exclusive=True).name
    consumer = victim.consume(old_name, prefetch=10)
    old_pid = healthy_private_broker.close_connection(victim.connection_name)
    wait_until(reconnected(victim, old_pid, healthy_private_broker), 15, "the reconnect")
    wait_until(lambda: consumer.queue != old_name, 5, "the consumer to follow the new name")
    admin.publish(Message(b"renamed", Properties(), "", consumer.queue))
    delivery = consumer.get(timeout=5)
    assert delivery is not None
    assert (delivery.body, delivery.queue) == (b"renamed", consumer.queue)
    delivery.ack()


def test_calls_fail_in_time_while_the_broker_stays_away(amqp_url, proxy, unique_name):
    """With the broker unreachable, a declare raises ConnectionLost and a publish NotConfirmed."""
    url = with_address(amqp_url, "127.0.0.1", proxy.port)
    with AmqpTransport(url, confirm_timeout=1.0, reconnect_max_delay=0.2) as transport:
        proxy.cut()
        wait_until(lambda: not transport.connected, 10, "the transport to notice the cut")
        with pytest.raises(ConnectionLost, match="not restored"):
            transport.declare_queue(f"{unique_name}-q", exclusive=True)
        with pytest.raises(NotConfirmed) as info:
            transport.publish(Message(b"x", Properties(), "", "nowhere"), mandatory=False)
        assert info.value.unconfirmed == 1


def test_transport_recovers_when_the_broker_is_back(amqp_url, proxy, unique_name):
    """After a network cut heals, the same transport works again without being recreated."""
    url = with_address(amqp_url, "127.0.0.1", proxy.port)
    with AmqpTransport(url, confirm_timeout=10.0, reconnect_max_delay=0.2) as transport:
        queue = transport.declare_queue(f"{unique_name}-q", exclusive=True).name
        proxy.cut()
        wait_until(lambda: not transport.connected, 10, "the transport to notice the cut")
        proxy.start()
        transport.publish(Message(b"back", Properties(), "", queue))
        delivery = transport.get(queue)
        assert delivery is not None
        assert delivery.body == b"back"
        delivery.ack()
