"""The aio-pika transport, AsyncEmitter and AsyncSubscriber against a real RabbitMQ.

pytest runs no event loop here: each test is a plain function that runs one
coroutine with ``asyncio.run``. Entity names are unique per test and deleted
afterwards; waits are deadlines, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from yarl import URL

from logbus import AsyncEmitter, AsyncSubscriber, LogRecord
from logbus.demo import demo_topology
from logbus.errors import (
    AccessRefused,
    BrokerUnavailable,
    ConnectionLost,
    LogbusError,
    PreconditionFailed,
    Unroutable,
)
from logbus.message import Message, Properties
from logbus.settings import Settings
from logbus.topology import Topology
from logbus.transports import connect
from logbus.transports.aio import AioTransport
from logbus.transports.aio.connect import Failover, Options
from tests.private_broker import PrivateBroker

pytestmark = pytest.mark.timeout(30)

DEADLINE = 20.0  # seconds any one wait in these tests may take


@pytest.fixture
def topology(amqp_url: str) -> Iterator[Topology]:
    """The default topology under a unique prefix, deleted after the test."""
    topo = demo_topology(f"test-aio-{secrets.token_hex(4)}.")
    yield topo
    asyncio.run(_delete_topology(amqp_url, topo))


@pytest.fixture
def private_topology(healthy_private_broker: PrivateBroker) -> Iterator[Topology]:
    """``topology``, on the private node (for tests that close connections)."""
    topo = demo_topology(f"test-aio-{secrets.token_hex(4)}.")
    yield topo
    asyncio.run(_delete_topology(healthy_private_broker.url, topo))


async def _delete_topology(url: str, topo: Topology) -> None:
    async with AioTransport(url) as transport:
        for queue in topo.queues:
            with contextlib.suppress(LogbusError):
                await transport.delete_queue(queue.name)
        for exchange in reversed(topo.exchanges):
            with contextlib.suppress(LogbusError):
                await transport.delete_exchange(exchange.name)


async def _take(subscriber: AsyncSubscriber, count: int) -> list[LogRecord]:
    """Exactly ``count`` records, failing if they do not all come before the deadline."""
    records: list[LogRecord] = []
    deadline = time.monotonic() + DEADLINE
    while len(records) < count:
        left = deadline - time.monotonic()
        record = await subscriber.get(timeout=left) if left > 0 else None
        assert record is not None, f"only {len(records)} of {count} records arrived"
        records.append(record)
    return records


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'guest'}:{password}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_async_emitter_to_async_subscriber_round_trip(amqp_url, topology):
    """A record emitted by AsyncEmitter reaches an AsyncSubscriber bound by key, unchanged."""

    async def main() -> None:
        async with (
            AsyncSubscriber(amqp_url, keys=["kern.*"], topology=topology) as sub,
            AsyncEmitter(amqp_url, topology=topology) as emitter,
        ):
            await emitter.emit("auth.info", "login")
            sent = await emitter.emit("kern.crit", "disk failed", host="web1", disk="sda1")
            (got,) = await _take(sub, 1)
            assert got == sent
            assert await sub.get(timeout=0.2) is None

    asyncio.run(main())


def test_emit_many_pipelines_a_thousand_records_that_all_arrive(amqp_url, topology):
    """emit_many of 1000 records is confirmed, and every record arrives in order."""

    async def main() -> None:
        async with (
            AsyncSubscriber(amqp_url, all=True, topology=topology, prefetch=500) as sub,
            AsyncEmitter(amqp_url, topology=topology) as emitter,
        ):
            count = await emitter.emit_many([("user.info", f"line {i}") for i in range(1000)])
            assert count == 1000
            got = await _take(sub, 1000)
        assert [r.message for r in got] == [f"line {i}" for i in range(1000)]

    asyncio.run(main())


def test_mandatory_publish_that_no_queue_takes_is_unroutable(amqp_url):
    """A mandatory publish to an exchange without bindings raises Unroutable naming both."""
    exchange = f"test-aio-unroutable-{secrets.token_hex(4)}"

    async def main() -> None:
        async with AioTransport(amqp_url) as transport:
            await transport.declare_exchange(exchange, "topic", durable=False)
            try:
                message = Message(b"x", Properties(), exchange, "nobody.home")
                with pytest.raises(Unroutable) as info:
                    await transport.publish(message)
                assert info.value.exchange == exchange
                assert info.value.routing_key == "nobody.home"
                await transport.publish(message, mandatory=False)  # dropped, yet confirmed
            finally:
                await transport.delete_exchange(exchange)

    asyncio.run(main())


def test_precondition_failed_redeclare_leaves_the_transport_usable(amqp_url):
    """A mismatched redeclare raises PreconditionFailed naming the argument; the next call works."""
    queue = f"test-aio-precondition-{secrets.token_hex(4)}"

    async def main() -> None:
        async with AioTransport(amqp_url) as transport:
            await transport.declare_queue(queue, arguments={"x-max-length": 10})
            try:
                with pytest.raises(PreconditionFailed, match="x-max-length"):
                    await transport.declare_queue(queue, arguments={"x-max-length": 20})
                info = await transport.declare_queue(queue, arguments={"x-max-length": 10})
                assert info.message_count == 0
                await transport.publish(Message(b"after", Properties(), "", queue))
                delivery = await transport.get(queue)
                assert delivery is not None
                assert delivery.body == b"after"
                delivery.ack()
            finally:
                await transport.delete_queue(queue)

    asyncio.run(main())


@pytest.mark.faults
def test_a_subscriber_survives_a_broker_side_connection_close(
    healthy_private_broker, private_topology
):
    """After the broker closes the subscriber's connection, later records still arrive."""
    url, topology = healthy_private_broker.url, private_topology
    name = f"logbus-aio-{secrets.token_hex(6)}"

    async def main() -> None:
        async with (
            AioTransport(url, connection_name=name) as transport,
            AsyncSubscriber(keys=["kern.*"], topology=topology, transport=transport) as sub,
            AsyncEmitter(url, topology=topology) as emitter,
        ):
            await emitter.emit("kern.info", "before")
            assert [r.message for r in await _take(sub, 1)] == ["before"]
            await asyncio.to_thread(healthy_private_broker.close_connection, name)
            await transport.wait_reconnected(1, timeout=DEADLINE)
            await emitter.emit("kern.info", "after")
            assert [r.message for r in await _take(sub, 1)] == ["after"]

    asyncio.run(main())


