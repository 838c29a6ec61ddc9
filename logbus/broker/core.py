"""The in-process broker: RabbitMQ's exchange/queue/binding model behind one lock.

A :class:`Broker` owns exchanges, queues and bindings; clients talk to it
through a :class:`Session` (what AMQP calls a connection with one channel).
Sessions own their delivery tags, their unacked messages and their exclusive
queues; closing a session requeues what it had not acknowledged, exactly as
RabbitMQ does when a connection drops.

The broker never blocks and never calls out while doing I/O: a consumer's
``deliver`` callback is called under the lock and must only hand the delivery
on (``queue.Queue.put_nowait``, a pipe send). Routing decisions come from
:mod:`logbus.routing`; nothing here matches keys itself.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from logbus.broker.journal import BindingRecord, Journal, JournaledEntry, JournaledQueue
from logbus.broker.queues import (
    ConsumerState,
    Delivered,
    Entry,
    ExchangeState,
    QueueState,
    monotonic,
)
from logbus.errors import (
    AccessRefused,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
    TransportClosed,
)
from logbus.message import Message, QueueInfo

__all__ = ["Broker", "PublishOutcome", "QueueInfo", "Session"]

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
_QUEUE = "queue"
_EXCHANGE = "exchange"


class PublishOutcome(Enum):
    """What became of a publish, as the publisher's confirm and return would say."""

    ROUTED = "routed"
    UNROUTABLE = "unroutable"  # mandatory and no queue: returned, then confirmed
    REJECTED = "rejected"  # a queue at its bound refused it: negatively confirmed


@dataclass(slots=True)
class _Unacked:
    entry: Entry
    queue: str
    consumer_tag: str | None


@dataclass(slots=True)
class _SessionState:
    id: int
    name: str
    next_tag: Callable[[], int]
    unacked: dict[int, _Unacked] = field(default_factory=dict)
    consumers: dict[str, ConsumerState] = field(default_factory=dict)
    open: bool = True


