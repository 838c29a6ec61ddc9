"""A sync face on the async aio-pika transport, for the contract suite only.

The contract suite is written once against the sync ``Transport`` Protocol; this
adapter runs it against :class:`~logbus.transports.aio.AioTransport`, whose
behaviour (routing, prefetch, acks, redelivery, confirms) it is there to check.
It is not a product: sync code uses the pika transport (``connect("amqp://...")``),
which confirms about twice as fast (bench/amqp.py), and async code uses
``AioTransport`` directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from logbus.errors import ConnectionLost, TransportClosed
from logbus.message import Message, QueueInfo
from logbus.settings import redact_url
from logbus.transports.aio import AioConsumer, AioTransport
from logbus.transports.base import DEFAULT_PREFETCH, Consumer, Delivery, Transport

__all__ = ["BlockingAioConsumer", "BlockingAioTransport"]

T = TypeVar("T")


class BlockingAioConsumer:
    """The sync :class:`~logbus.transports.base.Consumer` face of an :class:`AioConsumer`."""

    def __init__(self, transport: BlockingAioTransport, consumer: AioConsumer) -> None:
        self.queue = consumer.queue
        self.tag = consumer.tag
        self._transport = transport
        self._consumer = consumer

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, waiting up to ``timeout`` seconds (None: forever)."""
        return self._transport._call(self._consumer.get(timeout), bounded=False)

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    def cancel(self) -> None:
        """Stop receiving; deliveries already received can still be settled."""
        self._transport._call(self._consumer.cancel())


class BlockingAioTransport:
    """The sync :class:`~logbus.transports.base.Transport` over :class:`AioTransport`.

    An event loop runs in a private daemon thread; every call is handed to it
    and waited for. Deliveries settle from the calling thread (see
    :mod:`logbus.transports.aio`). Arguments are those of :class:`AioTransport`.
    """

    def __init__(self, url: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="logbus-aio-loop", daemon=True
        )
        self._thread.start()
        self._timeout: float | None = None  # connecting is bounded by its own options
        try:
            self._aio: AioTransport = self._call(_build(url, options))
        except BaseException:
            self._stop_loop()
            raise
        self.url = self._aio.url
        self.connection_name = self._aio.connection_name
        self._timeout = self._aio.options.confirm_timeout + self._aio.options.connect_timeout

    @property
    def aio(self) -> AioTransport:
        """The async transport underneath (use it only from its loop's thread)."""
        return self._aio

    def _call(self, coro: Coroutine[Any, Any, T], *, bounded: bool = True) -> T:
        if not self._loop.is_running():
            coro.close()
            raise TransportClosed("the transport is closed; open a new one")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        wait = self._timeout if bounded else None
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ConnectionLost(f"no answer from the broker within {wait:g} s") from None
        except BaseException:
            future.cancel()  # interrupted (KeyboardInterrupt ...): stop the work too
            raise

    def wait_reconnected(self, count: int = 1, timeout: float | None = None) -> None:
        """Wait until the connection has been restored ``count`` times in all, consumers too."""
        self._call(self._aio.wait_reconnected(count, timeout), bounded=False)

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> None:
        """Declare an exchange; an existing one must match (else ``PreconditionFailed``)."""
        declaring = self._aio.declare_exchange(
            name,
            type,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
            passive=passive,
        )
        self._call(declaring)

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and its bindings."""
        self._call(self._aio.delete_exchange(name, if_unused=if_unused))

    def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo:
        """Declare a queue (an empty name gets a generated ``logbus.gen-<hex>`` one)."""
        declaring = self._aio.declare_queue(
            name,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
            passive=passive,
        )
        return self._call(declaring)

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        return self._call(self._aio.delete_queue(name, if_unused=if_unused, if_empty=if_empty))

    def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages; returns how many."""
        return self._call(self._aio.purge_queue(name))

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        self._call(self._aio.bind_queue(queue, exchange, routing_key, arguments))

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        self._call(self._aio.unbind_queue(queue, exchange, routing_key, arguments))

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another."""
        self._call(self._aio.bind_exchange(destination, source, routing_key, arguments))

    def publish(self, message: Message, *, mandatory: bool = True) -> None:
        """Publish one message and wait for the broker's confirm."""
        self._call(self._aio.publish(message, mandatory=mandatory))

    def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish many messages with pipelined confirms; raise if any was not confirmed."""
        # The iterable is read here, on the caller's thread, not on the loop's.
        batch = list(messages)
        self._call(self._aio.publish_many(batch, mandatory=mandatory), bounded=False)

    def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue, or None when it is empty."""
        return self._call(self._aio.get(queue, auto_ack=auto_ack))

    def consume(
        self, queue: str, *, prefetch: int = DEFAULT_PREFETCH, exclusive: bool = False
    ) -> BlockingAioConsumer:
        """Start consuming with manual acks and at most ``prefetch`` unacked deliveries."""
        consumer = self._call(self._aio.consume(queue, prefetch=prefetch, exclusive=exclusive))
        return BlockingAioConsumer(self, consumer)

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        if not self._loop.is_running():
            return
        try:
            self._call(self._aio.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> BlockingAioTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BlockingAioTransport {redact_url(self.url)} name={self.connection_name!r}>"


async def _build(url: str | None, options: dict[str, Any]) -> AioTransport:
    # Built on the loop's thread, so its asyncio objects belong to that loop.
    return await AioTransport(url, **options).connect()


if TYPE_CHECKING:  # mypy proves each class implements its Protocol

    def _implements(b: BlockingAioTransport, d: BlockingAioConsumer) -> tuple[Transport, Consumer]:
        return b, d
