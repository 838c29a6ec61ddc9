"""Queue expiry (``x-expires``) and the quorum delivery count, as RabbitMQ 3.10 keeps them.

A queue declared with ``x-expires`` is deleted once it has gone unused that
many milliseconds: no consumer on it, and no ``basic.get`` or declaration of it
(passive ones included) in that time. Its clock is :attr:`QueueState.last_used
<logbus.broker.queues.QueueState.last_used>`, touched by those operations and
when its last consumer leaves; the broker's expiry thread deletes it.

A quorum queue counts how many times each message came back (a nack or reject
with requeue, or its channel closing). Every delivery carries that count in the
``x-delivery-count`` header, and with ``x-delivery-limit`` a message returned
more often than the limit is dead-lettered with reason ``delivery_limit``
instead of being requeued.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from logbus.broker.queues import Entry, QueueState, monotonic
from logbus.message import Message

if TYPE_CHECKING:
    from logbus.broker.registry import Registry

__all__ = ["expire_unused", "over_delivery_limit", "touch", "with_delivery_count"]


def touch(queue: QueueState) -> None:
    """The queue was used now: its ``x-expires`` clock starts again."""
    if queue.expires is not None:
        queue.last_used = monotonic()


def expire_unused(registry: Registry, queue: QueueState, now: float) -> float | None:
    """Delete ``queue`` if it has been unused past its ``x-expires``; else when it will be."""
    if queue.expires is None or queue.consumers:
        return None
    deadline = queue.last_used + queue.expires / 1000.0
    if deadline > now:
        return deadline
    if registry._queues.get(queue.name) is queue:
        registry._delete_queue(queue.name)
    return None


def with_delivery_count(entry: Entry) -> Message:
    """The message as a quorum queue delivers it: ``x-delivery-count`` in its headers."""
    message = entry.message
    headers = dict(message.properties.headers)
    headers["x-delivery-count"] = entry.delivery_count
    return replace(message, properties=replace(message.properties, headers=headers))


def over_delivery_limit(queue: QueueState, entry: Entry) -> bool:
    """Count a return of ``entry`` to a quorum queue; whether it passed ``x-delivery-limit``."""
    if not queue.quorum:
        return False
    entry.delivery_count += 1
    return queue.delivery_limit is not None and entry.delivery_count > queue.delivery_limit
