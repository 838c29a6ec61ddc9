"""Consumers of the AMQP transport: one channel each, restored after reconnects.

An :class:`AmqpConsumer` is both the user's handle (``get``, iteration,
``cancel``) and the I/O thread's record of the consumer (its channel, tag and
unacked delivery tags; methods named ``io_*``). Its consumer tag stays the same
across reconnects. Deliveries carry the *epoch* of the channel they came on;
once that channel is gone the broker has requeued them, so ``get`` skips those
still waiting and settling one already handed out is a logged no-op. A consumer
that cannot resume after a reconnect (its queue or a binding could not be
declared again, the broker refused ``basic.consume``) ends with that error:
``get`` raises it rather than wait for deliveries that will never come.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from functools import partial
from time import monotonic
from typing import Any, Protocol

import pika.exceptions as pika_errors

from logbus._log import get_logger
from logbus.errors import LogbusError, TransportClosed, TransportError
from logbus.message import Message, Properties
from logbus.transports.amqp.pika_convert import properties_from_pika, reply_error
from logbus.transports.amqp.pika_loop import IoHost, io_callback
from logbus.transports.amqp.pika_settle import Settled
from logbus.transports.base import BatchSettler, Delivery, Settlement, Settler

__all__ = ["AmqpConsumer", "ConsumerHost", "restore_error"]

log = get_logger("logbus.transports.amqp")

_END = object()

#: Told once whether (re)starting the consumer worked: None, or why not.
Started = Callable[[TransportError | None], None]


class ConsumerHost(IoHost, Protocol):
    """What a consumer needs of the core it lives on (the core passes itself)."""

    consumers: dict[str, AmqpConsumer]  # registered by consumer tag
    connection: Any

    def call(
        self, run: Callable[[Future[None]], None], what: str, timeout: float | None = None
    ) -> None:
        """Run ``run(future)`` on the I/O thread and wait for the future it settles."""
        ...

    def settle(
        self, target: Settled, epoch: int, how: Settlement, tag: int, multiple: bool, requeue: bool
    ) -> None:
        """Queue a settlement from any thread (see ``pika_settle``)."""
        ...

    def settle_many(
        self, target: Settled, epoch: int, how: Settlement, tags: list[int], requeue: bool
    ) -> None:
        """Queue several settlements alike from any thread (see ``pika_settle``)."""
        ...

    def consumer_ended(self, consumer: AmqpConsumer, *, by_broker: bool) -> None:
        """Forget the queue of a consumer that ended, if nobody will declare it again."""
        ...

    def resolve(self, queue: str) -> str:
        """A queue's current name (a server-named queue is renamed by a reconnect)."""
        ...


def restore_error(error: LogbusError, what: str) -> TransportError:
    """Why something could not be restored after a reconnect: ``what``, then ``error``,
    as an error of ``error``'s kind (so its exit status), else a TransportError."""
    message = f"{what}: {error}"
    if isinstance(error, TransportError):
        with contextlib.suppress(TypeError):  # a class that wants more than a message
            return type(error)(message)
    return TransportError(message)


