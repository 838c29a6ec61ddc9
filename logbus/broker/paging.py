"""Paged queue entries: a durable queue's persistent messages live in the journal, not in RAM.

RabbitMQ's lazy queue keeps a small index entry per message in memory and the
message itself on disk, read back when it is delivered; its default classic
queue keeps messages in memory too, and pages them out when memory runs short
(at half of the high watermark: ``vm_memory_high_watermark_paging_ratio``). A
broker with a journal does the same. When a persistent message enters a
durable queue, the journal writes it and hands back a :class:`PagedEntry`,
which keeps where the record is (offset and size in the journal file), the
body's length (for ``x-max-length-bytes``), what the queue needs to order and
expire it, and — unless the queue is lazy (``x-queue-mode=lazy``) or the
broker is paging — the message itself in ``cached``. Paging out drops
``cached``; from then on ``message`` is read from the journal each time it is
asked for (delivery, dead-lettering): from the journal's buffer while the
record has not reached the file yet, else with one ``pread``. Reading back
costs a decode (some 25 µs for a log record), which is why a queue that fits
in memory keeps its messages. The journal keeps the same entries as its index
of live records, so compaction moves a record and updates its entry's offset
in one place.

Why the whole message and not only the body: a log record's body is a few
hundred bytes, about what its properties, headers and ``Message`` objects take
in Python; paging only the body would halve nothing. The index entry is one
slots object of a few integers.

Transient messages, non-durable queues and brokers without a journal keep
their messages in RAM, bounded by the memory watermark
(:mod:`logbus.broker.watermark`) instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from logbus.broker.queues import Entry, QueueState
from logbus.message import PERSISTENT, Message

if TYPE_CHECKING:
    from logbus.broker.journal import Journal

__all__ = [
    "PAGED_OVERHEAD",
    "RESIDENT_OVERHEAD",
    "JournaledEntry",
    "JournaledQueue",
    "PagedEntry",
    "Pages",
]

#: Bytes an in-RAM entry costs beyond its body: ``Entry``, ``Message``, ``Properties``,
#: their strings and headers, and the queue's slot. Measured with tracemalloc: about
#: 1,190 for a record as ``logbus emit`` publishes it (message id, four headers), a few
#: hundred for a bare message; the estimate leans to the former, to alarm early.
RESIDENT_OVERHEAD = 1000
#: Bytes a paged entry costs: the entry with its integers and the journal's index slot
#: (measured: about 290).
PAGED_OVERHEAD = 300


@dataclass(slots=True)
class JournaledEntry(Entry):
    """A queue entry whose message is in the journal under ``id``."""

    id: int = 0


class Pages(Protocol):
    """Where paged entries read their messages back from (the journal)."""

    def read_message(self, entry: PagedEntry) -> Message:
        """The message of ``entry``, read from the journal."""
        ...


class PagedEntry(JournaledEntry):
    """A journaled entry that may drop its message and read it back from ``pages`` on demand.

    ``offset`` and ``record`` locate the message's record in the journal (the
    journal moves them when it compacts); ``length`` is the body's size.
    """

    __slots__ = ("cached", "length", "offset", "pages", "record")

    def __init__(
        self,
        pages: Pages,
        ident: int,
        offset: int,
        record: int,
        length: int,
        expires_at: float | None = None,
        redelivered: bool = False,
        cached: Message | None = None,
    ) -> None:
        # The message slot inherited from Entry stays empty: ``message`` below shadows it.
        self.expires_at = expires_at
        self.redelivered = redelivered
        self.seq = 0
        self.id = ident
        self.pages = pages
        self.offset = offset
        self.record = record
        self.length = length
        self.cached = cached

    @property
    def message(self) -> Message:  # type: ignore[override]  # read-only, over the slot
        """The message: the one kept in memory, else read back from the journal."""
        cached = self.cached
        return cached if cached is not None else self.pages.read_message(self)

    @property
    def size(self) -> int:
        """Body size in bytes, as ``x-max-length-bytes`` counts it (no disk read)."""
        return self.length

    # Identity, not the dataclass's field-by-field comparison (which would read the disk).
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"PagedEntry(id={self.id}, offset={self.offset}, length={self.length})"


class JournaledQueue(QueueState):
    """A durable queue of a broker with a journal: persistent messages are written on entry.

    A persistent message gets a :class:`~logbus.broker.paging.PagedEntry`: kept in
    memory too, unless the queue is lazy (``x-queue-mode=lazy``) or the journal is
    paging. The queue counts its entries paged out in ``paged`` and ``paged_bytes``,
    which the memory accounting subtracts from what it holds in RAM.
    """

    __slots__ = ("journal", "lazy", "paged", "paged_bytes")

    def __init__(
        self, journal: Journal, name: str, auto_delete: bool, arguments: dict[str, Any]
    ) -> None:
        QueueState.__init__(self, name, True, None, auto_delete, arguments)
        self.journal = journal
        self.lazy = arguments.get("x-queue-mode") == "lazy"
        self.paged = self.paged_bytes = 0

    def push(self, entry: Entry) -> None:
        """Append a message at the tail, writing it ahead when it is persistent."""
        if type(entry) is Entry and entry.message.properties.delivery_mode == PERSISTENT:
            entry = self.journal.entered(
                self.name, entry, keep=not (self.lazy or self.journal.paging)
            )
        if type(entry) is PagedEntry and entry.cached is None:
            self.paged += 1
            self.paged_bytes += entry.length
        QueueState.push(self, entry)

    def put_back(self, entry: Entry, *, returned: bool = False) -> None:
        """Requeue a message where RabbitMQ puts it back (see :meth:`QueueState.put_back`)."""
        if type(entry) is PagedEntry and entry.cached is None:
            self.paged += 1
            self.paged_bytes += entry.length
        QueueState.put_back(self, entry, returned=returned)

    def pop(self) -> Entry:
        """Take the message at the head."""
        entry = QueueState.pop(self)
        if type(entry) is PagedEntry and entry.cached is None:
            self.paged -= 1
            self.paged_bytes -= entry.length
        return entry

    def page_out(self) -> int:
        """Drop the messages its ready entries keep in memory; how many were dropped."""
        dropped = 0
        for entry in self.ready:
            if type(entry) is PagedEntry and entry.cached is not None:
                entry.cached = None
                self.paged_bytes += entry.length
                dropped += 1
        self.paged += dropped
        return dropped

    def clear(self) -> None:
        """Drop every ready message (``queue.purge``)."""
        QueueState.clear(self)
        self.paged = self.paged_bytes = 0
