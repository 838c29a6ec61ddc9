"""``memory://`` — the in-process broker, driven by threads and ``queue.Queue``.

Every thread of a process can publish and consume through the same named
broker (``memory://`` is the process's default one, ``memory://name`` another);
each :class:`MemoryTransport` is one session, so closing it requeues what it
had not acknowledged, as a dropped AMQP connection would.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Self

from logbus import broker as _broker
from logbus._urls import parse_url
from logbus.broker import Broker, Delivered, PublishOutcome, Session, open_session
from logbus.errors import ConfigError, NotConfirmed, TransportClosed, Unroutable
from logbus.message import Message, QueueInfo
from logbus.transports.base import DEFAULT_PREFETCH, Delivery, Settlement

__all__ = ["MemoryConsumer", "MemoryTransport", "SessionTransport"]

_CANCELLED = object()


def broker_name(url: str) -> str:
    """The broker name in ``memory://name`` (empty for the default broker)."""
    parts = parse_url(url)
    if parts.scheme != "memory":
        raise ConfigError(f"not a memory:// URL: {url!r}")
    return (parts.netloc + parts.path).strip("/")


def raise_for_outcome(outcome: PublishOutcome, message: Message, count: int = 1) -> None:
    """Turn a publish outcome into the error a confirmed AMQP publish would report."""
    if outcome is PublishOutcome.UNROUTABLE:
        raise Unroutable(
            f"no queue is bound to exchange {message.exchange!r} for key "
            f"{message.routing_key!r}: the record was returned (bind a queue, or check the key)",
            exchange=message.exchange,
            routing_key=message.routing_key,
            unconfirmed=count,
        )
    if outcome is PublishOutcome.REJECTED:
        raise NotConfirmed(
            f"a queue routed from exchange {message.exchange!r} is full and rejected the record "
            "(start a worker, or raise the queue's x-max-length)",
            unconfirmed=count,
        )


class MemoryConsumer:
    """Deliveries of one queue, handed over through a ``queue.SimpleQueue``.

    Settlements are pipelined the way AMQP's are on a socket: an ack is queued
    without taking the broker's lock and applied by the broker's next operation
    (and at once whenever a consumer is blocked waiting), so anything that looks
    at the broker afterwards sees it applied.
    """

    def __init__(
        self,
        session: Session,
        queue_name: str,
        prefetch: int,
        exclusive: bool,
        arguments: Mapping[str, Any] | None = None,
    ):
        self.queue = queue_name
        self._session = session
        self._inbox: queue.SimpleQueue[Delivered | object] = queue.SimpleQueue()
        self._cancelled = False
        # Bound once: settle_many groups deliveries by their settler.
        self._settler = self._settle
        self._batch_settler = self._settle_many
        self.tag = session.consume(
            queue_name,
            self._inbox.put,
            prefetch=prefetch,
            on_cancel=lambda _tag: self._inbox.put(_CANCELLED),
            exclusive=exclusive,
            arguments=arguments,
        )

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once cancelled."""
        if self._cancelled:
            return None
        try:
            item = self._inbox.get_nowait()
        except queue.Empty:
            try:
                with self._session.waiting():
                    item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                return None
        if item is _CANCELLED:
            self._cancelled = True
            return None
        assert isinstance(item, Delivered)
        return self._delivery(item)

    def get_many(self, limit: int, timeout: float | None = None) -> list[Delivery]:
        """Up to ``limit`` deliveries: the first within ``timeout`` seconds, then those
        already delivered; empty after the timeout or once cancelled."""
        first = self.get(timeout)
        if first is None:
            return []
        batch = [first]
        while len(batch) < limit:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is _CANCELLED:
                self._cancelled = True
                break
            assert isinstance(item, Delivered)
            batch.append(self._delivery(item))
        return batch

    def _delivery(self, item: Delivered) -> Delivery:
        return Delivery(
            item.message,
            delivery_tag=item.delivery_tag,
            redelivered=item.redelivered,
            consumer_tag=item.consumer_tag,
            queue=item.queue,
            settle=self._settler,
            settle_many=self._batch_settler,
        )

    def _settle(self, how: Settlement, tag: int, multiple: bool, requeue: bool) -> None:
        requeue_or_ack = None if how is Settlement.ACK else requeue
        self._session.settle_later(tag, multiple=multiple, requeue=requeue_or_ack)

    def _settle_many(self, how: Settlement, tags: Sequence[int], requeue: bool) -> None:
        requeue_or_ack = None if how is Settlement.ACK else requeue
        for tag in tags:
            self._session.settle_later(tag, multiple=False, requeue=requeue_or_ack)

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    @property
    def ended(self) -> bool:
        """Whether a get has seen the end: it returns None at once from now on."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop receiving; the iterator ends once what was delivered has been read."""
        if not self._cancelled and self._session.is_open:
            self._session.cancel(self.tag)
            self._inbox.put(_CANCELLED)


