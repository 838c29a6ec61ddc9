"""Queue, exchange, consumer and session state inside the in-process broker.

These are plain data holders with the few operations that touch only one
entity (enqueue with overflow, expire the head, pick the next consumer). The
:class:`~logbus.broker.core.Broker` holds the lock and does everything that
spans entities: routing, dead-lettering, acks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from logbus.broker.priority import Levels
from logbus.message import Message
from logbus.routing import BindingTable, table_for

__all__ = [
    "ConsumerState",
    "Delivered",
    "Entry",
    "ExchangeState",
    "QueueState",
    "SessionState",
    "Unacked",
]


@dataclass(slots=True)
class Entry:
    """One message sitting in a queue, with what the broker needs to know about it."""

    message: Message
    expires_at: float | None = None
    redelivered: bool = False
    # Its place in the queue's order, given on first entry: a requeue puts it back there.
    seq: int = field(default=0, kw_only=True)
    # How many times it came back (quorum queues count them: ``x-delivery-count``).
    delivery_count: int = field(default=0, kw_only=True)

    @property
    def size(self) -> int:
        """Body size in bytes, as ``x-max-length-bytes`` counts it."""
        return len(self.message.body)


@dataclass(slots=True)  # not frozen: one is made per delivery, and frozen makes that 3x slower
class Delivered:
    """What a consumer is handed: the message and the envelope of this delivery."""

    message: Message
    consumer_tag: str
    delivery_tag: int
    redelivered: bool
    queue: str


@dataclass(slots=True)
class ConsumerState:
    """A consumer registered on a queue: where deliveries go and how many it may hold."""

    tag: str
    queue: str
    session_id: int
    prefetch: int
    deliver: Callable[[Delivered], None]
    on_cancel: Callable[[str], None] | None = None
    exclusive: bool = False
    unacked: int = 0
    # Out of its queue's service line until it has room again (then it rejoins at the back).
    blocked: bool = False

    @property
    def has_capacity(self) -> bool:
        """Whether the consumer may receive another message under its prefetch."""
        return self.prefetch == 0 or self.unacked < self.prefetch


@dataclass(slots=True)
class Unacked:
    """A delivery its session has not settled yet, and where it came from."""

    entry: Entry
    queue: str
    consumer_tag: str | None


@dataclass(slots=True)
class SessionState:
    """What a session owns: its delivery tags, unacked deliveries and consumers."""

    id: int
    name: str
    next_tag: Callable[[], int]
    unacked: dict[int, Unacked] = field(default_factory=dict)
    consumers: dict[str, ConsumerState] = field(default_factory=dict)
    open: bool = True
    # Tags of gets returned when a refused basic.get closed their channel: settling one
    # later does nothing, as on the AMQP transports (whose channel is a new one by then).
    stale: set[int] = field(default_factory=set)


def consumer_tag(session: int, number: int) -> str:
    """The tag of a session's consumer, the broker's ``number``-th."""
    return f"ctag-{session}.{number}"


def opened(tag: str) -> int:
    """Where a consumer tag comes in the order consumers were made."""
    return int(tag.rpartition(".")[2])


@dataclass(slots=True)
class ExchangeState:
    """A declared exchange and its binding table."""

    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]
    table: BindingTable[tuple[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.table = table_for(self.type)


@dataclass(slots=True)
class QueueState:
    """A declared queue: ready messages, consumers in round-robin order, and its limits."""

    name: str
    durable: bool
    exclusive_owner: int | None
    auto_delete: bool
    arguments: dict[str, Any]
    ready: deque[Entry] | Levels = field(default_factory=deque)
    consumers: deque[ConsumerState] = field(default_factory=deque)  # in order of arrival
    service: deque[ConsumerState] = field(default_factory=deque)  # who is served next
    ready_bytes: int = 0
    had_consumer: bool = False
    next_seq: int = 1
    # A quorum queue serves returned messages first, in the order they came back.
    returns: int = 0
    quorum: bool = field(init=False)
    message_ttl: int | None = field(init=False)
    max_length: int | None = field(init=False)
    max_length_bytes: int | None = field(init=False)
    overflow: str = field(init=False)
    dead_letter_exchange: str | None = field(init=False)
    dead_letter_routing_key: str | None = field(init=False)
    bounded: bool = field(init=False)
    single_active: bool = field(init=False)
    delivery_limit: int | None = field(init=False)
    # x-expires: milliseconds unused before the queue goes, and when it was last used.
    expires: int | None = field(init=False)
    last_used: float = field(init=False)
    # A priority queue's TTL timer: when RabbitMQ's drop_expired_msgs next runs by itself.
    prioritised: bool = field(init=False, default=False)
    timer_at: float | None = field(init=False, default=None)

    @property
    def exclusive(self) -> bool:
        """Whether the queue belongs to one session only."""
        return self.exclusive_owner is not None

    def __post_init__(self) -> None:
        # Parsed once: these are read on every publish.
        args = self.arguments
        self.quorum = args.get("x-queue-type") == "quorum"
        self.message_ttl = _int_arg(args, "x-message-ttl")
        self.max_length = _int_arg(args, "x-max-length")
        self.max_length_bytes = _int_arg(args, "x-max-length-bytes")
        self.bounded = self.max_length is not None or self.max_length_bytes is not None
        self.overflow = str(args.get("x-overflow", "drop-head"))
        dlx = args.get("x-dead-letter-exchange")
        self.dead_letter_exchange = None if dlx is None else str(dlx)
        dlk = args.get("x-dead-letter-routing-key")
        self.dead_letter_routing_key = None if dlk is None else str(dlk)
        self.single_active = args.get("x-single-active-consumer") is True
        limit = args.get("x-delivery-limit")
        self.delivery_limit = limit if self.quorum and type(limit) is int else None
        self.expires = _int_arg(args, "x-expires")
        self.last_used = monotonic()
        max_priority = args.get("x-max-priority")
        if type(max_priority) is int and not self.quorum:
            self.ready = Levels(max_priority)
            self.prioritised = True

    def expiry_for(self, message: Message, now: float) -> float | None:
        """When a message entering now expires: the smaller of queue and message TTLs."""
        ttl = self.message_ttl
        if message.properties.expiration is not None:
            own = _message_ttl(message)
            if own is not None:
                ttl = own if ttl is None else min(ttl, own)
        return None if ttl is None else now + ttl / 1000.0

    def would_overflow(self, entry: Entry) -> bool:
        """Whether ``reject-publish`` refuses ``entry`` (RabbitMQ's ``will_overflow``).

        A classic queue refuses what would take it past a bound; a quorum queue only
        refuses once it is already past one, so it takes one message more.
        """
        max_len, max_bytes = self.max_length, self.max_length_bytes
        if self.quorum:
            return (max_len is not None and len(self.ready) > max_len) or (
                max_bytes is not None and self.ready_bytes > max_bytes
            )
        if max_len is not None and len(self.ready) >= max_len:
            return True
        return max_bytes is not None and self.ready_bytes + entry.size > max_bytes

    def over_limit(self) -> bool:
        """Whether the ready messages pass ``x-max-length`` or ``x-max-length-bytes``."""
        max_len, max_bytes = self.max_length, self.max_length_bytes
        return (max_len is not None and len(self.ready) > max_len) or (
            max_bytes is not None and self.ready_bytes > max_bytes
        )

    def push(self, entry: Entry) -> None:
        """Append a message at the tail."""
        if not entry.seq:
            entry.seq = self.next_seq
            self.next_seq += 1
        self.ready.append(entry)
        self.ready_bytes += entry.size  # a paged entry knows it without reading its message

    def put_back(self, entry: Entry, *, returned: bool = False) -> None:
        """Requeue a message where RabbitMQ 3.10 puts it back.

        A classic queue restores its original position (by ``seq``). A quorum queue
        puts a nacked or rejected message at the tail, and serves messages returned
        by a closed channel first, in the order they came back; with a delivery limit
        nacked and rejected messages are served first too.
        """
        ready = self.ready
        if isinstance(ready, Levels):
            ready.put_back(entry)
        elif self.quorum:
            # Without x-delivery-limit, 3.10 sends a nacked message to the back (a poison
            # message cannot starve the queue); with one, the limit does that job.
            if returned or self.delivery_limit is not None:
                ready.insert(self.returns, entry)
                self.returns += 1
            else:
                ready.append(entry)
        else:
            index = 0
            for index, other in enumerate(ready):  # noqa: B007 - requeues land near the head
                if other.seq > entry.seq:
                    break
            else:
                index = len(ready)
            ready.insert(index, entry)
        self.ready_bytes += entry.size

    def pop(self) -> Entry:
        """Take the message at the head."""
        entry = self.ready.popleft()
        if self.returns:
            self.returns -= 1
        self.ready_bytes -= entry.size
        return entry

    def clear(self) -> None:
        """Drop every ready message (``queue.purge``)."""
        self.ready.clear()
        self.ready_bytes = self.returns = 0

    def head_expired(self, now: float | None = None) -> bool:
        """Whether the head message's TTL has run out (RabbitMQ expires from the head only)."""
        if not self.ready:
            return False
        expires_at = self.ready[0].expires_at
        if expires_at is None:
            return False
        return expires_at <= (monotonic() if now is None else now)

    def next_consumer(self) -> ConsumerState | None:
        """The next consumer in round-robin order with room under its prefetch.

        As RabbitMQ: consumers are served from a line, each going to its back after a
        delivery; one without room leaves the line (a quorum queue's as soon as its
        prefetch is spent, a classic one's when it is next tried) and rejoins at the
        back when a settlement gives it room (:meth:`unblock`).

        With ``x-single-active-consumer`` only the earliest registered one is served.
        """
        if self.single_active:
            active = self.consumers[0] if self.consumers else None
            return active if active is not None and active.has_capacity else None
        service = self.service
        while service:
            consumer = service.popleft()
            if not consumer.has_capacity:  # a classic queue notices on trying it
                consumer.blocked = True
                continue
            prefetch = consumer.prefetch
            if self.quorum and prefetch and consumer.unacked + 1 >= prefetch:
                consumer.blocked = True  # rabbit_fifo: out of the line once its credit is spent
            else:
                service.append(consumer)
            return consumer
        return None

    def add_consumer(self, consumer: ConsumerState) -> None:
        """A new consumer joins at the back of the line."""
        self.consumers.append(consumer)
        self.service.append(consumer)

    def remove_consumer(self, consumer: ConsumerState) -> None:
        """A consumer leaves (cancelled, or its session closed)."""
        self.consumers.remove(consumer)
        if not consumer.blocked:
            self.service.remove(consumer)

    def unblock(self, consumer: ConsumerState) -> None:
        """A blocked consumer has room again: back of the line (RabbitMQ's ``unblock``)."""
        if consumer.blocked and consumer.has_capacity:
            consumer.blocked = False
            self.service.append(consumer)


def _int_arg(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    return None if value is None else int(value)


def _message_ttl(message: Message) -> int | None:
    expiration = message.properties.expiration
    if expiration is None:
        return None
    return int(expiration) if valid_expiration(expiration) else None


def valid_expiration(expiration: str) -> bool:
    """Whether RabbitMQ takes a per-message ``expiration``: decimal digits only."""
    return expiration.isascii() and expiration.isdigit()


def monotonic() -> float:
    """The broker's clock (a function so tests could substitute it)."""
    return time.monotonic()
