"""How deliveries end: acked, requeued, or dead-lettered with an ``x-death`` record.

:class:`Settling` is the part of :class:`~logbus.broker.core.Broker` that
applies ``basic.ack``/``nack``/``reject``. A requeued message goes back to the
head of its queue marked redelivered; a rejected one is dead-lettered to its
queue's ``x-dead-letter-exchange`` (or dropped without one), as are messages
that expire or overflow ``x-max-length``. Dead letters carry RabbitMQ's
``x-death`` headers, and one returning to a queue it already died in without a
rejection on the way is dropped, as RabbitMQ breaks such cycles.

Settlements can also be pipelined like acks on a socket
(:meth:`~logbus.broker.sessions.Session.settle_later`): queued in a mailbox
without the lock and applied by the next operation that takes it
(:class:`Guard`), so every observer sees them applied; a consumer about to
block (:class:`Waiting`) has them applied at once.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from logbus.broker.expiry import over_delivery_limit
from logbus.broker.journal import Journal
from logbus.broker.queues import Entry, ExchangeState, QueueState, SessionState, Unacked, monotonic
from logbus.broker.recipients import carbon_copies
from logbus.errors import PreconditionFailed
from logbus.message import Message

__all__ = ["Guard", "Settling", "Waiting"]

_MAILBOX_FLUSH = 256


class Settling:
    """Acks, requeues and dead letters of a broker; a base of :class:`~logbus.broker.core.Broker`.

    The attributes below are set by ``Broker.__init__``; routing, enqueueing
    and dispatching are the broker's own.
    """

    _lock: threading.RLock
    _guard: Guard
    _journal: Journal | None
    _mailbox: deque[tuple[SessionState, int, bool, bool | None]]
    _waiters: set[int]
    _exchanges: dict[str, ExchangeState]
    _queues: dict[str, QueueState]
    _route: Callable[[str, str, Message, tuple[str, ...]], AbstractSet[str]]
    _enqueue: Callable[[QueueState, Message, float], bool]
    _dispatch_all: Callable[[set[str]], None]
    _dispatch: Callable[[QueueState], None]
    _drop_head: Callable[[QueueState], bool]
    _expire_head: Callable[..., None]

    def _settle(
        self, state: SessionState, delivery_tag: int, multiple: bool, requeue: bool | None
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
        self, state: SessionState, delivery_tag: int, multiple: bool, requeue: bool | None
    ) -> None:
        """Queue a settlement for the next locked operation (applied now if anyone waits)."""
        self._mailbox.append((state, delivery_tag, multiple, requeue))
        if self._waiters or len(self._mailbox) >= _MAILBOX_FLUSH:
            with self._guard:
                pass

    def _drain(self) -> None:
        """Apply queued settlements; tags no longer held (queue deleted) are skipped.

        Each settlement's queue is dispatched before the next one applies, as on
        RabbitMQ, where an ack frees a consumer's slot before a later requeue lands.
        """
        mailbox = self._mailbox
        if not mailbox:
            return
        touched: set[str] = set()
        while mailbox:
            state, delivery_tag, multiple, requeue = mailbox.popleft()
            if not state.open:
                continue
            if requeue is None and not multiple and delivery_tag in state.unacked:
                queue = self._ack(state, delivery_tag)  # the common case, without the sets
                if queue is not None:
                    self._dispatch(queue)
            elif self._settle_locked(state, delivery_tag, multiple, requeue, touched):
                self._dispatch_all(touched)
                touched.clear()

    def waiting(self, waiter: int) -> Waiting:
        """Context for a consumer about to block: queued settlements are applied first."""
        return Waiting(self, waiter)

    def _settle_locked(
        self,
        state: SessionState,
        delivery_tag: int,
        multiple: bool,
        requeue: bool | None,
        touched: set[str],
    ) -> bool:
        if delivery_tag in state.stale:
            state.stale.discard(delivery_tag)
            return True
        if multiple:
            tags = self._multiple(state, delivery_tag)
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
            if requeue is None:
                queue = self._ack(state, tag)
            else:
                unacked = self._release(state, tag)
                queue = self._queues.get(unacked.queue)
                if queue is not None:
                    self._dead_letter(queue, unacked.entry, "rejected")
            if queue is not None:
                touched.add(queue.name)
        return True

    def _ack(self, state: SessionState, tag: int) -> QueueState | None:
        """Forget an acked delivery; its queue (None once deleted), to dispatch."""
        unacked = self._release(state, tag)
        queue = self._queues.get(unacked.queue)
        if queue is not None and self._journal is not None:
            self._journal.left(queue.name, unacked.entry)
        return queue

    @staticmethod
    def _multiple(state: SessionState, delivery_tag: int) -> list[int]:
        """The tags ``multiple`` settles: up to ``delivery_tag``, on its channel only.

        A consumer has a channel of its own (as on ``amqp://``), basic.get deliveries
        share one; tag 0 means all of the session's.
        """
        unacked = state.unacked
        if delivery_tag == 0:
            return sorted(unacked)
        this = unacked.get(delivery_tag)
        if this is None:
            return []
        channel = this.consumer_tag
        return sorted(
            t for t, u in unacked.items() if t <= delivery_tag and u.consumer_tag == channel
        )

    def _release(self, state: SessionState, tag: int) -> Unacked:
        unacked = state.unacked.pop(tag)
        if unacked.consumer_tag is not None:
            consumer = state.consumers.get(unacked.consumer_tag)
            if consumer is not None:
                consumer.unacked -= 1
                if consumer.blocked:
                    queue = self._queues.get(consumer.queue)
                    if queue is not None:
                        queue.unblock(consumer)
        return unacked

    def _requeue(self, state: SessionState, tags: list[int], *, returned: bool = False) -> set[str]:
        """Put messages back where their queue keeps them, then re-apply its bounds.

        ``returned``: by a closing channel, rather than by a nack or reject.
        """
        touched: set[str] = set()
        for tag in tags:
            unacked = self._release(state, tag)
            queue = self._queues.get(unacked.queue)
            if queue is None:
                continue
            touched.add(queue.name)
            if over_delivery_limit(queue, unacked.entry):
                self._dead_letter(queue, unacked.entry, "delivery_limit")
                if not returned:
                    self._extra_credit(state, unacked)
                continue
            unacked.entry.redelivered = True
            queue.put_back(unacked.entry, returned=returned)
        for name in touched:
            queue = self._queues[name]
            if queue.quorum:
                # rabbit_fifo: expire the head, check out to consumers, then trim. The trim's
                # dead letters go out first: they are put in front of the step's effects.
                # (A quorum queue has no priorities, so no TTL timer to re-arm here.)
                expired: list[Entry] = []
                while queue.head_expired():
                    expired.append(queue.pop())
                self._dispatch(queue)
                self._drop_head(queue)
                for entry in expired:
                    self._dead_letter(queue, entry, "expired")
            else:
                self._drop_head(queue)  # a classic one trims first (requeue_and_run)
            self._expire_head(queue)
        return touched

    @staticmethod
    def _extra_credit(state: SessionState, unacked: Unacked) -> None:
        """RabbitMQ 3.10's rabbit_fifo credits a consumer twice for a nacked or rejected
        message it drops at the delivery limit (once as settled, once as returned), so
        that consumer may hold one more than its prefetch from then on (probed: with
        prefetch 1, the next two messages both come)."""
        consumer = (
            None if unacked.consumer_tag is None else state.consumers.get(unacked.consumer_tag)
        )
        if consumer is not None and consumer.prefetch:
            consumer.prefetch += 1

    def _dead_letter(self, queue: QueueState, entry: Entry, reason: str) -> None:
        exchange = queue.dead_letter_exchange
        # RabbitMQ drops it when no DLX is configured or the DLX does not exist.
        if exchange is not None and (not exchange or exchange in self._exchanges):
            original = entry.message
            key = queue.dead_letter_routing_key or original.routing_key
            headers = _with_death(original, queue.name, reason)
            if queue.dead_letter_routing_key is not None:
                headers.pop("CC", None)  # RabbitMQ: a dead-letter key replaces the CC keys
            properties = replace(original.properties, headers=headers, expiration=None)
            message = Message(original.body, properties, exchange, key)
            now = monotonic()
            extra = carbon_copies(message) if "CC" in headers else ()
            for name in sorted(self._route(exchange, key, message, extra)):
                target = self._queues[name]
                if _is_cycle(headers, name, reason):
                    continue
                self._enqueue(target, message, now)
        if self._journal is not None:  # after its copies went in: at least once, never none
            self._journal.left(queue.name, entry)


class Guard:
    """``with broker._guard``: take the broker lock and apply pipelined settlements."""

    __slots__ = ("_broker",)

    def __init__(self, broker: Settling) -> None:
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


class Waiting:
    """Registers a consumer as blocked so settlements queued meanwhile apply at once."""

    __slots__ = ("_broker", "_waiter")

    def __init__(self, broker: Settling, waiter: int) -> None:
        self._broker = broker
        self._waiter = waiter

    def __enter__(self) -> None:
        self._broker._waiters.add(self._waiter)
        if self._broker._mailbox:
            with self._broker._guard:
                pass

    def __exit__(self, *exc_info: object) -> None:
        self._broker._waiters.discard(self._waiter)


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
