"""``AsyncSubscriber`` with history, on RabbitMQ (aio-pika has no in-process transport)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from logbus import AsyncEmitter, AsyncSubscriber
from logbus.errors import LogbusError
from logbus.testing.capture import prefixed
from logbus.topology import Topology, default
from logbus.transports import connect

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def topology(amqp_url: str) -> Iterator[Topology]:
    """The default topology, history stream included, under a unique prefix; deleted after."""
    topo = prefixed(default(), f"test-hist-aio-{secrets.token_hex(4)}.")
    yield topo
    with connect(amqp_url) as transport:
        for queue in topo.queues:
            with contextlib.suppress(LogbusError):
                transport.delete_queue(queue.name)
        for exchange in reversed(topo.exchanges):
            with contextlib.suppress(LogbusError):
                transport.delete_exchange(exchange.name)


def test_async_subscriber_replays_since_a_point_until_another(amqp_url, topology):
    """since= leaves out what came before it (a stream starts at its chunk), until= ends it."""

    async def main() -> list[str]:
        async with AsyncEmitter(amqp_url, topology=topology) as emitter:
            await emitter.emit("kern.info", "before")
            since = datetime.now(UTC)
            await emitter.emit("kern.info", "after")
            await emitter.emit("mail.info", "not kern")
            until = datetime.now(UTC)
            await emitter.emit("kern.info", "too late")
        sub = AsyncSubscriber(
            amqp_url, keys=["kern.*"], topology=topology, since=since, until=until
        )
        async with sub:
            shown = [record.message async for record in sub]
            assert sub.history is not None and sub.history.done
        return shown

    assert asyncio.run(main()) == ["after"]
