"""The aio transport's consumer: one queue, on a robust channel of its own.

Deliveries are read at aiormq's level (``basic_consume`` on the underlying
channel of an aio-pika :class:`~aio_pika.RobustChannel`) rather than as
aio-pika ``IncomingMessage`` objects: those re-encode ``expiration`` as float
seconds and default a missing ``priority`` to 0, and logbus hands properties
on exactly as the broker sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiormq.abc
from aio_pika.abc import AbstractRobustChannel
from pamqp.commands import Basic

from logbus._log import get_logger
from logbus.errors import AccessRefused, ChannelError, LogbusError
from logbus.transports.aio.connect import Options
from logbus.transports.aio.errors import translate
from logbus.transports.base import Delivery

__all__ = ["AioConsumer", "ConsumerHost"]

log = get_logger("logbus.transports.aio")

_END = object()  # in a consumer's inbox: nothing more will come


class ConsumerHost(Protocol):
    """What a consumer needs of its transport (the transport passes itself)."""

    endpoint: str  # the broker it is connected to now: host:port
    options: Options

    async def _restore_exchanges(self) -> None: ...

    async def _prepare_queue(self, name: str, *, restoring: bool = False) -> None: ...

    def _delivery(
        self,
        delivered: aiormq.abc.DeliveredMessage,
        *,
        queue: str,
        consumer_tag: str,
        after: Callable[[int, bool], None] | None = None,
    ) -> Delivery: ...

    def _forget(self, consumer: AioConsumer) -> None: ...


class AioConsumer:
    """A consumer of one queue on its own robust channel, with its own prefetch.

    ``await get(timeout)`` or ``async for delivery in consumer``; ``await
    cancel()`` stops it (what was already received can still be read and
    settled). After a connection drop aio-pika reopens the channel and restores
    its prefetch; the consumer then consumes again under the same tag — first
    declaring again the exchanges, the queue and the bindings this transport
    declared, since the broker deleted an exclusive or auto-delete queue with
    the old connection, and a restarted broker forgets non-durable ones.
    Deliveries received before the drop are skipped: the broker requeued them
    and redelivers them, flagged ``redelivered``. The consumer ends when its
    queue is deleted (``get`` returns None) or cannot be restored (``get``
    raises why).
    """

    def __init__(
        self,
        transport: ConsumerHost,
        channel: AbstractRobustChannel,
        queue: str,
        *,
        exclusive: bool,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.queue = queue
        self.tag = f"logbus.ctag-{secrets.token_hex(8)}"
        self._transport = transport
        self._channel = channel
        self._exclusive = exclusive
        self._arguments = dict(arguments or {})
        self._inbox: asyncio.Queue[aiormq.abc.DeliveredMessage | object] = asyncio.Queue()
        self._stopping = False  # cancelled, by us or by the broker: nothing new will come
        self._ended = False  # the end marker was read: get() returns None from now on
        self._error: LogbusError | None = None  # why it could not be restored, raised by get()
        self._unsettled: set[int] = set()
        self._release: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Send ``basic.consume`` on the channel's current underlying channel."""
        underlay = await self._channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._on_broker_cancel)
        await underlay.basic_consume(
            self.queue,
            self._on_deliver,
            exclusive=self._exclusive,
            consumer_tag=self.tag,
            arguments=self._arguments or None,
        )

    async def _on_deliver(self, delivered: aiormq.abc.DeliveredMessage) -> None:
        self._inbox.put_nowait(delivered)

    def _on_broker_cancel(self, frame: Basic.Cancel) -> None:
        if frame.consumer_tag == self.tag and not self._stopping:
            log.warning("consumer cancelled by the broker", queue=self.queue, tag=self.tag)
            self._stop()

    def _stop(self) -> None:
        self._stopping = True
        self._inbox.put_nowait(_END)

    async def restore(self, _channel: object = None) -> None:
        """Consume again after aio-pika reopened the channel (its ``reopen_callbacks``)."""
        self._unsettled.clear()  # tags of the old channel mean nothing on the new one
        if self._stopping:
            return
        endpoint = self._transport.endpoint
        try:
            await self._transport._restore_exchanges()
            await self._transport._prepare_queue(self.queue, restoring=True)
            try:
                await self.start()
            except Exception as exc:
                raise translate(exc, doing=f"consuming {self.queue!r}", endpoint=endpoint) from exc
        except (ChannelError, AccessRefused) as exc:
            # The queue is gone or refused: end this consumer. The channel is closed
            # from a new task, since this runs under aio-pika's channel restore lock.
            log.warning("consumer not restored", queue=self.queue, reason=str(exc))
            try:  # the same kind of error (its exit status), saying what it stopped
                self._error = type(exc)(
                    f"consuming queue {self.queue!r} could not resume after a reconnect: {exc}"
                )
            except TypeError:
                self._error = exc
            self._stop()
            self._release = asyncio.get_running_loop().create_task(self.close_channel())
        except Exception as exc:  # the connection dropped again; its return retries
            reason = str(translate(exc, doing="restoring", endpoint=endpoint))
            log.info("consumer restore interrupted", queue=self.queue, reason=reason)
        else:
            log.info("consumer restored", queue=self.queue, tag=self.tag)

    async def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds (None: wait) or once cancelled;
        raises why, once it could not resume after a reconnect."""
        if self._ended:
            if self._error is not None:
                raise self._error
            return None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    item = await self._inbox.get()
                    if item is _END:
                        self._ended = True
                        self._maybe_release()
                        if self._error is not None:
                            raise self._error
                        return None
                    assert isinstance(item, aiormq.abc.DeliveredMessage)
                    if item.channel.is_closed:
                        continue  # requeued with its channel: it will come again
                    return self._delivery(item)
        except TimeoutError:
            return None

    def _delivery(self, delivered: aiormq.abc.DeliveredMessage) -> Delivery:
        delivery = self._transport._delivery(
            delivered, queue=self.queue, consumer_tag=self.tag, after=self._settled
        )
        self._unsettled.add(delivery.delivery_tag)
        return delivery

    def _settled(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._unsettled = {t for t in self._unsettled if t > tag}
        else:
            self._unsettled.discard(tag)
        self._maybe_release()

    def _maybe_release(self) -> None:
        # Once ended and all settled, the channel has no more use: close it.
        if self._ended and not self._unsettled and self._release is None:
            self._release = asyncio.get_running_loop().create_task(self.close_channel())

    def __aiter__(self) -> AioConsumer:
        return self

    async def __anext__(self) -> Delivery:
        delivery = await self.get()
        if delivery is None:
            raise StopAsyncIteration
        return delivery

    @property
    def ended(self) -> bool:
        """Whether a get has seen the end: it returns None at once from now on."""
        return self._ended

    async def cancel(self) -> None:
        """Stop receiving; deliveries already received can still be read and settled."""
        if self._stopping:
            return
        self._stopping = True
        if not self._channel.is_closed:
            with contextlib.suppress(Exception):  # a dead channel delivers nothing more anyway
                async with asyncio.timeout(self._transport.options.confirm_timeout):
                    underlay = await self._channel.get_underlay_channel()
                    await underlay.basic_cancel(self.tag)
        self._inbox.put_nowait(_END)
        self._maybe_release()

    async def close_channel(self) -> None:
        """Close the consumer's channel: unsettled deliveries go back to the queue."""
        self._transport._forget(self)
        if not self._stopping:
            self._stop()
        with contextlib.suppress(Exception):
            await self._channel.close()

    def __repr__(self) -> str:
        return f"<AioConsumer queue={self.queue!r} tag={self.tag!r} stopping={self._stopping}>"
