"""What every transport promises: the :class:`Transport` Protocol, consumers, deliveries.

A transport moves bytes between this process and a broker — RabbitMQ through
AMQP, or logbus's in-process broker. It speaks AMQP 0-9-1's model (exchanges,
queues, bindings, confirms, acks) and nothing more; records, topology files and
retries live above it. Every method raises :mod:`logbus.errors` exceptions,
never a driver's.

Publishing is always confirmed: ``publish`` returns once the broker took the
message, and raises :class:`~logbus.errors.Unroutable` for a mandatory
message no queue took, :class:`~logbus.errors.NotConfirmed` when the broker
refused it.

What a transport can be used *with* beyond the Protocol is declared, not
guessed from its URL scheme: each transport class may set ``capabilities`` (a
:class:`Capabilities`), and :func:`capabilities_of` reads it (the default
otherwise).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from logbus.errors import PreconditionFailed
from logbus.message import Message, Properties, QueueInfo

__all__ = [
    "DEFAULT_PREFETCH",
    "AsyncConsumer",
    "AsyncTransport",
    "BatchSettler",
    "Capabilities",
    "Consumer",
    "Delivery",
    "QueueInfo",
    "Settlement",
    "Transport",
    "capabilities_of",
    "get_many",
    "settle_many",
]

#: Unacked deliveries a consumer may hold; high enough to keep a pipe full,
#: low enough that competing consumers still share the work fairly.
DEFAULT_PREFETCH = 100


@dataclass(frozen=True)
class Capabilities:
    """What a transport class can be used with; set as its ``capabilities`` class attribute.

    ``cooperative``: its I/O yields to other greenlets in a gevent-patched
    process. multiprocessing's connections (``local://``, ``process://``) do
    not, so the gevent pool refuses a transport that says ``False``.
    """

    cooperative: bool = True


def capabilities_of(transport_class: type) -> Capabilities:
    """The :class:`Capabilities` a transport class declares (the default if it declares none)."""
    declared = getattr(transport_class, "capabilities", None)
    return declared if isinstance(declared, Capabilities) else Capabilities()


class Settlement(Enum):
    """How a delivery was settled."""

    ACK = "ack"
    NACK = "nack"
    REJECT = "reject"


#: Called by :class:`Delivery` to tell the transport: (how, delivery_tag, multiple, requeue).
Settler = Callable[[Settlement, int, bool, bool], None]
#: Called by :func:`settle_many` to tell the transport of several deliveries of one
#: consumer at once: (how, delivery tags, requeue). The transport may fold them into
#: fewer frames (one ``basic.ack`` with ``multiple``), as long as exactly those are settled.
BatchSettler = Callable[[Settlement, Sequence[int], bool], None]


class Delivery:
    """One message handed to a consumer, to be acked, nacked or rejected exactly once."""

    __slots__ = (
        "_lock",
        "_settle",
        "_settle_many",
        "consumer_tag",
        "delivery_tag",
        "message",
        "queue",
        "redelivered",
        "settled",
    )

    def __init__(
        self,
        message: Message,
        *,
        delivery_tag: int,
        redelivered: bool,
        consumer_tag: str,
        queue: str,
        settle: Settler,
        settle_many: BatchSettler | None = None,
    ) -> None:
        self.message = message
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.consumer_tag = consumer_tag
        self.queue = queue
        self.settled: Settlement | None = None
        self._settle = settle
        # The same for every delivery of one consumer (and channel): settle_many groups by it.
        self._settle_many = settle_many

    @property
    def body(self) -> bytes:
        """The message body."""
        return self.message.body

    @property
    def properties(self) -> Properties:
        """The message's AMQP properties."""
        return self.message.properties

    @property
    def routing_key(self) -> str:
        """The routing key the message was published with."""
        return self.message.routing_key

    @property
    def exchange(self) -> str:
        """The exchange the message was published to."""
        return self.message.exchange

    def ack(self, *, multiple: bool = False) -> None:
        """Acknowledge: the broker forgets the message (and, with ``multiple``, earlier ones)."""
        self._done(Settlement.ACK, multiple=multiple, requeue=False)

    def nack(self, *, requeue: bool = True, multiple: bool = False) -> None:
        """Negatively acknowledge: requeue it, or dead-letter (or drop) it."""
        self._done(Settlement.NACK, multiple=multiple, requeue=requeue)

    def reject(self, *, requeue: bool = True) -> None:
        """Reject this one delivery: requeue it, or dead-letter (or drop) it."""
        self._done(Settlement.REJECT, multiple=False, requeue=requeue)

    def _done(self, how: Settlement, *, multiple: bool, requeue: bool) -> None:
        # One thread settles a delivery; no lock, as this is on every message's path.
        if self.settled is not None:
            raise PreconditionFailed(
                f"delivery {self.delivery_tag} was already settled ({self.settled.value}); "
                "settle each delivery once"
            )
        self.settled = how
        self._settle(how, self.delivery_tag, multiple, requeue)

    def __repr__(self) -> str:
        return (
            f"<Delivery tag={self.delivery_tag} queue={self.queue!r} "
            f"key={self.routing_key!r} redelivered={self.redelivered}>"
        )