class SessionTransport:
    """One session on an in-process :class:`~logbus.broker.Broker`, as a transport.

    Everything but consuming is the same whatever drives the broker (threads,
    greenlets); subclasses supply ``consume`` with their own kind of consumer.
    """

    def __init__(self, url: str, broker: Broker) -> None:
        self.url = url
        self.broker = broker
        self._session = open_session(broker, url)

    def _open(self) -> Session:
        if not self._session.is_open:
            raise TransportClosed(f"transport {self.url} is closed; create a new one")
        return self._session

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
        """Declare an exchange on the in-process broker."""
        self._open().declare_exchange(
            name,
            type,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
            passive=passive,
        )

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and its bindings."""
        self._open().delete_exchange(name, if_unused=if_unused)

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
        """Declare a queue on the in-process broker."""
        return self._open().declare_queue(
            name,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
            passive=passive,
        )

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        return self._open().delete_queue(name, if_unused=if_unused, if_empty=if_empty)

    def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages."""
        return self._open().purge_queue(name)

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        self._open().bind_queue(queue, exchange, routing_key, arguments)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        self._open().unbind_queue(queue, exchange, routing_key, arguments)

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another."""
        self._open().bind_exchange(destination, source, routing_key, arguments)

    def publish(self, message: Message, *, mandatory: bool = True) -> None:
        """Publish; the in-process broker confirms synchronously."""
        raise_for_outcome(self._open().publish(message, mandatory=mandatory), message)

    def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish every message; report the first failure with the count that failed."""
        session = self._open()
        failed = 0
        first: tuple[PublishOutcome, Message] | None = None
        for message in messages:
            outcome = session.publish(message, mandatory=mandatory)
            if outcome is not PublishOutcome.ROUTED:
                failed += 1
                first = first or (outcome, message)
        if first is not None:
            raise_for_outcome(first[0], first[1], failed)

    def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue, or None when it is empty."""
        session = self._open()
        item = session.get(queue, auto_ack=auto_ack)
        if item is None:
            return None
        delivery = Delivery(
            item.message,
            delivery_tag=item.delivery_tag,
            redelivered=item.redelivered,
            consumer_tag="",
            queue=queue,
            settle=lambda how, tag, multiple, requeue: _settle(
                session, how, tag, multiple, requeue
            ),
        )
        if auto_ack:
            delivery.settled = Settlement.ACK
        return delivery

    def close(self) -> None:
        """Close the session: unacked deliveries are requeued, exclusive queues deleted."""
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MemoryTransport(SessionTransport):
    """A session on a process-wide in-process broker; safe to share between threads."""

    def __init__(self, url: str = "memory://", **_options: Any) -> None:
        super().__init__(url, _broker.named(broker_name(url)))

    def consume(
        self,
        queue: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> MemoryConsumer:
        """Start consuming with manual acks and at most ``prefetch`` unacked deliveries."""
        return MemoryConsumer(self._open(), queue, prefetch, exclusive, arguments)


def _settle(session: Session, how: Settlement, tag: int, multiple: bool, requeue: bool) -> None:
    if how is Settlement.ACK:
        session.ack(tag, multiple=multiple)
    elif how is Settlement.NACK:
        session.nack(tag, multiple=multiple, requeue=requeue)
    else:
        session.reject(tag, requeue=requeue)
