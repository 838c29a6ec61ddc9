"""Stream queues in the in-process broker: RabbitMQ's append-only log, read by offset.

A queue declared with ``x-queue-type: stream`` is a :class:`StreamState`. What
is published to it is appended under the next offset and stays there: consuming
never removes anything, only retention does (``x-max-age`` such as ``7D``,
``x-max-length-bytes``), from the oldest end. Each consumer reads on its own
from where its ``x-stream-offset`` consumer argument put it (``first``,
``last``, ``next`` — the default —, an offset, or a timestamp), at most its
prefetch unacked at a time: acks only give credit back. Every delivery carries
its offset in the header ``x-stream-offset``.

What RabbitMQ 3.10 refuses, this refuses alike (checked against a live node):
a non-durable, exclusive or auto-delete stream, the arguments of other queue
types (``x-max-length``, ``x-message-ttl``, ``x-overflow``, dead-lettering,
...), a malformed ``x-max-age`` (all 406); a consumer without a prefetch (406);
``basic.get``, ``basic.nack``/``reject`` and ``queue.purge`` (540, which
RabbitMQ answers by closing the connection). Two differences are deliberate:
retention here is per message where RabbitMQ drops whole segments (so a small
stream on RabbitMQ keeps more than its bound), and a timestamp offset here
finds the first message appended at or after it where RabbitMQ starts at the
chunk holding it (a little earlier).

With a journal (``logbus broker serve --data-dir``) a stream's persistent
messages are kept in it like a durable queue's and struck off when retention
drops them; after a restart their offsets start at 0 again and their append
times are the recovery's, so ``--since`` then sees the whole recovered history.
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from logbus.broker.queues import ConsumerState, Entry, QueueState
from logbus.errors import NotImplementedByBroker, PreconditionFailed
from logbus.message import PERSISTENT, Message

if TYPE_CHECKING:
    from logbus.broker.journal import Journal

__all__ = [
    "STREAM_ARGUMENTS",
    "StreamState",
    "attach",
    "check_consume",
    "check_declare",
    "dispatch",
    "is_stream",
    "not_supported",
    "start_offset",
]

#: The x-arguments a stream takes; any other that RabbitMQ checks is refused.
STREAM_ARGUMENTS = frozenset(
    {
        "x-queue-type",
        "x-max-age",
        "x-max-length-bytes",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
        "x-queue-leader-locator",
    }
)
_AGE = re.compile(r"(\d+)([YMDhms])")
_UNIT_SECONDS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


def is_stream(arguments: Mapping[str, Any]) -> bool:
    """Whether queue arguments declare a stream."""
    return arguments.get("x-queue-type") == "stream"


def max_age_seconds(value: object) -> float | None:
    """``x-max-age`` (``7D``, ``12h``, ``30s``) in seconds; None when it is not one."""
    if not isinstance(value, str) or not (found := _AGE.fullmatch(value)):
        return None
    return int(found[1]) * _UNIT_SECONDS[found[2]]


def check_declare(name: str, arguments: Mapping[str, Any], checked: frozenset[str]) -> None:
    """Refuse what RabbitMQ refuses in a stream's declaration (406, its words)."""
    where = f"for queue '{name}' in vhost '/'"
    for key in sorted(arguments):
        if key in checked and key not in STREAM_ARGUMENTS:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - invalid arg '{key}' {where} of queue type "
                f"rabbit_stream_queue"
            )
    age = arguments.get("x-max-age")
    if age is not None and max_age_seconds(age) is None:
        why = "invalid_max_age" if isinstance(age, str) else "{unacceptable_type,signedint}"
        raise PreconditionFailed(f"PRECONDITION_FAILED - invalid arg 'x-max-age' {where}: {why}")


def check_consume(queue: QueueState, prefetch: int) -> None:
    """A stream consumer needs a prefetch: its acks are the credit (406 otherwise)."""
    if prefetch <= 0:
        raise PreconditionFailed(
            f"PRECONDITION_FAILED - consumer prefetch count is not set for "
            f"'queue '{queue.name}' in vhost '/''"
        )


def not_supported(queue: QueueState, operation: str) -> NotImplementedByBroker:
    """RabbitMQ's 540 for what a stream does not do (``basic.get``, ``queue.purge``...)."""
    return NotImplementedByBroker(
        f"NOT_IMPLEMENTED - {operation} not supported by stream queues "
        f"queue '{queue.name}' in vhost '/'"
    )