class AmqpConsumer:
    """Deliveries of one queue, consumed with manual acks on a channel of its own."""

    def __init__(
        self,
        core: ConsumerHost,
        queue_name: str,
        prefetch: int,
        exclusive: bool,
        owner: object,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.queue = queue_name
        self.tag = f"logbus-{secrets.token_hex(8)}"
        self.prefetch = prefetch
        self.exclusive = exclusive
        self.arguments = dict(arguments or {})
        self.channel: Any = None
        self.epoch = 0
        self.live_epoch: int | None = None
        self.unacked: set[int] = set()
        self.cancelled = False
        #: Whether the queue is a stream (a replay's offset was given, or a delivery
        #: carried its stream offset): a cancel then closes the channel (:meth:`_cancel`).
        self.on_stream = "x-stream-offset" in self.arguments
        self._core = core
        self._owner = owner  # keeps the transport alive while its consumer is in use
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ended = False
        self._error: TransportError | None = None  # why it ended, if not by a cancel
        self._latest: Any = None
        self._started: Started | None = None
        # How the deliveries of the live channel settle: made once per channel, not per message.
        self._settle: Settler | None = None
        self._settle_many: BatchSettler | None = None

    # -- the user's side ------------------------------------------------------

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once cancelled; raises
        why, once it could not resume after a reconnect."""
        deadline = None if timeout is None else monotonic() + timeout
        while not self._ended:
            wait = None if deadline is None else max(0.0, deadline - monotonic())
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                return None
            if item is _END:
                self._ended = True
                break
            assert isinstance(item, tuple)
            epoch, delivery = item
            if epoch == self.live_epoch:
                return delivery  # type: ignore[no-any-return]
            # Its channel is gone, so the broker has requeued it: it will come again.
            log.debug("amqp.stale_delivery_skipped", queue=self.queue, tag=delivery.delivery_tag)
        if self._error is not None:
            raise self._error
        return None

    def get_many(self, limit: int, timeout: float | None = None) -> list[Delivery]:
        """Up to ``limit`` deliveries: the first within ``timeout`` seconds, then those
        already received; empty after the timeout or once cancelled."""
        first = self.get(timeout)
        if first is None:
            return []
        batch = [first]
        inbox = self._inbox
        while len(batch) < limit:
            try:
                item = inbox.get_nowait()
            except queue.Empty:
                break
            if item is _END:
                self._ended = True
                break
            assert isinstance(item, tuple)
            epoch, delivery = item
            if epoch == self.live_epoch:
                batch.append(delivery)
            else:
                log.debug(
                    "amqp.stale_delivery_skipped", queue=self.queue, tag=delivery.delivery_tag
                )
        return batch

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    @property
    def ended(self) -> bool:
        """Whether a get has seen the end: it returns None at once from now on."""
        return self._ended

    def cancel(self) -> None:
        """Stop receiving; deliveries already received can still be settled."""
        if self.cancelled or self._ended:
            return
        # Closing the transport (TransportClosed) has ended the consumer already.
        with contextlib.suppress(TransportClosed):
            self._core.call(self.io_cancel, f"cancel consumer of queue {self.queue!r}")

    def __repr__(self) -> str:
        return f"<AmqpConsumer queue={self.queue!r} tag={self.tag!r}>"

    # -- the I/O thread's side ---------------------------------------------------

    def describe(self) -> str:
        return f"consumer {self.tag} of queue {self.queue!r}"

    def io_begin(self, future: Future[None]) -> None:
        """Register and start the consumer; ``future`` is the waiting ``consume`` call."""

        def started(error: TransportError | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self._core.consumers[self.tag] = self
        if self._core.ready:
            self.io_start(self._core.connection, started)
        else:  # reconnecting: it starts with the others once the connection is back
            self._started = started

    def io_start(self, connection: Any, started: Started) -> None:
        """Open a channel, set its prefetch and start consuming; ``started`` hears how it went."""
        self._started = started
        channel = connection.channel(on_open_callback=self._opened)
        channel.add_on_close_callback(self._closed)
        self._latest = channel

    def io_restore(self, connection: Any) -> None:
        """Start again on a new connection (a ``consume`` still waiting keeps waiting)."""
        self.io_start(connection, self._started or self._restarted)

    def io_cancel(self, future: Future[None]) -> None:
        """basic.cancel, then end the iteration once the broker confirmed it."""
        self.cancelled = True
        channel = self.channel

        def cancelled(_frame: Any = None) -> None:
            self.io_end()
            self._core.consumer_ended(self, by_broker=False)
            future.set_result(None)

        if channel is None or not channel.is_open:
            cancelled()
        else:
            self._cancel(channel, cancelled)

    def _cancel(self, channel: Any, cancelled: Callable[..., None]) -> None:
        """basic.cancel; on a stream, closing the channel instead.

        pika rejects a delivery that arrives between basic.cancel and its cancel-ok
        (with requeue, which is right for other queues), and RabbitMQ closes the whole
        connection (540) when a stream is sent a reject. A stream holds nothing for a
        channel to requeue, so there closing the channel is the cancel; what was
        delivered before it needs no ack.
        """
        if not self.on_stream:
            channel.basic_cancel(self.tag, callback=cancelled)
            return
        self.channel = None
        self.live_epoch = None
        self.unacked.clear()
        channel.close()
        cancelled()

    def io_end(self, error: TransportError | None = None) -> None:
        """No more deliveries: end the user's iteration (raising ``error`` to the user, if
        given) and forget the consumer."""
        if error is not None and self._error is None:
            self._error = error
        self.cancelled = True
        self._core.consumers.pop(self.tag, None)
        self._inbox.put(_END)
        self.io_after_settle()

    def io_after_settle(self) -> None:
        """Close a cancelled consumer's channel once nothing it delivered is unsettled."""
        channel = self.channel
        if self.cancelled and not self.unacked and channel is not None and channel.is_open:
            self.channel = None
            channel.close()

    def _finish_start(self, error: TransportError | None) -> None:
        started, self._started = self._started, None
        if started is not None:
            started(error)

    def _restarted(self, error: TransportError | None) -> None:
        if error is not None:
            log.error("amqp.consumer_lost", queue=self.queue, tag=self.tag, error=str(error))
            self.io_end(
                restore_error(
                    error, f"consuming queue {self.queue!r} could not resume after a reconnect"
                )
            )
        else:
            log.info("amqp.consumer_restored", queue=self.queue, tag=self.tag)

    @io_callback
    def _opened(self, channel: Any) -> None:
        if channel is not self._latest:
            return
        channel.add_on_cancel_callback(self._cancelled_by_broker)
        channel.basic_qos(
            prefetch_count=self.prefetch, callback=lambda _frame: self._qos_set(channel)
        )

    @io_callback
    def _qos_set(self, channel: Any) -> None:
        if channel is not self._latest or not channel.is_open:
            return
        channel.basic_consume(
            self._core.resolve(self.queue),
            partial(self._delivered, channel),
            exclusive=self.exclusive,
            consumer_tag=self.tag,
            arguments=self.arguments or None,
            callback=lambda _frame: self._consuming(channel),
        )

    @io_callback
    def _consuming(self, channel: Any) -> None:
        if channel is not self._latest:
            return
        self.channel = channel
        self.epoch += 1
        self.live_epoch = self.epoch
        self.unacked.clear()
        self._settle = partial(self._core.settle, self, self.epoch)
        self._settle_many = partial(self._core.settle_many, self, self.epoch)
        if self.cancelled:  # cancelled while (re)starting
            self._cancel(channel, lambda _frame=None: self.io_end())
        self._finish_start(None)

    @io_callback
    def _delivered(self, channel: Any, _ch: Any, method: Any, properties: Any, body: bytes) -> None:
        self.io_deliver(
            channel,
            method.delivery_tag,
            bool(method.redelivered),
            method.exchange,
            method.routing_key,
            properties_from_pika(properties),
            body,
        )

    @io_callback
    def io_deliver(
        self,
        channel: Any,
        tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        properties: Properties,
        body: bytes,
    ) -> None:
        """Queue a delivery of ``channel`` for the user (``pika_inbound`` reads most of
        them off the wire itself; pika hands over the rest through ``_delivered``)."""
        epoch = self.live_epoch
        settle = self._settle
        if channel is not self.channel or epoch is None or settle is None:
            return
        if not self.on_stream and properties.headers and "x-stream-offset" in properties.headers:
            self.on_stream = True
        self.unacked.add(tag)
        delivery = Delivery(
            Message(body, properties, exchange, routing_key),
            delivery_tag=tag,
            redelivered=redelivered,
            consumer_tag=self.tag,
            queue=self.queue,
            settle=settle,
            settle_many=self._settle_many,
        )
        self._inbox.put((epoch, delivery))

    @io_callback
    def _cancelled_by_broker(self, _frame: Any) -> None:
        log.warning("amqp.consumer_cancelled_by_broker", queue=self.queue, tag=self.tag)
        self.io_end()
        self._core.consumer_ended(self, by_broker=True)

    @io_callback
    def _closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._latest:
            return
        self.channel = None
        self.live_epoch = None
        self.unacked.clear()
        if self._core.closing:
            self._finish_start(TransportClosed("the transport was closed"))
            return
        if isinstance(reason, pika_errors.ChannelClosedByBroker):
            error = reply_error(reason.reply_code, reason.reply_text)
            if self._started is not None or self.cancelled:
                self._finish_start(error)  # first: a restart ends it with the error
                self.io_end()
                return
            # e.g. 406 for an unacked delivery held past the broker's consumer_timeout:
            # the broker requeued what this channel held; consume again on a new one.
            log.warning("amqp.consumer_channel_closed", queue=self.queue, error=str(error))
            connection = self._core.live_connection()
            if connection is not None:
                self.io_start(connection, self._restarted)
        # A dropped connection: the core restores the consumer after reconnecting.