class Broker:
    """An in-process AMQP 0-9-1 broker with RabbitMQ's semantics; thread-safe.

    With a ``journal``, durable exchanges, durable queues, their bindings and
    their persistent messages are rebuilt from it at once and kept in it from
    then on (see :mod:`logbus.broker.journal`); every recovered message comes
    back marked redelivered, since the journal cannot tell which had been delivered.
    """

    def __init__(self, name: str = "", *, journal: Journal | None = None) -> None:
        self.name = name
        self._journal = journal
        self._lock = threading.RLock()
        self._guard = _Guard(self)
        # Settlements pipelined like acks on a socket: queued without the lock, applied
        # by the next operation that takes it, so every observer sees them applied.
        self._mailbox: deque[tuple[_SessionState, int, bool, bool | None]] = deque()
        self._waiters: set[int] = set()
        # Routing decisions of header-less messages; cleared whenever bindings change.
        self._route_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._exchanges: dict[str, ExchangeState] = {}
        self._queues: dict[str, QueueState] = {}
        self._sessions: dict[int, _SessionState] = {}
        self._session_ids = itertools.count(1)
        self._consumer_ids = itertools.count(1)
        self._expiry = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None
        self._closed = False
        for exchange_type in EXCHANGE_TYPES:  # RabbitMQ's pre-declared amq.* exchanges
            self._exchanges[f"amq.{exchange_type}"] = ExchangeState(
                f"amq.{exchange_type}", exchange_type, True, False, False, {}
            )
        if journal is not None:
            self._recover(journal)

    def _recover(self, journal: Journal) -> None:
        """Rebuild durable state from the journal; hooks stay silent, nothing here is new."""
        recovery = journal.attach()
        wall, now = time.time(), monotonic()
        with self._lock:
            for exchange in recovery.exchanges:
                self._exchanges[exchange.name] = ExchangeState(
                    exchange.name,
                    exchange.type,
                    True,
                    exchange.auto_delete,
                    exchange.internal,
                    dict(exchange.arguments),
                )
            expiring = False
            for record in recovery.queues:
                queue = JournaledQueue(
                    journal, record.name, record.auto_delete, dict(record.arguments)
                )
                self._queues[record.name] = queue
                for stored in record.messages:
                    at = None if stored.expires is None else now + (stored.expires - wall)
                    queue.push(JournaledEntry(stored.message, at, True, stored.id))
                    expiring = expiring or at is not None
            for binding in recovery.bindings:
                source = self._exchanges.get(binding.source)
                targets = self._queues if binding.kind == _QUEUE else self._exchanges
                if source is not None and binding.destination in targets:
                    destination = (binding.kind, binding.destination)
                    source.table.add(binding.routing_key, binding.arguments, destination)
            if expiring:
                self._schedule_expiry()

    # -- sessions --------------------------------------------------------------

    def session(self, name: str = "") -> Session:
        """Open a session (a connection with one channel) on this broker."""
        with self._guard:
            counter = itertools.count(1)
            state = _SessionState(next(self._session_ids), name, lambda: next(counter))
            self._sessions[state.id] = state
            return Session(self, state)

    def close(self) -> None:
        """Stop the expiry thread and close the journal; open sessions keep their state."""
        with self._guard:
            self._closed = True
            self._expiry.notify_all()
        if self._journal is not None:
            self._journal.close()

    def _close_session(self, state: _SessionState) -> None:
        with self._guard:
            if not state.open:
                return
            state.open = False
            for tag in list(state.consumers):
                self._cancel(state, tag)
            touched = self._requeue(state, sorted(state.unacked))
            for name in [q.name for q in self._queues.values() if q.exclusive_owner == state.id]:
                self._delete_queue(name)
            self._sessions.pop(state.id, None)
            self._dispatch_all(touched)

    # -- exchanges -------------------------------------------------------------

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
        """Declare an exchange, or check an existing one is declared the same way."""
        args = dict(arguments or {})
        with self._guard:
            existing = self._exchanges.get(name)
            if passive:
                if existing is None:
                    raise NotFound(f"NOT_FOUND - no exchange '{name}' in vhost '/'")
                return
            if name == "":
                raise AccessRefused(
                    "ACCESS_REFUSED - operation not permitted on the default exchange"
                )
            if name.startswith("amq."):
                raise AccessRefused(
                    f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"
                )
            if type not in EXCHANGE_TYPES:
                raise PreconditionFailed(
                    f"COMMAND_INVALID - unknown exchange type '{type}' for exchange '{name}'"
                )
            if existing is None:
                self._route_cache.clear()
                exchange = ExchangeState(name, type, durable, auto_delete, internal, args)
                if self._journal is not None and durable:
                    self._journal.exchange_declared(exchange)
                self._exchanges[name] = exchange
                return
            for prop, have, want in (
                ("type", existing.type, type),
                ("durable", existing.durable, durable),
                ("auto_delete", existing.auto_delete, auto_delete),
                ("internal", existing.internal, internal),
                ("arguments", existing.arguments, args),
            ):
                if have != want:
                    raise _inequivalent(prop, "exchange", name, want, have)

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and every binding to or from it."""
        with self._guard:
            exchange = self._exchanges.get(name)
            if exchange is None:
                return  # RabbitMQ: deleting what does not exist succeeds
            if if_unused and len(exchange.table):
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use"
                )
            self._delete_exchange(name)

    def _delete_exchange(self, name: str) -> None:
        exchange = self._exchanges.pop(name, None)
        if self._journal is not None and exchange is not None and exchange.durable:
            self._journal.exchange_deleted(name)
        self._route_cache.clear()
        for other in list(self._exchanges.values()):
            if other.table.remove_destination((_EXCHANGE, name)):
                self._maybe_auto_delete_exchange(other)

    def _maybe_auto_delete_exchange(self, exchange: ExchangeState) -> None:
        if exchange.auto_delete and not len(exchange.table):
            self._delete_exchange(exchange.name)

    def _exchange(self, name: str) -> ExchangeState:
        exchange = self._exchanges.get(name)
        if exchange is None:
            raise NotFound(f"NOT_FOUND - no exchange '{name}' in vhost '/'")
        return exchange

    # -- queues ----------------------------------------------------------------

    def _declare_queue(
        self,
        session: _SessionState,
        name: str,
        *,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any] | None,
        passive: bool,
    ) -> QueueInfo:
        args = dict(arguments or {})
        with self._guard:
            if passive:
                queue = self._queue(name, session)
                return self._info(queue)
            if name == "":
                name = "amq.gen-" + secrets.token_urlsafe(16)
            elif name.startswith("amq."):
                raise AccessRefused(
                    f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"
                )
            _check_queue_arguments(name, args)
            if args.get("x-queue-type") == "quorum" and (not durable or exclusive or auto_delete):
                flag = "durable" if not durable else "exclusive" if exclusive else "auto_delete"
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - invalid property '{flag}' for queue '{name}' "
                    "in vhost '/': quorum queues must be durable, not exclusive, not auto-delete"
                )
            existing = self._queues.get(name)
            if existing is None:
                owner = session.id if exclusive else None
                if self._journal is not None and durable and not exclusive:
                    queue = JournaledQueue(self._journal, name, auto_delete, args)
                    self._journal.queue_declared(queue)
                else:
                    queue = QueueState(name, durable, owner, auto_delete, args)
                self._queues[name] = queue
                self._schedule_expiry()
                return QueueInfo(name, 0, 0)
            self._check_owner(existing, session)
            for prop, have, want in (
                ("durable", existing.durable, durable),
                ("exclusive", existing.exclusive, exclusive),
                ("auto_delete", existing.auto_delete, auto_delete),
            ):
                if have != want:
                    raise _inequivalent(prop, "queue", name, want, have)
            for key in sorted(set(existing.arguments) | set(args)):
                if existing.arguments.get(key) != args.get(key):
                    raise _inequivalent(
                        key, "queue", name, args.get(key), existing.arguments.get(key)
                    )
            return self._info(existing)

    def _queue(self, name: str, session: _SessionState | None = None) -> QueueState:
        queue = self._queues.get(name)
        if queue is None:
            raise NotFound(f"NOT_FOUND - no queue '{name}' in vhost '/'")
        if session is not None:
            self._check_owner(queue, session)
        return queue

    @staticmethod
    def _check_owner(queue: QueueState, session: _SessionState) -> None:
        if queue.exclusive_owner not in (None, session.id):
            raise ResourceLocked(
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
                f"'{queue.name}' in vhost '/'"
            )

    def _info(self, queue: QueueState) -> QueueInfo:
        return QueueInfo(queue.name, len(queue.ready), len(queue.consumers))

    def _delete_queue(self, name: str) -> int:
        queue = self._queues.pop(name)
        if self._journal is not None and isinstance(queue, JournaledQueue):
            self._journal.queue_deleted(name)
        self._route_cache.clear()
        for consumer in list(queue.consumers):
            state = self._sessions.get(consumer.session_id)
            if state is not None:
                state.consumers.pop(consumer.tag, None)
            if consumer.on_cancel is not None:
                consumer.on_cancel(consumer.tag)
        for state in self._sessions.values():  # unacked messages of a deleted queue are gone
            for tag in [t for t, u in state.unacked.items() if u.queue == name]:
                del state.unacked[tag]
        for exchange in list(self._exchanges.values()):
            if exchange.table.remove_destination((_QUEUE, name)):
                self._maybe_auto_delete_exchange(exchange)
        return len(queue.ready)

    def _cancel(self, state: _SessionState, tag: str) -> None:
        consumer = state.consumers.pop(tag, None)
        if consumer is None:
            return
        queue = self._queues.get(consumer.queue)
        if queue is None:
            return
        queue.consumers.remove(consumer)
        if queue.auto_delete and queue.had_consumer and not queue.consumers:
            self._delete_queue(queue.name)

    # -- bindings --------------------------------------------------------------

    def _bind(
        self,
        session: _SessionState,
        kind: str,
        destination: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None,
        *,
        unbind: bool = False,
    ) -> None:
        with self._guard:
            if source == "" or (destination == "" and kind == _EXCHANGE):
                raise AccessRefused(
                    "ACCESS_REFUSED - operation not permitted on the default exchange"
                )
            missing = source not in self._exchanges or destination not in self._queues
            if unbind and kind == _QUEUE and missing:
                return  # RabbitMQ: removing a binding that cannot exist succeeds
            exchange = self._exchange(source)
            target: QueueState | ExchangeState
            if kind == _QUEUE:
                target = self._queue(destination, session)
            else:
                target = self._exchange(destination)
            args = dict(arguments or {})
            self._route_cache.clear()
            if unbind:
                changed = exchange.table.remove(routing_key, args, (kind, destination))
            else:
                try:
                    changed = exchange.table.add(routing_key, args, (kind, destination))
                except (ValueError, TypeError) as exc:
                    raise PreconditionFailed(
                        f"PRECONDITION_FAILED - invalid binding arguments for exchange "
                        f"'{source}' in vhost '/': {exc}"
                    ) from None
            if changed and self._journal is not None and _durable_binding(exchange, target):
                binding = BindingRecord(source, kind, destination, routing_key, args)
                self._journal.binding_changed(binding, added=not unbind)
            if unbind:
                self._maybe_auto_delete_exchange(exchange)

    # -- publishing ------------------------------------------------------------

    def publish(self, message: Message, *, mandatory: bool = False) -> PublishOutcome:
        """Route a message to its queues, as a confirmed ``basic.publish`` would."""
        with self._lock:  # the hot path: _guard's work, inlined
            if self._mailbox:
                self._drain()
            if message.exchange:
                exchange = self._exchange(message.exchange)
                if exchange.internal:
                    raise AccessRefused(
                        f"ACCESS_REFUSED - cannot publish to internal exchange "
                        f"'{message.exchange}' in vhost '/'"
                    )
            names = self._route(message.exchange, message.routing_key, message)
            if names:
                rejected = False
                now = monotonic()
                for name in sorted(names) if len(names) > 1 else names:
                    if not self._enqueue(self._queues[name], message, now):
                        rejected = True
                outcome = PublishOutcome.REJECTED if rejected else PublishOutcome.ROUTED
            else:
                outcome = PublishOutcome.UNROUTABLE if mandatory else PublishOutcome.ROUTED
        if self._journal is not None:  # written (and fsynced, if so) before the confirm
            self._journal.commit()
        return outcome

    def _route(self, exchange_name: str, routing_key: str, message: Message) -> AbstractSet[str]:
        if exchange_name == "":
            return {routing_key} if routing_key in self._queues else set()
        headers = message.properties.headers
        if headers:  # a headers exchange may be on the path: no caching
            return self._route_uncached(exchange_name, routing_key, headers)
        cache_key = (exchange_name, routing_key)
        queues = self._route_cache.get(cache_key)
        if queues is None:
            if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
                self._route_cache.clear()
            queues = self._route_cache[cache_key] = frozenset(
                self._route_uncached(exchange_name, routing_key, headers)
            )
        return queues

    def _route_uncached(
        self, exchange_name: str, routing_key: str, headers: Mapping[str, Any]
    ) -> set[str]:
        queues: set[str] = set()
        seen: set[str] = set()
        pending = [exchange_name]
        while pending:  # exchange-to-exchange bindings, each exchange visited once
            name = pending.pop()
            if name in seen or name not in self._exchanges:
                continue
            seen.add(name)
            for kind, destination in self._exchanges[name].table.route(routing_key, headers):
                if kind == _QUEUE:
                    queues.add(destination)
                else:
                    pending.append(destination)
        return queues

    def _enqueue(self, queue: QueueState, message: Message, now: float) -> bool:
        """Add a message under the queue's overflow policy; False if it refused it."""
        entry = Entry(message, queue.expiry_for(message, now))
        if entry.expires_at is not None and entry.expires_at <= now and not queue.consumers:
            self._dead_letter(queue, entry, "expired")  # TTL 0 with nobody to take it
            return True
        while queue.is_full_for(entry):
            if queue.overflow.startswith("reject-publish"):
                if queue.overflow == "reject-publish-dlx":
                    self._dead_letter(queue, entry, "maxlen")
                return False
            if not queue.ready:
                self._dead_letter(queue, entry, "maxlen")  # bigger than the bound itself
                return True
            self._dead_letter(queue, queue.pop(), "maxlen")
        queue.push(entry)
        self._dispatch(queue)
        if entry.expires_at is not None:
            self._schedule_expiry()
        return True

    # -- dispatch, acks and dead letters ---------------------------------------

    def _dispatch(self, queue: QueueState) -> None:
        while queue.ready:
            if queue.head_expired():
                self._dead_letter(queue, queue.pop(), "expired")
                continue
            consumer = queue.next_consumer()
            if consumer is None:
                return
            entry = queue.pop()
            state = self._sessions[consumer.session_id]
            tag = state.next_tag()
            state.unacked[tag] = _Unacked(entry, queue.name, consumer.tag)
            consumer.unacked += 1
            consumer.deliver(
                Delivered(entry.message, consumer.tag, tag, entry.redelivered, queue.name)
            )

    def _settle(
        self, state: _SessionState, delivery_tag: int, multiple: bool, requeue: bool | None
    ) -> None:
        """Ack (``requeue is None``), or reject/nack with or without requeue."""
        with self._guard:
            touched: set[str] = set()
            if not self._settle_locked(state, delivery_tag, multiple, requeue, touched):
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - unknown delivery tag {delivery_tag}"
                )
            self._dispatch_all(touched)

    def _settle_later(
        self, state: _SessionState, delivery_tag: int, multiple: bool, requeue: bool | None
    ) -> None:
        """Queue a settlement for the next locked operation (applied now if anyone waits)."""
        self._mailbox.append((state, delivery_tag, multiple, requeue))
        if self._waiters or len(self._mailbox) >= _MAILBOX_FLUSH:
            with self._guard:
                pass

    def _drain(self) -> None:
        """Apply queued settlements; tags no longer held (queue deleted) are skipped."""
        if not self._mailbox:
            return
        touched: set[str] = set()
        while True:
            try:
                state, delivery_tag, multiple, requeue = self._mailbox.popleft()
            except IndexError:
                break
            if state.open:
                self._settle_locked(state, delivery_tag, multiple, requeue, touched)
        self._dispatch_all(touched)

    def waiting(self, waiter: int) -> _Waiting:
        """Context for a consumer about to block: queued settlements are applied first."""
        return _Waiting(self, waiter)

    def _settle_locked(
        self,
        state: _SessionState,
        delivery_tag: int,
        multiple: bool,
        requeue: bool | None,
        touched: set[str],
    ) -> bool:
        if multiple:
            tags = sorted(t for t in state.unacked if t <= delivery_tag or delivery_tag == 0)
            if not tags and delivery_tag != 0:
                return False
        elif delivery_tag in state.unacked:
            tags = [delivery_tag]
        else:
            return False
        if requeue:
            touched |= self._requeue(state, tags)
            return True
        for tag in tags:
            unacked = self._release(state, tag)
            queue = self._queues.get(unacked.queue)
            if queue is not None:
                touched.add(queue.name)
                if requeue is False:
                    self._dead_letter(queue, unacked.entry, "rejected")
                elif self._journal is not None:
                    self._journal.left(queue.name, unacked.entry)
        return True

    def _dispatch_all(self, names: set[str]) -> None:
        for name in names:
            queue = self._queues.get(name)
            if queue is not None:
                self._dispatch(queue)

    def _release(self, state: _SessionState, tag: int) -> _Unacked:
        unacked = state.unacked.pop(tag)
        if unacked.consumer_tag is not None:
            consumer = state.consumers.get(unacked.consumer_tag)
            if consumer is not None:
                consumer.unacked -= 1
        return unacked

    def _requeue(self, state: _SessionState, tags: list[int]) -> set[str]:
        touched: set[str] = set()
        for tag in sorted(tags, reverse=True):  # push_front in reverse keeps the order
            unacked = self._release(state, tag)
            queue = self._queues.get(unacked.queue)
            if queue is None:
                continue
            unacked.entry.redelivered = True
            queue.push_front(unacked.entry)
            touched.add(queue.name)
        return touched

    def _dead_letter(self, queue: QueueState, entry: Entry, reason: str) -> None:
        exchange = queue.dead_letter_exchange
        # RabbitMQ drops it when no DLX is configured or the DLX does not exist.
        if exchange is not None and (not exchange or exchange in self._exchanges):
            original = entry.message
            key = queue.dead_letter_routing_key or original.routing_key
            headers = _with_death(original, queue.name, reason)
            properties = replace(original.properties, headers=headers, expiration=None)
            message = Message(original.body, properties, exchange, key)
            now = monotonic()
            for name in sorted(self._route(exchange, key, message)):
                target = self._queues[name]
                if _is_cycle(headers, name, reason):
                    continue
                self._enqueue(target, message, now)
        if self._journal is not None:  # after its copies went in: at least once, never none
            self._journal.left(queue.name, entry)

    # -- expiry ----------------------------------------------------------------

    def _schedule_expiry(self) -> None:
        if self._reaper is None and not self._closed:
            self._reaper = threading.Thread(
                target=self._reap, name=f"logbus-broker-expiry-{self.name}", daemon=True
            )
            self._reaper.start()
        self._expiry.notify_all()

    def _reap(self) -> None:
        with self._lock:
            while not self._closed:
                self._drain()
                now = monotonic()
                soonest: float | None = None
                for queue in list(self._queues.values()):
                    if queue.head_expired(now):
                        self._dispatch(queue)  # dispatch dead-letters expired heads
                    while queue.head_expired(now):
                        self._dead_letter(queue, queue.pop(), "expired")
                    if queue.ready and queue.ready[0].expires_at is not None:
                        at = queue.ready[0].expires_at
                        soonest = at if soonest is None else min(soonest, at)
                timeout = None if soonest is None else max(0.0, soonest - monotonic())
                if self._journal is not None:
                    self._journal.write()
                self._expiry.wait(timeout)