@pytest.mark.faults
def test_a_delivery_from_before_a_drop_is_redelivered_not_acked(
    healthy_private_broker, names_queue
):
    """Acking a delivery from before a drop raises ConnectionLost; it comes back redelivered."""
    name = f"logbus-aio-{secrets.token_hex(6)}"

    async def main() -> None:
        async with AioTransport(healthy_private_broker.url, connection_name=name) as transport:
            await transport.declare_queue(names_queue)
            consumer = await transport.consume(names_queue, prefetch=1)
            await transport.publish(Message(b"once", Properties(), "", names_queue))
            first = await consumer.get(timeout=DEADLINE)
            assert first is not None
            assert first.redelivered is False
            await asyncio.to_thread(healthy_private_broker.close_connection, name)
            await transport.wait_reconnected(1, timeout=DEADLINE)
            with pytest.raises(ConnectionLost):
                first.ack()
            again = await consumer.get(timeout=DEADLINE)
            assert again is not None
            assert (again.body, again.redelivered) == (b"once", True)
            again.ack()

    asyncio.run(main())


@pytest.fixture
def names_queue(healthy_private_broker: PrivateBroker) -> Iterator[str]:
    """A unique durable queue name on the private node, the queue deleted after the test."""
    queue = f"test-aio-q-{secrets.token_hex(4)}"
    yield queue
    with connect(healthy_private_broker.url) as transport, contextlib.suppress(LogbusError):
        transport.delete_queue(queue)


def test_an_unreachable_broker_is_named_without_its_password():
    """BrokerUnavailable names host:port and never the password."""
    url = "amqp://guest:s3cret-pw@127.0.0.1:1/%2F"

    async def main() -> None:
        with pytest.raises(BrokerUnavailable) as info:
            await AioTransport(url, connection_attempts=2).connect()
        assert "127.0.0.1:1" in str(info.value)
        assert "s3cret-pw" not in str(info.value)

    asyncio.run(main())


def test_wrong_credentials_are_access_refused_without_the_password(amqp_url):
    """A refused login is AccessRefused naming the user, not the password."""
    url = _with_password(amqp_url, "not-the-password")

    async def main() -> None:
        with pytest.raises(AccessRefused) as info:
            await AioTransport(url).connect()
        assert "not-the-password" not in str(info.value)
        assert "'guest'" in str(info.value)

    asyncio.run(main())


def test_failover_skips_a_dead_url_and_connects_to_the_next(amqp_url):
    """With 'dead,live' URLs the transport connects to the live one."""
    live = urlsplit(amqp_url)

    async def main() -> None:
        async with AioTransport(f"amqp://guest:guest@127.0.0.1:1/%2F,{amqp_url}") as transport:
            assert transport.endpoint == f"{live.hostname}:{live.port or 5672}"
            info = await transport.declare_queue("", exclusive=True)
            assert info.name.startswith("logbus.gen-")

    asyncio.run(main())


class _StubConnection:
    """Just what Failover touches of a RobustConnection; records where it is pointed."""

    def __init__(self, url: str) -> None:
        self.close_called = False
        self.is_closed = False
        self.connected = asyncio.Event()
        self.reconnect_interval = 0.01
        self.close_callbacks: set[object] = set()
        self.pointed: list[str] = []
        self.moved = asyncio.Event()
        self._url = URL(url)

    @property
    def url(self) -> URL:
        return self._url

    @url.setter
    def url(self, value: URL) -> None:
        self._url = value
        self.pointed.append(f"{value.host}:{value.port}")
        if len(self.pointed) == 3:
            self.moved.set()


def test_a_dropped_connection_fails_over_round_the_urls_until_one_answers():
    """While no reconnect succeeds, each interval points the connection at the next URL."""
    urls = [f"amqp://guest:guest@host{i}:5672/%2F" for i in range(3)]

    async def main() -> None:
        connection = _StubConnection(urls[0])
        options = Options.build(Settings(), "stub", {})
        failover = Failover(connection, urls, 0, options)  # type: ignore[arg-type]
        failover._on_close(connection, ConnectionError("dropped"))
        async with asyncio.timeout(DEADLINE):
            await connection.moved.wait()
        connection.connected.set()  # a reconnect succeeded: the watch ends
        await failover.stop()
        assert connection.pointed[:3] == ["host1:5672", "host2:5672", "host0:5672"]
        assert "heartbeat" in connection.url.query

    asyncio.run(main())
