"""Lanes: what every worker pool supplies, and the decoding and writing they share.

A pool (:mod:`logbus.worker.pools`) supplies ``concurrency`` *lanes*, each
turning a batch of deliveries into one :data:`Result` per delivery, wherever the
sink lives: :func:`handle_batch` decodes and writes in this process or in a
worker process (:mod:`logbus.worker.processes`) alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from logbus.errors import ConfigError, DecodeError, LogbusError
from logbus.record import LogRecord, decode
from logbus.sinks import Sink
from logbus.sinks._partial import write_rest
from logbus.worker.retry import stored_of

if TYPE_CHECKING:
    from logbus.message import Message
    from logbus.transports.base import Delivery

__all__ = [
    "POOL_KINDS",
    "Lane",
    "Pool",
    "PoolKind",
    "PoolWorkerLost",
    "RemoteSinkError",
    "Result",
    "Undecodable",
    "handle_batch",
    "write_batch",
]

PoolKind = Literal["thread", "process", "gevent"]
#: The pools ``make_pool`` (and ``logbus worker --pool``) knows.
POOL_KINDS: tuple[PoolKind, ...] = ("thread", "process", "gevent")


@dataclass(frozen=True, slots=True)
class Undecodable:
    """The result for a message that is not a record: rejected, never retried."""

    reason: str


#: One delivery's fate: None (stored: ack), Undecodable (reject), or the sink's failure.
Result = Exception | Undecodable | None


class PoolWorkerLost(LogbusError):
    """A pool's worker process died with records in hand; they go back to the queue."""

    recoverable = True


class RemoteSinkError(Exception):
    """A sink failure reported by a worker process: its type, message and recoverability
    (and, from a multi-sink, the sinks that stored the record all the same)."""

    def __init__(
        self, kind: str, message: str, *, recoverable: bool, stored: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(f"{kind}: {message}")
        self.recoverable = recoverable  # what is_recoverable() reads
        self.stored = stored  # what stored_by() reads


class Lane(Protocol):
    """One unit of a pool's concurrency, used by one thread (or greenlet) of the worker."""

    def handle(self, deliveries: Sequence[Delivery]) -> list[Result]:
        """Decode and write a batch: a result per delivery, in order. Raises
        :class:`PoolWorkerLost` if a worker process died with them (requeue them)."""
        ...

    def close(self) -> None:
        """Release what the lane holds; idempotent, never raises."""
        ...


class Pool(Protocol):
    """Where a worker's records are decoded and written: threads, processes or greenlets."""

    kind: PoolKind
    unit: str  # what one unit of concurrency is called: thread, process, greenlet
    replaced: int  # worker processes replaced after they died

    def open(self, concurrency: int, name: str) -> list[Lane]:
        """Acquire the sink (in each process, for the process pool); ``concurrency`` lanes."""
        ...

    def close(self) -> None:
        """Release the sink and every lane; called once, after the lanes' threads ended."""
        ...


# -- decoding and writing, wherever the sink lives ---------------------------------------


def write_batch(
    sink: Sink, records: list[LogRecord], stored: Sequence[frozenset[str]] | None = None
) -> list[Exception | None]:
    """The sink's result per record; raises ``ConfigError`` if the sink breaks its contract.

    ``stored`` names, per record, the sinks of a multi-sink that have it already
    (:mod:`logbus.sinks._partial`). A batch whose write raised is written again one
    record at a time, so that one bad record does not fail the others.
    """
    results = _write(sink, records, stored or [frozenset()] * len(records))
    if len(results) != len(records):
        raise ConfigError(
            f"sink {sink!r} returned {len(results)} results for a batch of "
            f"{len(records)} records; a sink returns one per record (a bug in the sink)"
        )
    return results


def _write(
    sink: Sink, records: list[LogRecord], stored: Sequence[frozenset[str]]
) -> list[Exception | None]:
    try:
        return list(write_rest(sink, records, stored))
    except Exception as exc:
        if len(records) == 1:
            return [exc]
    return [
        result
        for record, done in zip(records, stored, strict=True)
        for result in _write(sink, [record], [done])
    ]


def handle_batch(sink: Sink, messages: Sequence[Message]) -> list[Result]:
    """Decode ``messages`` and write what decoded in one sink call; a result per message."""
    results: list[Result] = [None] * len(messages)
    records: list[LogRecord] = []
    stored: list[frozenset[str]] = []
    positions: list[int] = []
    for position, message in enumerate(messages):
        try:
            records.append(decode(message.body, message.properties, message.routing_key))
        except DecodeError as exc:
            results[position] = Undecodable(str(exc))
        else:
            positions.append(position)
            stored.append(stored_of(message.properties))
    if records:
        for position, result in zip(positions, write_batch(sink, records, stored), strict=True):
            results[position] = result
    return results
