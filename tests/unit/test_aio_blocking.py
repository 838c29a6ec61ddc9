"""The contract suite's sync face on AioTransport (tests/aio_blocking.py) is built from the
Protocols' names, so these check what it is built from and what its relays do, on a fake
twin: no broker, only the face's own loop thread."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from logbus.errors import ConnectionLost, TransportClosed
from logbus.transports.aio import AioConsumer, AioTransport
from logbus.transports.base import Consumer, Transport
from tests.aio_blocking import (
    BlockingAioConsumer,
    BlockingAioTransport,
    LoopThread,
    protocol_attributes,
    protocol_methods,
)


def _parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    """A signature's parameters without ``self``: (name, kind, default)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize(
    ("protocol", "twin"), [(Transport, AioTransport), (Consumer, AioConsumer)], ids=str
)
def test_the_async_twin_has_every_protocol_method_with_the_same_parameters(protocol, twin):
    """A relay passes its arguments through as given: the twin must take exactly those."""
    methods = protocol_methods(protocol)
    assert methods, protocol
    for name, declared in methods.items():
        assert _parameters(getattr(twin, name)) == _parameters(declared), name


def test_the_face_shows_the_protocols_signatures_and_docstrings():
    """Relays are signed and documented by the Protocol, where they are written once."""
    for face, protocol in ((BlockingAioTransport, Transport), (BlockingAioConsumer, Consumer)):
        for name, declared in protocol_methods(protocol).items():
            mine = getattr(face, name)
            assert inspect.signature(mine) == inspect.signature(declared), name
            relayed = getattr(mine, "__wrapped__", None) is declared
            assert relayed or name in vars(face), name  # a relay, or written in the face
            if relayed:
                assert mine.__doc__ == declared.__doc__, name
        for name in protocol_attributes(protocol):
            assert isinstance(getattr(face, name), property), name


class FakeTwin:
    """Stands for AioTransport/AioConsumer: records where and how it was called."""

    url = "amqp://guest:s3cret@example/%2F"
    queue = "q1"
    tag = "ctag"
    ended = False
    connection_name = "fake"

    def __init__(self) -> None:
        self.read_on: int | None = None
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.stuck = asyncio.Event()

    async def publish_many(self, messages: Iterable[int], *, mandatory: bool = True) -> None:
        self.calls.append(("publish_many", (list(messages),), {"mandatory": mandatory}))

    async def purge_queue(self, name: str) -> int:
        self.calls.append(("purge_queue", (name,), {}))
        return 7

    async def delete_queue(self, name: str, **options: Any) -> int:
        await self.stuck.wait()  # never set: the broker does not answer
        return 0

    async def consume(self, queue: str, **options: Any) -> FakeTwin:
        return self

    async def close(self) -> None:
        self.calls.append(("close", (), {}))


@pytest.fixture
def face() -> Iterator[tuple[BlockingAioTransport, FakeTwin]]:
    """A BlockingAioTransport over a FakeTwin, with its own loop thread."""
    transport = object.__new__(BlockingAioTransport)
    transport._loop_thread = LoopThread()
    transport._loop_thread.timeout = 0.2
    transport._twin = twin = FakeTwin()
    transport.connection_name = twin.connection_name
    yield transport, twin
    transport.close()


def test_a_relay_returns_the_twins_result(face):
    """``purge_queue`` is the twin's, run on the loop, its result handed back."""
    transport, twin = face
    assert transport.purge_queue("q1") == 7
    assert twin.calls == [("purge_queue", ("q1",), {})]


def test_an_iterator_is_read_on_the_callers_thread(face):
    """A generator handed to publish_many runs on the caller's thread, not the loop's."""
    transport, twin = face
    threads: list[int] = []

    def numbers() -> Iterator[int]:
        for i in range(3):
            threads.append(threading.get_ident())
            yield i

    transport.publish_many(numbers(), mandatory=False)
    assert threads == [threading.get_ident()] * 3
    assert twin.calls == [("publish_many", ([0, 1, 2],), {"mandatory": False})]


def test_a_bounded_call_with_no_answer_is_connection_lost(face):
    """A relay that is not in ``unbounded`` gives up after the loop's timeout."""
    transport, _ = face
    with pytest.raises(ConnectionLost, match=r"within 0\.2 s"):
        transport.delete_queue("q1")


def test_consume_hands_back_a_consumer_face_that_reads_the_twin(face):
    """The consumer's face is a Consumer whose queue follows the twin's (renamed on restore)."""
    transport, twin = face
    consumer = transport.consume("q1")
    assert isinstance(consumer, BlockingAioConsumer)
    assert isinstance(consumer, Consumer)
    twin.queue = "q2"
    assert (consumer.queue, consumer.tag) == ("q2", "ctag")


def test_after_close_a_call_is_transport_closed(face):
    """Closing closes the twin and stops the loop; the face then refuses politely."""
    transport, twin = face
    transport.close()
    assert twin.calls[-1][0] == "close"
    with pytest.raises(TransportClosed):
        transport.purge_queue("q1")
    assert "s3cret" not in repr(transport)