def settle_many(
    deliveries: Sequence[Delivery], how: Settlement = Settlement.ACK, *, requeue: bool = False
) -> None:
    """Settle each of ``deliveries`` once, as ``how``: as ``ack()``, ``nack(requeue=...)``
    or ``reject(requeue=...)`` on each would, in as few calls into the transport as it allows.

    A transport that settles many deliveries of a consumer at once (the ``amqp://``
    one folds them into as few ``basic.ack`` frames as say exactly the same) gets one
    call per consumer; the others (and deliveries of a subclass of :class:`Delivery`)
    are settled one by one through their own ``ack``, ``nack`` or ``reject``. If any
    of ``deliveries`` was settled already (or is given twice), raises
    ``PreconditionFailed`` and settles none.
    """
    if len({id(delivery) for delivery in deliveries}) != len(deliveries):
        raise PreconditionFailed("a delivery was given twice; settle each delivery once")
    for delivery in deliveries:
        if delivery.settled is not None:
            raise PreconditionFailed(
                f"delivery {delivery.delivery_tag} was already settled "
                f"({delivery.settled.value}); settle each delivery once"
            )
    groups: dict[int, tuple[BatchSettler, list[int]]] = {}
    for delivery in deliveries:
        many = delivery._settle_many
        if many is None or type(delivery) is not Delivery:  # a subclass settles its own way
            if how is Settlement.ACK:
                delivery.ack()
            elif how is Settlement.NACK:
                delivery.nack(requeue=requeue)
            else:
                delivery.reject(requeue=requeue)
            continue
        delivery.settled = how
        group = groups.get(id(many))
        if group is None:
            groups[id(many)] = (many, [delivery.delivery_tag])
        else:
            group[1].append(delivery.delivery_tag)
    for many, tags in groups.values():
        many(how, tags, requeue)


@runtime_checkable
class Consumer(Protocol):
    """A running consumer of one queue; iterate it, or pull with :meth:`get`."""

    queue: str
    tag: str

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, waiting up to ``timeout`` seconds (None: forever)."""
        ...

    def __iter__(self) -> Iterator[Delivery]:
        """Deliveries until the consumer is cancelled."""
        ...

    @property
    def ended(self) -> bool:
        """Whether :meth:`get` saw the end (cancelled, or the transport closed): its None
        is then not a wait that timed out, and it returns None at once from now on."""
        ...

    def cancel(self) -> None:
        """Stop receiving; deliveries already received can still be settled."""
        ...


def get_many(consumer: Consumer, limit: int, timeout: float | None = None) -> list[Delivery]:
    """Up to ``limit`` deliveries: waits up to ``timeout`` seconds (None: forever) for the
    first, then takes only those already there. Empty after the timeout or once cancelled.

    A consumer whose class has a ``get_many(limit, timeout)`` (``amqp://``,
    ``memory://``) hands them over in one go; any other is asked ``get``
    repeatedly — so is a wrapper that passes other attributes through to such a
    consumer but has a ``get`` of its own.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    own = getattr(type(consumer), "get_many", None)
    if own is not None:
        batch: list[Delivery] = own(consumer, limit, timeout)
        return batch
    first = consumer.get(timeout)
    if first is None:
        return []
    batch = [first]
    while len(batch) < limit and (more := consumer.get(timeout=0)) is not None:
        batch.append(more)
    return batch


@runtime_checkable
class Transport(Protocol):
    """A connection to one broker, speaking AMQP 0-9-1's model; one per thread of use."""

    url: str

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
        ...

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and its bindings."""
        ...

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
        """Declare a queue (an empty name gets a server-generated one)."""
        ...

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        ...

    def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages; returns how many."""
        ...

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        ...

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        ...

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another: messages routed by ``source`` flow into ``destination``."""
        ...

    def publish(self, message: Message, *, mandatory: bool = True) -> None:
        """Publish one message and wait for the broker's confirm."""
        ...

    def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish many messages with pipelined confirms; raise if any was not confirmed."""
        ...

    def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue (``basic.get``), or None when it is empty."""
        ...

    def consume(
        self,
        queue: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Consumer:
        """Start consuming a queue with manual acks and ``prefetch`` unacked at most;
        ``arguments`` are basic.consume's (``x-stream-offset`` on a stream)."""
        ...

    def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        ...

    def __enter__(self) -> Transport: ...

    def __exit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class AsyncConsumer(Protocol):
    """:class:`Consumer`'s async twin: ``await get()``, ``async for``, ``ended``, ``await
    cancel()``, each as its sync namesake."""

    queue: str
    tag: str

    async def get(self, timeout: float | None = None) -> Delivery | None: ...

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    @property
    def ended(self) -> bool: ...

    async def cancel(self) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    """:class:`Transport`'s async twin: the same methods, each a coroutine.

    Deliveries are the same :class:`Delivery` objects; their ``ack``/``nack``/
    ``reject`` stay plain methods, which an async transport makes safe to call
    on its event loop's thread without blocking it.
    """

    url: str

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
        ...

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and its bindings."""
        ...

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
        """Declare a queue (an empty name gets a generated one)."""
        ...

    async def delete_queue(
        self, name: str, *, if_unused: bool = False, if_empty: bool = False
    ) -> int:
        """Delete a queue; returns how many messages it held."""
        ...

    async def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages; returns how many."""
        ...

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        ...

    async def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        ...

    async def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another: messages routed by ``source`` flow into ``destination``."""
        ...

    async def publish(self, message: Message, *, mandatory: bool = True) -> None:
        """Publish one message and wait for the broker's confirm."""
        ...

    async def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish many messages with pipelined confirms; raise if any was not confirmed."""
        ...

    async def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue (``basic.get``), or None when it is empty."""
        ...

    async def consume(
        self,
        queue: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> AsyncConsumer:
        """Start consuming a queue with manual acks and ``prefetch`` unacked at most;
        ``arguments`` are basic.consume's (``x-stream-offset`` on a stream)."""
        ...

    async def close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues."""
        ...

    async def __aenter__(self) -> AsyncTransport: ...

    async def __aexit__(self, *exc_info: object) -> None: ...