class StreamState(QueueState):
    """A stream: an append-only log of messages by offset, and each consumer's place in it.

    ``ready`` stays empty (nothing waits to be taken once): the broker's queue
    paths that look at it find nothing to do, and a returned delivery is not
    put back (:meth:`put_back`), since it never left.
    """

    __slots__ = ("_at", "_base", "_head", "_log", "journal", "log_bytes", "max_age", "positions")

    def __init__(
        self, name: str, arguments: dict[str, Any], journal: Journal | None = None
    ) -> None:
        QueueState.__init__(self, name, True, None, False, arguments)
        self.journal = journal
        self.max_age = max_age_seconds(arguments.get("x-max-age"))
        # The log from offset _base on (a list and a start index: reading by offset is O(1)).
        self._log: list[Entry] = []
        self._at: list[float] = []  # append times (wall clock, never going back)
        self._base = 0
        self._head = 0
        self.log_bytes = 0
        #: Each consumer's next offset, by consumer tag.
        self.positions: dict[str, int] = {}

    @property
    def first_offset(self) -> int:
        """The oldest offset still kept."""
        return self._base + self._head

    @property
    def next_offset(self) -> int:
        """The offset the next appended message gets."""
        return self._base + len(self._log)

    def __len__(self) -> int:
        return len(self._log) - self._head

    def append(self, message: Message, now: float | None = None) -> None:
        """Append a published message under the next offset, then apply retention."""
        entry = Entry(message)
        if self.journal is not None and message.properties.delivery_mode == PERSISTENT:
            entry = self.journal.entered(self.name, entry)  # kept without its offset
        self.push(entry, now)

    def push(self, entry: Entry, now: float | None = None) -> None:
        """Append an entry (a new one, or one recovered from the journal) under the next
        offset. Its message gets the header ``x-stream-offset`` when it is delivered:
        a stream is written on every publish and read far less."""
        wall = time.time() if now is None else now
        self._at.append(max(wall, self._at[-1]) if self._at else wall)
        self._log.append(entry)
        self.log_bytes += entry.size
        self.retain(wall)

    def retain(self, now: float) -> None:
        """Drop the oldest messages past ``x-max-length-bytes`` or older than ``x-max-age``."""
        max_bytes, max_age = self.max_length_bytes, self.max_age
        while len(self) > 1 and (
            (max_bytes is not None and self.log_bytes > max_bytes)
            or (max_age is not None and self._at[self._head] < now - max_age)
        ):
            entry = self._log[self._head]
            self.log_bytes -= entry.size
            if self.journal is not None:
                self.journal.left(self.name, entry)
            self._head += 1
        if self._head > 1024 and self._head * 2 > len(self._log):
            del self._log[: self._head], self._at[: self._head]
            self._base += self._head
            self._head = 0

    def entry(self, offset: int) -> Entry:
        """The message at ``offset`` (between :attr:`first_offset` and :attr:`next_offset`)."""
        return self._log[offset - self._base]

    def offset_at(self, when: float) -> int:
        """The first offset appended at or after ``when`` (seconds since the epoch)."""
        index = bisect.bisect_left(self._at, when, lo=self._head)
        return self._base + index

    def put_back(self, entry: Entry, *, returned: bool = False) -> None:
        """Nothing to put back: a stream's messages never leave it."""

    def clear(self) -> None:
        """Drop everything (the queue is being deleted)."""
        self._log.clear()
        self._at.clear()
        self._base += self._head
        self._head = self.log_bytes = 0


def start_offset(stream: StreamState, spec: object) -> int:
    """Where a consumer starts, from its ``x-stream-offset`` argument (RabbitMQ's reading).

    ``next`` (or none) waits for new messages, ``first`` starts at the oldest
    kept, ``last`` at the newest; an offset before the oldest starts at the
    oldest, one past the end waits for that offset (what comes before it is not
    delivered); a timestamp starts at the first message appended then or later.
    """
    first, end = stream.first_offset, stream.next_offset
    if spec is None or spec == "next":
        return end
    if spec == "first":
        return first
    if spec == "last":
        return end - 1 if end > first else end
    if isinstance(spec, int) and not isinstance(spec, bool):
        return max(spec, first)
    if isinstance(spec, datetime):
        when = spec if spec.tzinfo is not None else spec.replace(tzinfo=UTC)
        return stream.offset_at(when.timestamp())
    raise PreconditionFailed(
        f"PRECONDITION_FAILED - invalid x-stream-offset {spec!r} for queue '{stream.name}' "
        "in vhost '/': use first, last, next, an offset or a timestamp"
    )


def next_for(stream: StreamState, consumer: ConsumerState) -> Entry | None:
    """The next message for ``consumer``, moving its place on; None when it has read all."""
    position = max(stream.positions.get(consumer.tag, stream.next_offset), stream.first_offset)
    if position >= stream.next_offset:
        return None
    stream.positions[consumer.tag] = position + 1
    message = stream.entry(position).message
    headers = {**message.properties.headers, "x-stream-offset": position}
    return Entry(replace(message, properties=replace(message.properties, headers=headers)))


def dispatch(
    stream: StreamState, deliver: Callable[[QueueState, ConsumerState, Entry], None]
) -> None:
    """Hand each consumer what it has not read yet, as far as its prefetch lets it."""
    for consumer in list(stream.consumers):
        while consumer.has_capacity and (entry := next_for(stream, consumer)) is not None:
            deliver(stream, consumer, entry)


def attach(stream: StreamState, tag: str, position: int) -> None:
    """Place a new consumer (from :func:`start_offset`); forget the places of gone ones."""
    live = {c.tag for c in stream.consumers}
    for gone in [t for t in stream.positions if t not in live]:
        del stream.positions[gone]
    stream.positions[tag] = position
