"""A client's view of the in-process broker: :class:`Session`, one connection with one channel.

A session owns its delivery tags, its unacked messages, its consumers and its
exclusive queues; closing it requeues what it had not acknowledged, cancels
its consumers and deletes its exclusive queues, exactly as RabbitMQ does when a
connection drops. Its methods are AMQP's (``declare_queue`` is ``queue.declare``,
``ack`` is ``basic.ack``, ...), plus :meth:`Session.settle_later` to pipeline a
settlement; the work is the :class:`~logbus.broker.core.Broker`'s, under its lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from logbus.broker.expiry import touch, with_delivery_count
from logbus.broker.queues import (
    ConsumerState,
    Delivered,
    SessionState,
    Unacked,
    consumer_tag,
    monotonic,
)
from logbus.broker.registry import EXCHANGE, QUEUE
from logbus.broker.streams import StreamState, attach, check_consume, not_supported, start_offset
from logbus.errors import (
    AccessRefused,
    ChannelError,
    NotImplementedByBroker,
    PreconditionFailed,
    ResourceLocked,
    TransportClosed,
)
from logbus.message import Message, QueueInfo

if TYPE_CHECKING:
    from logbus.broker.core import Broker, PublishOutcome
    from logbus.broker.settlement import Waiting

__all__ = ["Session", "open_session"]


def open_session(broker: Broker, name: str = "") -> Session:
    """Open a session (a connection with one channel) on ``broker``."""
    return Session(broker, broker.session_state(name))


class Session:
    """A client's view of the broker: one connection with one channel.

    Every operation raises the :mod:`logbus.errors` counterpart of the AMQP
    error RabbitMQ would give (``NotFound``, ``PreconditionFailed``, ...).
    """

    def __init__(self, broker: Broker, state: SessionState) -> None:
        self._broker = broker
        self._state = state

    @property
    def is_open(self) -> bool:
        """Whether the session has not been closed."""
        return self._state.open

    def waiting(self) -> Waiting:
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
            if queue.quorum and (if_unused or if_empty):
                flag = "if-unused" if if_unused else "if-empty"
                raise NotImplementedByBroker(
                    f"NOT_IMPLEMENTED - cannot delete queue '{name}' in vhost '/'. queue.delete "
                    f"operations with {flag} flag set are not supported by quorum queues"
                )
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
            if isinstance(queue, StreamState):
                raise not_supported(queue, "queue.purge")
            count = len(queue.ready)
            if broker._journal is not None:
                broker._journal.purged(name, queue.ready)
            queue.clear()
            return count

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange (``queue.bind``)."""
        self._broker._bind(self._state, QUEUE, queue, exchange, routing_key, arguments)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding (``queue.unbind``)."""
        self._broker._bind(self._state, QUEUE, queue, exchange, routing_key, arguments, unbind=True)

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another (``exchange.bind``, RabbitMQ's extension)."""
        self._broker._bind(self._state, EXCHANGE, destination, source, routing_key, arguments)

    def unbind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove an exchange-to-exchange binding (``exchange.unbind``)."""
        self._broker._bind(
            self._state, EXCHANGE, destination, source, routing_key, arguments, unbind=True
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
            try:
                state = broker._queue(queue, self._state)
                if isinstance(state, StreamState):
                    raise not_supported(state, "basic.get")
                if state.quorum and state.single_active:
                    raise ResourceLocked(
                        f"RESOURCE_LOCKED - cannot obtain access to locked queue '{queue}' in "
                        f"vhost '/'. basic.get operations are not supported by quorum queues "
                        f"with single active consumer"
                    )
            except ChannelError:
                self._close_get_channel()
                raise
            touch(state)
            if state.prioritised:  # RabbitMQ fetches the head, expired or not
                broker._fire_timer(state, monotonic())
            else:
                broker._expire_head(state, monotonic())
            if not state.ready:
                return None
            entry = state.pop()
            broker._watch_head(state)  # the new head's TTL runs from now on
            tag = self._state.next_tag()
            if not auto_ack:
                self._state.unacked[tag] = Unacked(entry, queue, None)
            elif broker._journal is not None:
                broker._journal.left(queue, entry)
            message = with_delivery_count(entry) if state.quorum else entry.message
            return Delivered(message, "", tag, entry.redelivered, queue)

    def _close_get_channel(self) -> None:
        """A refused ``basic.get`` closes the channel it came on (the AMQP transports keep
        one for gets): what was got on it and not settled goes back to its queues, where
        a consumer still open may take it. Settling those deliveries later does nothing."""
        broker, state = self._broker, self._state
        tags = sorted(t for t, u in state.unacked.items() if u.consumer_tag is None)
        if tags:
            state.stale.update(tags)
            broker._dispatch_all(broker._requeue(state, tags, returned=True))

    def consume(
        self,
        queue: str,
        deliver: Callable[[Delivered], None],
        *,
        prefetch: int = 0,
        on_cancel: Callable[[str], None] | None = None,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> str:
        """Register a consumer (``basic.consume``); returns its tag.

        ``deliver`` is called under the broker's lock for each delivery and must
        not block. ``prefetch`` bounds this consumer's unacked deliveries (0 = no
        bound), as ``basic.qos`` with ``global=false`` does in RabbitMQ. On a
        stream, ``arguments`` may hold ``x-stream-offset`` (where to start reading).
        """
        broker = self._broker
        with broker._guard:
            self._check_open()
            state = broker._queue(queue, self._state)
            position = None
            if isinstance(state, StreamState):
                check_consume(state, prefetch)
                state.retain(time.time())
                position = start_offset(state, (arguments or {}).get("x-stream-offset"))
            # RabbitMQ 3.10's quorum queues take exclusive consumers as any other.
            taken = any(c.exclusive for c in state.consumers)
            if not state.quorum and ((exclusive and state.consumers) or taken):
                raise AccessRefused(
                    f"ACCESS_REFUSED - queue '{queue}' in vhost '/' in exclusive use"
                )
            tag = consumer_tag(self._state.id, next(broker._consumer_ids))
            consumer = ConsumerState(
                tag, queue, self._state.id, prefetch, deliver, on_cancel, exclusive
            )
            state.add_consumer(consumer)
            if isinstance(state, StreamState) and position is not None:
                attach(state, tag, position)
            state.had_consumer = True
            self._state.consumers[tag] = consumer
            broker._dispatch(state)
            return tag

    def cancel(self, consumer_tag: str) -> None:
        """Cancel a consumer (``basic.cancel``); its unacked messages stay unacked."""
        broker = self._broker
        with broker._guard:
            consumer = self._state.consumers.get(consumer_tag)
            broker._cancel(self._state, consumer_tag)
            queue = None if consumer is None else broker._queues.get(consumer.queue)
            if queue is not None and queue.single_active and queue.quorum:
                broker._dispatch(queue)  # the next consumer takes over at once (not classic)

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Acknowledge a delivery (``basic.ack``)."""
        self._broker._settle(self._state, delivery_tag, multiple, None)

    def nack(self, delivery_tag: int, *, multiple: bool = False, requeue: bool = True) -> None:
        """Negatively acknowledge (``basic.nack``): requeue, or dead-letter/drop."""
        self._refuse_on_stream(delivery_tag)
        self._broker._settle(self._state, delivery_tag, multiple, requeue)

    def reject(self, delivery_tag: int, *, requeue: bool = True) -> None:
        """Reject one delivery (``basic.reject``)."""
        self._refuse_on_stream(delivery_tag)
        self._broker._settle(self._state, delivery_tag, False, requeue)

    def _refuse_on_stream(self, delivery_tag: int) -> None:
        """A stream takes acks only (RabbitMQ: 540 for a nack or reject)."""
        unacked = self._state.unacked.get(delivery_tag)
        queue = None if unacked is None else self._broker._queues.get(unacked.queue)
        if isinstance(queue, StreamState):
            raise not_supported(queue, "basic.nack and basic.reject")

    def settle_later(self, delivery_tag: int, *, multiple: bool, requeue: bool | None) -> None:
        """Pipeline a settlement: applied before the broker's next observable step.

        ``requeue`` None is an ack, True a requeue, False a dead-letter (or drop).
        Unknown tags are skipped rather than raised, as they can only be stale.
        """
        self._broker._settle_later(self._state, delivery_tag, multiple, requeue)

    def _check_open(self) -> None:
        if not self._state.open:
            raise TransportClosed("the session is closed; open a new one")
