"""``Emitter.emit_stream``: ``emit_many`` without its end-of-batch wait.

A producer that keeps going (the ingest gateway's publisher, ``logbus emit
--spool``) wants each record answered as its confirm comes, not a batch at a
time with a pause at the end of each while the confirm window drains. On the pika
transport this is its one publishing engine (``publish_stream``: the same window,
re-sends and failures as ``publish_many``), fed continuously; on a transport
without it, or with several targets (each confirmed on its own), each take is
published as one ``emit_many`` batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from logbus._targets import encode, message_for
from logbus.message import Message
from logbus.record import LogRecord

if TYPE_CHECKING:
    from logbus.emitter import Emitter

__all__ = ["emit_stream"]

Take = Callable[[int], tuple[list[LogRecord], bool]]
_BATCH = 5000


def emit_stream(emitter: Emitter, take: Take, progress: Callable[[int], None]) -> int:
    """See :meth:`Emitter.emit_stream <logbus.emitter.Emitter.emit_stream>`."""
    transport = emitter.transport
    count = 0
    stream = getattr(transport, "publish_stream", None)
    if len(emitter.targets) == 1 and stream is not None:
        [target] = emitter.targets

        def messages(room: int) -> tuple[list[Message], bool]:
            nonlocal count
            records, more = take(room)
            count += len(records)
            return [message_for(encode(r), target) for r in records], more

        stream(messages, progress, mandatory=target.mandatory)
        return count
    more = True
    while more:
        records, more = take(_BATCH)
        if records:
            emitter.emit_many(records)
            count += len(records)
            progress(len(records))
    return count