_MAILBOX_FLUSH = 256
_ROUTE_CACHE_SIZE = 4096


class _Guard:
    """``with broker._guard``: take the broker lock and apply pipelined settlements."""

    __slots__ = ("_broker",)

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def __enter__(self) -> None:
        self._broker._lock.acquire()
        try:
            self._broker._drain()
        except BaseException:
            self._broker._lock.release()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self._broker._lock.release()
        if self._broker._journal is not None:
            self._broker._journal.commit()


class _Waiting:
    """Registers a consumer as blocked so settlements queued meanwhile apply at once."""

    __slots__ = ("_broker", "_waiter")

    def __init__(self, broker: Broker, waiter: int) -> None:
        self._broker = broker
        self._waiter = waiter

    def __enter__(self) -> None:
        self._broker._waiters.add(self._waiter)
        if self._broker._mailbox:
            with self._broker._guard:
                pass

    def __exit__(self, *exc_info: object) -> None:
        self._broker._waiters.discard(self._waiter)


def _inequivalent(prop: str, kind: str, name: str, received: Any, current: Any) -> Exception:
    return PreconditionFailed(
        f"PRECONDITION_FAILED - inequivalent arg '{prop}' for {kind} '{name}' in vhost '/': "
        f"received {_show(received)} but current is {_show(current)}"
    )


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    return f"'{value}'"


