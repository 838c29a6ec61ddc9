"""The :class:`AioTransport` itself; :mod:`logbus.transports.aio` documents and exports it.

Here are the connection's life, declarations, ``basic.get``, consumers and
closing; publishing is :mod:`logbus.transports.aio.publish`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import aio_pika
import aiormq.abc
from pamqp.commands import Basic

from logbus._log import get_logger
from logbus.errors import ConnectionLost, LogbusError, TransportClosed
from logbus.message import Message, QueueInfo
from logbus.settings import Settings, redact_url
from logbus.transports.aio.connect import (
    ChannelSlot,
    Failover,
    Options,
    endpoint,
    open_robust,
    split_urls,
)
from logbus.transports.aio.consumer import AioConsumer
from logbus.transports.aio.convert import from_amqp
from logbus.transports.aio.declared import Declared, QueueSpec
from logbus.transports.aio.errors import reply_text, translate
from logbus.transports.aio.publish import send, send_many
from logbus.transports.aio.settle import AfterSettle, Settlements
from logbus.transports.base import DEFAULT_PREFETCH, Delivery, Settlement

__all__ = ["AioTransport"]

# Seconds close waits for the broker's replies once a confirm did not come in time.
_UNANSWERED_CLOSE_WAIT = 0.25

log = get_logger("logbus.transports.aio")
T = TypeVar("T")


class AioTransport:
    """An aio-pika connection to RabbitMQ with the Transport methods as coroutines.

    ``url`` is one amqp:// or amqps:// URL or several, comma-separated
    (failover); it defaults to ``settings.url``. ``settings`` gives the
    timeouts and heartbeat; keyword options are ``connection_name`` (default
    ``logbus-aio-<hex>``), ``connection_attempts``, ``reconnect_interval``,
    ``publish_window`` and ``ssl_context``. The connection opens on first use,
    or with ``await transport.connect()`` / ``async with``.
    """

    def __init__(
        self, url: str | None = None, *, settings: Settings | None = None, **options: Any
    ) -> None:
        self.settings = settings or Settings()
        self.url = url or self.settings.url
        self._urls = split_urls(self.url)
        self.endpoint = endpoint(self._urls[0])
        self.options = Options.build(self.settings, f"logbus-aio-{secrets.token_hex(4)}", options)
        self.connection_name = self.options.connection_name
        #: How many times the connection was restored after a drop.
        self.reconnects = 0
        self._connection: aio_pika.RobustConnection | None = None
        self._failover: Failover | None = None
        self._connect_lock = asyncio.Lock()
        self._reconnected = asyncio.Condition()
        self._declaring = ChannelSlot(self._ready, confirms=False)
        self._publishing = ChannelSlot(self._ready, confirms=True)
        self._getting = ChannelSlot(self._ready, confirms=False)
        # In the order they were made: close() closes their channels oldest first, as pika
        # does, so a closing connection returns its messages in the same order.
        self._consumers: dict[AioConsumer, None] = {}
        self._declared = Declared()
        self._settlements = Settlements(self.endpoint, self.options.confirm_timeout)
        self._closed = False
        # Set by publishing when a confirm did not come in time: then the broker is not
        # reading what we send (a memory alarm blocks us, say), and close does not wait.
        self._unanswered = False

    def __repr__(self) -> str:
        return f"<AioTransport {redact_url(self.url)} name={self.connection_name!r}>"

    # -- connection ----------------------------------------------------------------------

    async def connect(self) -> AioTransport:
        """Open the connection now (it otherwise opens on first use); returns the transport."""
        await self._open()
        return self

    async def _open(self) -> aio_pika.RobustConnection:
        if self._closed:
            raise TransportClosed(f"the transport to {self.endpoint} is closed; open a new one")
        if self._connection is None:
            async with self._connect_lock:
                if self._connection is None:
                    connection, index = await open_robust(self._urls, self.options)
                    if self._closed:  # closed while connecting
                        await connection.close()
                        raise TransportClosed(f"the transport to {self.endpoint} is closed")
                    self.endpoint = self._settlements.endpoint = endpoint(self._urls[index])
                    self._settlements.loop = asyncio.get_running_loop()
                    connection.reconnect_callbacks.add(self._on_reconnect)
                    connection.close_callbacks.add(self._on_drop)
                    self._failover = Failover(connection, self._urls, index, self.options)
                    self._connection = connection
        return self._connection

    async def _ready(self) -> aio_pika.RobustConnection:
        connection = await self._open()
        if not connection.connected.is_set():
            try:
                async with asyncio.timeout(self.options.connect_timeout):
                    await connection.ready()
            except TimeoutError:
                if self._closed:
                    raise TransportClosed(f"the transport to {self.endpoint} is closed") from None
                raise ConnectionLost(
                    f"the connection to {self.endpoint} dropped and is not back after "
                    f"{self.options.connect_timeout:g} s; it keeps reconnecting, retry later"
                ) from None
        return connection

    async def _on_reconnect(self, _connection: object) -> None:
        self.reconnects += 1
        log.info("reconnected", endpoint=self.endpoint, reconnects=self.reconnects)
        async with self._reconnected:
            self._reconnected.notify_all()

    def _on_drop(self, _connection: object, exc: BaseException | None) -> None:
        if not self._closed:
            reason = reply_text(exc) if exc is not None else "closed"
            log.warning("connection lost; reconnecting", endpoint=self.endpoint, reason=reason)

    async def wait_reconnected(self, count: int = 1, timeout: float | None = None) -> None:
        """Wait until the connection has been restored ``count`` times in all, consumers too."""
        try:
            async with asyncio.timeout(timeout), self._reconnected:
                await self._reconnected.wait_for(lambda: self.reconnects >= count)
        except TimeoutError:
            raise ConnectionLost(
                f"the connection to {self.endpoint} was not restored within {timeout:g} s"
            ) from None

    async def _run(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one broker operation with a deadline, translating whatever the driver raises."""
        try:
            async with asyncio.timeout(self.options.confirm_timeout):
                return await call()
        except LogbusError:
            raise
        except Exception as exc:
            raise translate(exc, doing=doing, endpoint=self.endpoint, closed=self._closed) from exc

    # -- declarations --------------------------------------------------------------------

    async def declare_exchange(
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

        async def call() -> None:
            channel = await self._declaring.get()
            await channel.declare_exchange(
                name,
                type,
                durable=durable,
                auto_delete=auto_delete,
                internal=internal,
                passive=passive,
                arguments=dict(arguments or {}),
            )

        await self._run(f"declaring exchange {name!r}", call)
        if not passive:
            self._declared.exchange(
                name,
                {
                    "type": type,
                    "durable": durable,
                    "auto_delete": auto_delete,
                    "internal": internal,
                    "arguments": dict(arguments or {}),
                },
            )

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and its bindings."""

        async def call() -> None:
            channel = await self._declaring.get()
            await channel.exchange_delete(name, if_unused=if_unused)

        await self._run(f"deleting exchange {name!r}", call)
        self._declared.exchange_deleted(name)

    async def declare_queue(
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
        if not name and not passive:
            name = f"logbus.gen-{secrets.token_hex(12)}"
        args = dict(arguments or {})

        async def call() -> aiormq.spec.Queue.DeclareOk:
            channel = await self._declaring.get()
            queue = await channel.declare_queue(
                name,
                durable=durable,
                exclusive=exclusive,
                passive=passive,
                auto_delete=auto_delete,
                arguments=args,
            )
            return queue.declaration_result

        ok = await self._run(f"declaring queue {name!r}", call)
        if not passive:
            self._declared.queue(name, QueueSpec(durable, exclusive, auto_delete, args))
        return QueueInfo(ok.queue or name, ok.message_count or 0, ok.consumer_count or 0)

    async def delete_queue(
        self, name: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """Delete a queue; returns how many messages it held."""

        async def call() -> int:
            channel = await self._declaring.get()
            ok = await channel.queue_delete(name, if_unused=if_unused, if_empty=if_empty)
            return ok.message_count or 0

        count = await self._run(f"deleting queue {name!r}", call)
        self._declared.queue_deleted(name)
        return count

    async def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages; returns how many."""

        async def call() -> int:
            queue = await (await self._declaring.get()).get_queue(name, ensure=False)
            ok = await queue.purge()
            return ok.message_count or 0

        return await self._run(f"purging queue {name!r}", call)

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        args = dict(arguments or {})

        async def call() -> None:
            target = await (await self._declaring.get()).get_queue(queue, ensure=False)
            await target.bind(exchange, routing_key, arguments=args)

        await self._run(f"binding queue {queue!r} to exchange {exchange!r}", call)
        self._declared.queue_bound(queue, exchange, routing_key, args)

    async def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        args = dict(arguments or {})

        async def call() -> None:
            target = await (await self._declaring.get()).get_queue(queue, ensure=False)
            await target.unbind(exchange, routing_key, arguments=args)

        await self._run(f"unbinding queue {queue!r} from exchange {exchange!r}", call)
        self._declared.queue_unbound(queue, exchange, routing_key, args)

    async def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another: messages routed by ``source`` flow into ``destination``."""

        async def call() -> None:
            target = await (await self._declaring.get()).get_exchange(destination, ensure=False)
            await target.bind(source, routing_key, arguments=dict(arguments or {}))

        await self._run(f"binding exchange {destination!r} to {source!r}", call)
        self._declared.exchange_bound(destination, source, routing_key, dict(arguments or {}))

    async def _restore_exchanges(self) -> None:
        """Declare this transport's exchanges and exchange bindings again, once per
        reconnect (every consumer's restore asks; the first does it)."""
        connection = await self._open()
        await self._declared.restore_exchanges(self, connection.transport)

    async def _prepare_queue(self, name: str, *, restoring: bool = False) -> None:
        """Check a queue is there before consuming; after a reconnect, re-create our own."""
        await self._declared.prepare_queue(self, name, restoring=restoring)

    # -- publishing ----------------------------------------------------------------------

    async def publish(self, message: Message, *, mandatory: bool = True) -> None:
        """Publish one message and wait for the broker's confirm."""
        underlay = await self._run("opening the publishing channel", self._publishing.underlay)
        await send(self, underlay, message, mandatory)

    async def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish many messages with pipelined confirms; raise if any was not confirmed.

        Up to ``publish_window`` publishes are in flight at once. Unroutable or
        nacked messages do not stop the batch: the error raised at the end names
        the first and counts all (``unconfirmed``). A channel or connection
        error stops it and is raised as is.
        """
        underlay = await self._run("opening the publishing channel", self._publishing.underlay)
        await send_many(self, underlay, messages, mandatory)

    # -- consuming -----------------------------------------------------------------------

    def _delivery(
        self,
        delivered: aiormq.abc.DeliveredMessage,
        *,
        queue: str,
        consumer_tag: str,
        after: AfterSettle | None = None,
    ) -> Delivery:
        frame = delivered.delivery
        assert isinstance(frame, Basic.Deliver | Basic.GetOk)
        return Delivery(
            from_amqp(delivered),
            delivery_tag=int(frame.delivery_tag or 0),
            redelivered=bool(frame.redelivered),
            consumer_tag=consumer_tag,
            queue=queue,
            settle=self._settlements.settler(delivered.channel, after),
        )

    async def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue (``basic.get``), or None when it is empty."""

        async def call() -> aiormq.abc.DeliveredMessage:
            underlay = await self._getting.underlay()
            return await underlay.basic_get(queue, no_ack=auto_ack)

        delivered = await self._run(f"getting from queue {queue!r}", call)
        if isinstance(delivered.delivery, Basic.GetEmpty):
            return None
        delivery = self._delivery(delivered, queue=queue, consumer_tag="")
        if auto_ack:
            delivery.settled = Settlement.ACK
        return delivery

    async def consume(
        self,
        queue: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> AioConsumer:
        """Start consuming with manual acks and at most ``prefetch`` unacked deliveries."""
        await self._prepare_queue(queue)  # NotFound / ResourceLocked on a clean channel
        connection = await self._ready()
        channel = connection.channel(publisher_confirms=False)
        consumer = AioConsumer(self, channel, queue, exclusive=exclusive, arguments=arguments)

        async def call() -> None:
            await channel.initialize()
            await channel.set_qos(prefetch_count=prefetch)  # restored with the channel
            await consumer.start()

        try:
            await self._run(f"consuming queue {queue!r}", call)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        channel.reopen_callbacks.add(consumer.restore)
        self._consumers[consumer] = None
        return consumer

    def _forget(self, consumer: AioConsumer) -> None:
        self._consumers.pop(consumer, None)

    # -- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        if self._closed:
            return
        self._closed = True
        # Each close waits for the broker's close-ok: for a while, or, from a broker that
        # is not reading (it left a publish unconfirmed), for a moment only.
        wait = _UNANSWERED_CLOSE_WAIT if self._unanswered else self.options.connect_timeout
        try:
            async with asyncio.timeout(wait):
                await self._settlements.flush()  # acks go out before the channels close
                self._settlements.closed = True
                for consumer in list(self._consumers):
                    await consumer.close_channel()
                for slot in (self._getting, self._publishing, self._declaring):
                    await slot.close()
        except TimeoutError:
            log.info("channels_not_closed", endpoint=self.endpoint, waited=wait)
        self._settlements.closed = True
        if self._failover is not None:
            await self._failover.stop()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), wait)
        log.debug("closed", endpoint=self.endpoint)

    async def __aenter__(self) -> AioTransport:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
