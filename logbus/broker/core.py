"""The in-process broker: RabbitMQ's exchange/queue/binding model behind one lock.

A :class:`Broker` owns exchanges, queues and bindings; clients talk to it
through a :class:`~logbus.broker.sessions.Session` (what AMQP calls a
connection with one channel), opened with
:func:`~logbus.broker.sessions.open_session`: sessions sit above the broker and
import it, never the other way round. Sessions own their delivery tags, their unacked
messages and their exclusive queues; closing a session requeues what it had
not acknowledged, exactly as RabbitMQ does when a connection drops.

The broker never blocks and never calls out while doing I/O: a consumer's
``deliver`` callback is called under the lock and must only hand the delivery
on (``queue.Queue.put_nowait``, a pipe send). Routing decisions come from
:mod:`logbus.routing`; nothing here matches keys itself.

This module has what moves messages: publishing, routing (with a cache of
header-less routing decisions), dispatch to consumers and expiry. The rest of
the broker is in its bases and neighbours: declarations and deletions in
:mod:`logbus.broker.registry`, acks, requeues, dead letters and the
pipelined-settlement mailbox in :mod:`logbus.broker.settlement`, the client
side in :mod:`logbus.broker.sessions`, per-entity state in
:mod:`logbus.broker.queues`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from enum import Enum
from typing import Any

from logbus.broker.expiry import expire_unused, with_delivery_count
from logbus.broker.journal import Journal, JournaledQueue
from logbus.broker.priority import arm_timer
from logbus.broker.queues import (
    ConsumerState,
    Delivered,
    Entry,
    ExchangeState,
    QueueState,
    SessionState,
    Unacked,
    monotonic,
    opened,
    valid_expiration,
)
from logbus.broker.recipients import carbon_copies, without_bcc
from logbus.broker.registry import EXCHANGE_TYPES, QUEUE, Registry
from logbus.broker.settlement import Guard, Settling
from logbus.broker.streams import StreamState, is_stream
from logbus.broker.streams import dispatch as dispatch_stream
from logbus.broker.watermark import accounted
from logbus.errors import AccessRefused, InvalidExpiration
from logbus.message import Message, QueueInfo

__all__ = ["Broker", "PublishOutcome", "QueueInfo"]

_ROUTE_CACHE_SIZE = 4096
_NOWHERE: frozenset[str] = frozenset()  # what routing to no queue gives


class PublishOutcome(Enum):
    """What became of a publish, as the publisher's confirm and return would say."""

    ROUTED = "routed"
    UNROUTABLE = "unroutable"  # mandatory and no queue: returned, then confirmed
    REJECTED = "rejected"  # a queue at its bound refused it: negatively confirmed