def _durable_binding(source: ExchangeState, target: QueueState | ExchangeState) -> bool:
    """Whether a binding survives a restart: both of its ends do."""
    if isinstance(target, QueueState):
        return source.durable and isinstance(target, JournaledQueue)
    return source.durable and target.durable


def _check_queue_arguments(name: str, args: Mapping[str, Any]) -> None:
    for key in ("x-message-ttl", "x-max-length", "x-max-length-bytes"):
        value = args.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/': "
                f"{value!r} is not an integer"
            )
        if isinstance(value, int) and value < 0:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/': "
                f"{value} is negative"
            )
    overflow = args.get("x-overflow")
    if overflow is not None and overflow not in (
        "drop-head",
        "reject-publish",
        "reject-publish-dlx",
    ):
        raise PreconditionFailed(
            f"PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '{name}' in vhost '/': "
            f"{overflow!r} is not drop-head, reject-publish or reject-publish-dlx"
        )


def _with_death(message: Message, queue: str, reason: str) -> dict[str, Any]:
    """Headers with this death recorded in ``x-death``, newest first, as RabbitMQ keeps them."""
    headers = dict(message.properties.headers)
    deaths: list[dict[str, Any]] = [dict(d) for d in headers.get("x-death") or []]
    for i, death in enumerate(deaths):
        if death.get("queue") == queue and death.get("reason") == reason:
            death["count"] = int(death.get("count", 1)) + 1
            deaths.insert(0, deaths.pop(i))
            break
    else:
        death = {
            "count": 1,
            "reason": reason,
            "queue": queue,
            "time": datetime.now(UTC),
            "exchange": message.exchange,
            "routing-keys": [message.routing_key],
        }
        if message.properties.expiration is not None:
            death["original-expiration"] = message.properties.expiration
        deaths.insert(0, death)
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue)
        headers.setdefault("x-first-death-exchange", message.exchange)
    headers["x-death"] = deaths
    return headers


