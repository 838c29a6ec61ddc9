"""How a worker batches for its sink: the sink's hints, the default prefetch, taking a batch.

A sink says how it likes its records with two attributes: ``max_batch``, the
most records in one ``write`` (100 if it does not say), and ``max_wait``, how
long a thread of the worker may wait for a batch to fill (0 if it does not
say: hand over what is already waiting, no more — and only the thread's share
of it, so that the other threads get records to work on too).

*Prefetch.* RabbitMQ hands a consumer at most ``prefetch`` unacked records and
the rest to whichever consumer has room, so a slow worker keeps only
``prefetch`` records from the others. The default, :func:`default_prefetch`,
is *two batches per thread, process or greenlet, at least 10*: each has one
batch in hand and one filling, which hides the round trip of the acks, and a
slow worker holds on to little. A batch is ``max_batch`` records for a sink that
waits to fill batches (with less, no batch could ever fill and every write
would wait ``max_wait``), else one record (taking what is waiting needs no
more). Raise it for a fast sink on a distant broker; set 1 for strict fairness.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from queue import Empty, Queue
from typing import Any, TypeVar

from logbus.errors import ConfigError
from logbus.sinks import Sink, load_sink

__all__ = [
    "DEFAULT_MAX_BATCH",
    "MAX_BATCH",
    "MAX_WAIT",
    "Batching",
    "batching_of",
    "default_prefetch",
    "gather",
]

#: Records handed to the sink in one write when the sink does not say (its ``max_batch``).
DEFAULT_MAX_BATCH = 100
#: The most records a sink may ask for in one write.
MAX_BATCH = 100_000
#: The longest a sink may ask a thread to wait for a batch to fill (its ``max_wait``).
MAX_WAIT = 60.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Batching:
    """A sink's batching hints, checked."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_wait: float = 0.0

    @property
    def unit(self) -> int:
        """Records in one batch as the prefetch counts them (see the module docstring)."""
        return self.max_batch if self.max_wait > 0 else 1


def default_prefetch(concurrency: int, batch: int = 1) -> int:
    """The prefetch for a pool of ``concurrency``: two batches of ``batch`` records per
    thread (process, greenlet), at least 10 and at most AMQP's 65535."""
    return min(65535, max(10, 2 * concurrency * batch))


def batching_of(sink: Sink | str) -> Batching:
    """The sink's batching hints; a spec (``jsonl:PATH``) is loaded, not opened, to read them.

    Hints out of range are the sink's bug, reported as :class:`ConfigError`.
    """
    target = load_sink(sink) if isinstance(sink, str) else sink
    max_batch: Any = getattr(target, "max_batch", DEFAULT_MAX_BATCH)
    if type(max_batch) is not int or not 1 <= max_batch <= MAX_BATCH:  # a bool is no count
        raise ConfigError(
            f"sink {target!r} has max_batch={max_batch!r}; a batch holds 1..{MAX_BATCH} "
            "records (a bug in the sink)"
        )
    max_wait: Any = getattr(target, "max_wait", 0.0)
    if type(max_wait) not in (int, float) or not 0 <= max_wait <= MAX_WAIT:
        raise ConfigError(
            f"sink {target!r} has max_wait={max_wait!r}; a thread waits 0..{MAX_WAIT:g} "
            "seconds for a batch to fill (a bug in the sink)"
        )
    return Batching(max_batch, float(max_wait))


def gather(work: Queue[T | None], first: T, *, limit: int, wait: float = 0.0) -> list[T]:
    """A batch beginning with ``first``: up to ``limit`` items from ``work``, waiting up to
    ``wait`` seconds for them (0: only those already there).

    A None in ``work`` is a thread's cue to stop: it ends the batch and is put back,
    for the caller's loop to see.
    """
    batch = [first]
    deadline = time.monotonic() + wait
    while len(batch) < limit:
        left = deadline - time.monotonic()
        try:
            more = work.get(timeout=left) if left > 0 else work.get_nowait()
        except Empty:
            break
        if more is None:
            work.put(None)
            break
        batch.append(more)
    return batch