class Broker(Registry, Settling):
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
        self._guard = Guard(self)
        # Settlements pipelined like acks on a socket: queued without the lock, applied
        # by the next operation that takes it, so every observer sees them applied.
        self._mailbox: deque[tuple[SessionState, int, bool, bool | None]] = deque()
        self._waiters: set[int] = set()
        # Routing decisions of header-less messages; cleared whenever bindings change.
        self._route_cache: dict[tuple[str, str], frozenset[str]] = {}
        self._exchanges: dict[str, ExchangeState] = {}
        self._queues: dict[str, QueueState] = {}
        self._sessions: dict[int, SessionState] = {}
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
                arguments = dict(record.arguments)
                queue: QueueState = (
                    StreamState(record.name, arguments, journal)
                    if is_stream(arguments)
                    else JournaledQueue(journal, record.name, record.auto_delete, arguments)
                )
                self._queues[record.name] = queue
                for entry in record.messages:  # paged: their messages stay in the journal
                    if entry.expires_at is not None:  # wall clock, until adopted here
                        entry.expires_at = now + (entry.expires_at - wall)
                        expiring = True
                    entry.redelivered = True
                    queue.push(entry)
            for binding in recovery.bindings:
                source = self._exchanges.get(binding.source)
                targets = self._queues if binding.kind == QUEUE else self._exchanges
                if source is not None and binding.destination in targets:
                    destination = (binding.kind, binding.destination)
                    source.table.add(binding.routing_key, binding.arguments, destination)
            if expiring:
                self._schedule_expiry()

    # -- sessions --------------------------------------------------------------

    def session_state(self, name: str = "") -> SessionState:
        """Register a new session's state (:func:`~logbus.broker.sessions.open_session`)."""
        with self._guard:
            counter = itertools.count(1)
            state = SessionState(next(self._session_ids), name, lambda: next(counter))
            self._sessions[state.id] = state
            return state

    def held_bytes(self) -> int:
        """Bytes held for messages, as the memory watermark counts them (see its module)."""
        with self._guard:
            return accounted(self._queues.values(), self._sessions.values())

    def page(self, paging: bool) -> int:
        """Page durable queues' persistent messages out at once, or keep them (see paging).

        Turning paging on also drops the messages queues keep in memory; returns
        how many. Without a journal there is nowhere to page to: nothing happens.
        """
        if self._journal is None:
            return 0
        with self._guard:
            self._journal.paging = paging
            if not paging:
                return 0
            return sum(q.page_out() for q in self._queues.values() if isinstance(q, JournaledQueue))

    def close(self) -> None:
        """Stop the expiry thread and close the journal; open sessions keep their state."""
        with self._guard:
            self._closed = True
            self._expiry.notify_all()
        if self._journal is not None:
            self._journal.close()

    def _close_session(self, state: SessionState) -> None:
        with self._guard:
            if not state.open:
                return
            state.open = False
            # As RabbitMQ sees a connection go: one channel after the other, in the order
            # they were opened (basic.get's first, then each consumer's, a cancelled one
            # still holding messages in its place), each channel's messages returned and
            # the queue run before the next goes, so a consumer still open may take them
            # (and return them again). A single active consumer's queue is run for the next.
            held = {u.consumer_tag for u in state.unacked.values() if u.consumer_tag is not None}
            channels: list[str | None] = [None, *sorted(held | set(state.consumers), key=opened)]
            for channel in channels:
                consumer = None if channel is None else state.consumers.get(channel)
                if consumer is not None:
                    self._cancel(state, consumer.tag)
                tags = sorted(t for t, u in state.unacked.items() if u.consumer_tag == channel)
                touched = self._requeue(state, tags, returned=True)
                queue = None if consumer is None else self._queues.get(consumer.queue)
                if queue is not None and queue.single_active:
                    touched.add(queue.name)
                self._dispatch_all(touched)
            for name in [q.name for q in self._queues.values() if q.exclusive_owner == state.id]:
                self._delete_queue(name)
            self._sessions.pop(state.id, None)

    # -- publishing ------------------------------------------------------------

    def publish(self, message: Message, *, mandatory: bool = False) -> PublishOutcome:
        """Route a message to its queues, as a confirmed ``basic.publish`` would."""
        with self._lock:  # the hot path: _guard's work, inlined
            if self._mailbox:
                self._drain()
            expiration = message.properties.expiration
            if expiration is not None and not valid_expiration(expiration):
                raise InvalidExpiration(f"PRECONDITION_FAILED - invalid expiration '{expiration}'")
            if message.exchange:
                exchange = self._exchange(message.exchange)
                if exchange.internal:
                    raise AccessRefused(
                        f"ACCESS_REFUSED - cannot publish to internal exchange "
                        f"'{message.exchange}' in vhost '/'"
                    )
            extra: tuple[str, ...] = ()
            headers = message.properties.headers
            if headers and ("CC" in headers or "BCC" in headers):
                extra = carbon_copies(message)
                if "BCC" in headers:
                    message = without_bcc(message)
            names = self._route(message.exchange, message.routing_key, message, extra)
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

    def _route(
        self, exchange_name: str, routing_key: str, message: Message, extra: tuple[str, ...] = ()
    ) -> AbstractSet[str]:
        """The queues a message reaches; ``extra``: more routing keys (``CC``/``BCC``)."""
        if exchange_name == "":
            if not extra:
                return {routing_key} if routing_key in self._queues else _NOWHERE
            return {k for k in (routing_key, *extra) if k in self._queues}
        headers = message.properties.headers
        if headers:  # a headers exchange may be on the path: no caching
            return self._route_uncached(exchange_name, (routing_key, *extra), headers)
        cache_key = (exchange_name, routing_key)
        queues = self._route_cache.get(cache_key)
        if queues is None:
            if len(self._route_cache) >= _ROUTE_CACHE_SIZE:
                self._route_cache.clear()
            queues = self._route_cache[cache_key] = frozenset(
                self._route_uncached(exchange_name, (routing_key,), headers)
            )
        return queues

    def _route_uncached(
        self, exchange_name: str, keys: tuple[str, ...], headers: Mapping[str, Any]
    ) -> set[str]:
        """Route as RabbitMQ's ``rabbit_exchange:route``: through exchange-to-exchange
        bindings, each exchange visited once, and to an exchange's ``alternate-exchange``
        when its own bindings matched none of the keys."""
        queues: set[str] = set()
        seen: set[str] = set()
        pending = [exchange_name]
        while pending:
            name = pending.pop()
            exchange = self._exchanges.get(name)
            if exchange is None or name in seen:
                continue
            seen.add(name)
            matched = False
            for key in keys if exchange.type in ("direct", "topic") else keys[:1]:
                for kind, destination in exchange.table.route(key, headers):
                    matched = True
                    if kind == QUEUE:
                        queues.add(destination)
                    else:
                        pending.append(destination)
            alternate = exchange.arguments.get("alternate-exchange")
            if not matched and isinstance(alternate, str):
                pending.append(alternate)
        return queues

    def _enqueue(self, queue: QueueState, message: Message, now: float) -> bool:
        """Add a message as RabbitMQ does (``deliver_or_enqueue``); False if it refused it.

        ``reject-publish`` is checked first; then a waiting consumer gets the message
        at once, whatever its TTL (even 0) and the bounds. Otherwise it joins the tail,
        ``drop-head`` trims the head, and expired messages go only from the head.
        """
        if isinstance(queue, StreamState):  # appended, never taken: streams.py
            queue.append(message)
            dispatch_stream(queue, self._deliver)
            return True
        entry = Entry(message, queue.expiry_for(message, now))
        if queue.bounded and queue.overflow != "drop-head" and queue.would_overflow(entry):
            if queue.overflow == "reject-publish-dlx":
                self._dead_letter(queue, entry, "maxlen")
            return False
        if not queue.ready and queue.consumers:
            consumer = queue.next_consumer()
            if consumer is not None:
                queue.push(entry)  # its place (should it be requeued), its journal entry
                self._deliver(queue, consumer, queue.pop())
                return True
        queue.push(entry)
        dropped = queue.bounded and self._drop_head(queue)
        ready = queue.ready
        if (dropped or len(ready) == 1) and ready and ready[0].expires_at is not None:
            self._expire_head(queue, now)
        self._dispatch(queue)
        if entry.expires_at is not None:
            self._schedule_expiry()
        return True

    def _drop_head(self, queue: QueueState) -> bool:
        """Under ``drop-head``, dead-letter from the head while the queue is past a bound.

        A quorum queue dead-letters what one step dropped last first (rabbit_fifo
        gathers the drops of one command as effects, newest in front): publishing a
        large message past m0, m1, m2 dead-letters m2, m1, m0, as does a closed
        channel's return of several. A classic queue keeps the order it dropped.
        """
        if queue.overflow != "drop-head":
            return False
        dropped = []
        while queue.ready and queue.over_limit():
            dropped.append(queue.pop())
        for entry in reversed(dropped) if queue.quorum else dropped:
            self._dead_letter(queue, entry, "maxlen")
        return bool(dropped)

    def _expire_head(self, queue: QueueState, now: float | None = None) -> None:
        """Dead-letter expired messages from the head (RabbitMQ never looks further).

        This is RabbitMQ's ``drop_expired_msgs``: a priority queue then sets its TTL
        timer for the new head (see :mod:`logbus.broker.priority`).
        """
        while queue.head_expired(now):
            self._dead_letter(queue, queue.pop(), "expired")
        if queue.prioritised and arm_timer(queue):
            self._schedule_expiry()

    def _fire_timer(self, queue: QueueState, now: float) -> None:
        """A priority queue's TTL timer, if it is due: expire from the head, re-arm."""
        if queue.timer_at is not None and queue.timer_at <= now:
            queue.timer_at = None
            self._expire_head(queue, now)

    # -- dispatch --------------------------------------------------------------

    def _dispatch(self, queue: QueueState) -> None:
        if isinstance(queue, StreamState):
            dispatch_stream(queue, self._deliver)
            return
        if queue.prioritised:  # fetch, then drop expired heads (RabbitMQ's fetch/2)
            while queue.ready:
                consumer = queue.next_consumer()
                if consumer is None:
                    break
                self._deliver(queue, consumer, queue.pop())
                self._expire_head(queue)
            return
        ready = queue.ready
        next_consumer, deliver = queue.next_consumer, self._deliver
        while ready:
            expires_at = ready[0].expires_at  # queue.head_expired(), inlined: the hot path
            if expires_at is not None and expires_at <= monotonic():
                self._dead_letter(queue, queue.pop(), "expired")
                continue
            consumer = next_consumer()
            if consumer is None:
                break
            deliver(queue, consumer, queue.pop())
        if ready and ready[0].expires_at is not None:
            self._schedule_expiry()  # the new head's TTL timer, as _watch_head

    def _watch_head(self, queue: QueueState) -> None:
        """Wake the expiry thread when a new head has a TTL (RabbitMQ's head timer)."""
        if queue.prioritised:
            self._expire_head(queue)
        elif queue.ready and queue.ready[0].expires_at is not None:
            self._schedule_expiry()

    def _deliver(self, queue: QueueState, consumer: ConsumerState, entry: Entry) -> None:
        state = self._sessions[consumer.session_id]
        tag = state.next_tag()
        state.unacked[tag] = Unacked(entry, queue.name, consumer.tag)
        consumer.unacked += 1
        # A quorum queue tells a consumer how often a message came back, once it has.
        message = (
            with_delivery_count(entry) if queue.quorum and entry.delivery_count else entry.message
        )
        consumer.deliver(Delivered(message, consumer.tag, tag, entry.redelivered, queue.name))

    def _dispatch_all(self, names: set[str]) -> None:
        for name in names:
            queue = self._queues.get(name)
            if queue is not None:
                self._dispatch(queue)

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
                    if queue.prioritised:
                        self._fire_timer(queue, now)
                        if queue.timer_at is not None:
                            soonest = min(soonest or queue.timer_at, queue.timer_at)
                    elif queue.head_expired(now):
                        self._dispatch(queue)  # dispatch dead-letters expired heads
                    while not queue.prioritised and queue.head_expired(now):
                        self._dead_letter(queue, queue.pop(), "expired")
                    if not queue.prioritised and queue.ready and queue.ready[0].expires_at:
                        at = queue.ready[0].expires_at
                        soonest = at if soonest is None else min(soonest, at)
                    if queue.expires is not None and not queue.consumers:
                        unused_until = expire_unused(self, queue, now)
                        if unused_until is not None:
                            soonest = min(soonest or unused_until, unused_until)
                timeout = None if soonest is None else max(0.0, soonest - monotonic())
                if self._journal is not None:
                    self._journal.write()
                self._expiry.wait(timeout)