def _is_cycle(headers: Mapping[str, Any], target: str, reason: str) -> bool:
    """A dead letter returning to a queue it died in, with no rejection on the way, is dropped."""
    deaths = headers.get("x-death") or []
    if reason == "rejected":
        return False
    visited = [d for d in deaths if d.get("queue") == target]
    return bool(visited) and not any(d.get("reason") == "rejected" for d in deaths)


class Session:
    """A client's view of the broker: one connection with one channel.

    Every operation raises the :mod:`logbus.errors` counterpart of the AMQP
    error RabbitMQ would give (``NotFound``, ``PreconditionFailed``, ...).
    """

    def __init__(self, broker: Broker, state: _SessionState) -> None:
        self._broker = broker
        self._state = state

    @property
    def is_open(self) -> bool:
        """Whether the session has not been closed."""
        return self._state.open

    def waiting(self) -> _Waiting:
        """Enter before blocking on deliveries: pipelined settlements then apply at once."""
        return self._broker.waiting(id(threading.current_thread()))

    def close(self) -> None:
        """Close: requeue unacked messages, cancel consumers, delete exclusive queues."""
        self._broker._close_session(self._state)

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
        """Declare an exchange (``exchange.declare``)."""
        self._broker.declare_exchange(
            name,
            type,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
            passive=passive,
        )

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange (``exchange.delete``)."""
        self._broker.delete_exchange(name, if_unused=if_unused)

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
        """Declare a queue (``queue.declare``); an empty name asks for a server-named one."""
        return self._broker._declare_queue(
            self._state,
            name,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
            passive=passive,
        )

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue (``queue.delete``); returns how many ready messages went with it."""
        broker = self._broker
        with broker._guard:
            if name not in broker._queues:
                return 0  # RabbitMQ: deleting what does not exist succeeds, with 0 messages
            queue = broker._queue(name, self._state)
            if if_unused and queue.consumers:
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - queue '{name}' in vhost '/' in use"
                )
            if if_empty and queue.ready:
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - queue '{name}' in vhost '/' not empty"
                )
            return broker._delete_queue(name)

    def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages (``queue.purge``); returns how many."""
        broker = self._broker
        with broker._guard:
            queue = broker._queue(name, self._state)
            count = len(queue.ready)
            if broker._journal is not None:
                broker._journal.purged(name, queue.ready)
            queue.ready.clear()
            queue.ready_bytes = 0
            return count

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange (``queue.bind``)."""
        self._broker._bind(self._state, _QUEUE, queue, exchange, routing_key, arguments)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding (``queue.unbind``)."""
        self._broker._bind(
            self._state, _QUEUE, queue, exchange, routing_key, arguments, unbind=True
        )

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another (``exchange.bind``, RabbitMQ's extension)."""
        self._broker._bind(self._state, _EXCHANGE, destination, source, routing_key, arguments)

    def unbind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove an exchange-to-exchange binding (``exchange.unbind``)."""
        self._broker._bind(
            self._state, _EXCHANGE, destination, source, routing_key, arguments, unbind=True
        )

    def publish(self, message: Message, *, mandatory: bool = False) -> PublishOutcome:
        """Publish and return what a publisher confirm (and return) would report."""
        self._check_open()
        return self._broker.publish(message, mandatory=mandatory)

    def get(self, queue: str, *, auto_ack: bool = False) -> Delivered | None:
        """Take the head message (``basic.get``), or None when the queue is empty."""
        broker = self._broker
        with broker._guard:
            self._check_open()
            state = broker._queue(queue, self._state)
            now = monotonic()
            while state.head_expired(now):
                broker._dead_letter(state, state.pop(), "expired")
            if not state.ready:
                return None
            entry = state.pop()
            tag = self._state.next_tag()
            if not auto_ack:
                self._state.unacked[tag] = _Unacked(entry, queue, None)
            elif broker._journal is not None:
                broker._journal.left(queue, entry)
            return Delivered(entry.message, "", tag, entry.redelivered, queue)

    def consume(
        self,
        queue: str,
        deliver: Callable[[Delivered], None],
        *,
        prefetch: int = 0,
        on_cancel: Callable[[str], None] | None = None,
        exclusive: bool = False,
    ) -> str:
        """Register a consumer (``basic.consume``); returns its tag.

        ``deliver`` is called under the broker's lock for each delivery and must
        not block. ``prefetch`` bounds this consumer's unacked deliveries (0 = no
        bound), as ``basic.qos`` with ``global=false`` does in RabbitMQ.
        """
        broker = self._broker
        with broker._guard:
            self._check_open()
            state = broker._queue(queue, self._state)
            if (exclusive and state.consumers) or any(c.exclusive for c in state.consumers):
                raise AccessRefused(
                    f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
                )
            tag = f"ctag-{self._state.id}.{next(broker._consumer_ids)}"
            consumer = ConsumerState(
                tag, queue, self._state.id, prefetch, deliver, on_cancel, exclusive
            )
            state.consumers.append(consumer)
            state.had_consumer = True
            self._state.consumers[tag] = consumer
            broker._dispatch(state)
            return tag

    def cancel(self, consumer_tag: str) -> None:
        """Cancel a consumer (``basic.cancel``); its unacked messages stay unacked."""
        with self._broker._guard:
            self._broker._cancel(self._state, consumer_tag)

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Acknowledge a delivery (``basic.ack``)."""
        self._broker._settle(self._state, delivery_tag, multiple, None)

    def nack(self, delivery_tag: int, *, multiple: bool = False, requeue: bool = True) -> None:
        """Negatively acknowledge (``basic.nack``): requeue, or dead-letter/drop."""
        self._broker._settle(self._state, delivery_tag, multiple, requeue)

    def reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        """Reject one delivery (``basic.reject``)."""
        self._broker._settle(self._state, delivery_tag, False, requeue)

    def settle_later(self, delivery_tag: int, *, multiple: bool, requeue: bool | None) -> None:
        """Pipeline a settlement: applied before the broker's next observable step.

        ``requeue`` None is an ack, True a requeue, False a dead-letter (or drop).
        Unknown tags are skipped rather than raised, as they can only be stale.
        """
        self._broker._settle_later(self._state, delivery_tag, multiple, requeue)

    def _check_open(self) -> None:
        if not self._state.open:
            raise TransportClosed("the session is closed; open a new one")
