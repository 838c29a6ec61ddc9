"""Priority queues (``x-max-priority``): the ready messages of one queue, a FIFO per priority.

RabbitMQ 3.10 gives a classic queue declared with ``x-max-priority`` one backing
queue per priority from 0 to the maximum. A message's ``priority`` property
(none counts as 0) picks its level, capped at the maximum; the head is the
oldest message of the highest non-empty level, so order within a priority
stays FIFO, and a requeued message goes back to its original place within its
own level. ``drop-head`` drops that head, the highest priority's oldest.

Expiry follows RabbitMQ's timer, not the clock alone: a queue drops expired
messages from its head only when ``drop_expired_msgs`` runs (after a fetch, a
requeue, a publish into an empty queue, or when its TTL timer fires), and the
timer is set for the head it finds then. A message of higher priority that
becomes the head on publish gets no timer of its own, so it can be fetched,
and counted, after its TTL ran out, as on RabbitMQ. :func:`arm_timer` sets it.

:class:`Levels` stands in for the ``deque`` of a plain queue's ready messages:
it answers the few operations :class:`~logbus.broker.queues.QueueState` asks of
one (``append``, ``popleft``, ``[0]``, ``len``, iteration in delivery order).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logbus.broker.queues import Entry, QueueState

__all__ = ["MAX_PRIORITY", "Levels", "arm_timer"]

#: The largest ``x-max-priority`` RabbitMQ accepts.
MAX_PRIORITY = 255


class Levels:
    """Ready messages by priority: one FIFO per level, served highest level first."""

    __slots__ = ("_count", "_levels", "maximum")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._levels: list[deque[Entry]] = [deque() for _ in range(maximum + 1)]
        self._count = 0

    def level(self, entry: Entry) -> int:
        """The level ``entry`` sits at: its priority, 0 when it has none, capped at the maximum."""
        priority = entry.message.properties.priority or 0
        return min(max(priority, 0), self.maximum)

    def append(self, entry: Entry) -> None:
        """Add at the tail of its level."""
        self._levels[self.level(entry)].append(entry)
        self._count += 1

    def put_back(self, entry: Entry) -> None:
        """Requeue at the place its ``seq`` had within its level."""
        level = self._levels[self.level(entry)]
        index = len(level)
        for i, other in enumerate(level):
            if other.seq > entry.seq:
                index = i
                break
        level.insert(index, entry)
        self._count += 1

    def _head_level(self) -> deque[Entry]:
        for level in reversed(self._levels):
            if level:
                return level
        raise IndexError("no ready messages")

    def popleft(self) -> Entry:
        """Take the head: the oldest message of the highest non-empty level."""
        entry = self._head_level().popleft()
        self._count -= 1
        return entry

    def __getitem__(self, index: int) -> Entry:
        if index != 0:
            raise IndexError("only the head of a priority queue is looked at")
        return self._head_level()[0]

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Entry]:
        for level in reversed(self._levels):
            yield from level

    def clear(self) -> None:
        """Drop every message."""
        for level in self._levels:
            level.clear()
        self._count = 0


def arm_timer(queue: QueueState) -> bool:
    """Set ``queue``'s TTL timer for its head, as RabbitMQ's ``ensure_ttl_timer``:
    kept if one is set, unless the head expires over a millisecond sooner."""
    if not queue.ready:
        return False
    at = queue.ready[0].expires_at
    if at is None or (queue.timer_at is not None and at + 0.001 >= queue.timer_at):
        return False
    queue.timer_at = at
    return True
