"""Records that some of several sinks stored: the others alone try again.

A service may write each record to several sinks (``[[sinks]]``: the console
and a webhook, say). When one of them fails, the record goes back through the
retry queues, but the sinks that stored it must not be asked again: a console
would print an alert twice, a pager would page twice. So a multi-sink (the
service's :class:`~logbus.service.TeeSink`) answers such a record with
:class:`PartlyStored`, naming the sinks that have it; the worker writes those
names into the record's ``x-logbus-stored`` header on its way to the delay
queue (:mod:`logbus.worker.retry`), like the attempt count; and on the next attempt
:func:`write_rest` hands the sink each record with the names it already has,
through the sink's ``write_rest`` method when it has one. A sink without one is
a single sink, written to as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from logbus.record import LogRecord
from logbus.sinks import Sink

__all__ = ["PartlyStored", "SettlesApart", "stored_by", "write_rest"]


class PartlyStored(Exception):
    """The record is in the sinks named ``stored``; ``error`` is why another failed.

    Recoverable as ``error`` is: the worker retries it (on the other sinks only).
    """

    def __init__(self, error: Exception, stored: frozenset[str]) -> None:
        from logbus.sinks import is_recoverable

        super().__init__(str(error))
        self.error = error
        self.stored = stored
        self.recoverable = is_recoverable(error)  # what is_recoverable() reads


@runtime_checkable
class SettlesApart(Protocol):
    """A sink made of several, each settling a record on its own."""

    def write_rest(
        self, batch: Sequence[LogRecord], stored: Sequence[frozenset[str]]
    ) -> Sequence[Exception | None]:
        """Write each record to those of its sinks not named in ``stored`` (one set per
        record); a result per record, :class:`PartlyStored` when some sinks have it."""
        ...


def stored_by(exc: BaseException) -> frozenset[str]:
    """The sinks a failed record is stored in anyway (none for a plain failure)."""
    stored = getattr(exc, "stored", None)
    return stored if isinstance(stored, frozenset) else frozenset()


def write_rest(
    sink: Sink, batch: Sequence[LogRecord], stored: Sequence[frozenset[str]]
) -> Sequence[Exception | None]:
    """``sink.write_rest(batch, stored)`` for a sink that settles apart, else ``sink.write``."""
    if isinstance(sink, SettlesApart):
        return sink.write_rest(batch, stored)
    return sink.write(batch)
