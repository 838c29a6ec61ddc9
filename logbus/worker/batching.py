"""How a worker batches for its sink: the sink's hints, the default prefetch, taking a batch.

A sink says how it likes its records with two attributes: ``max_batch``, the
most records in one ``write`` (100 if it does not say), and ``max_wait``, how
long a thread of the worker may wait for a batch to fill (0 if it does not
say: hand over what is already waiting, no more — and only the thread's share
of it, so that the other threads get records to work on too).

*Prefetch.* RabbitMQ hands a consumer at most ``prefetch`` unacked records and
the rest to whichever consumer has room, so a slow worker keeps only
``prefetch`` records from the others. The default, :func:`default_prefetch`,
is *two batches per thread, process or greenlet, at least 2000*: each has one
batch in hand and one filling, which hides the round trip of the acks. The
floor keeps enough records in flight that a worker is not bound by round trips
to the broker: an ack has to reach the broker and the records it makes room for
have to come back, through one Python thread shared with the sink's, while the
worker goes on at 25k records/s or so. Measured here (``bench/cli.py`` (c), one
worker of two threads into jsonl), draining runs at about 17k records/s with a
prefetch of 100, 19k at 400, 23k at 1000, 25k at 2000 and no faster beyond; at
10, every consumer, bare pika included, stalls at about 9k. The price is the
fairness towards a worker that is stuck: it holds on to up to 2000 records
until it dies or recovers (log records are small: that is a few megabytes).
Set ``--prefetch`` lower where that matters more than speed, down to 1 for
strict fairness with slow work; raise it for a fast sink on a distant broker.
A batch is ``max_batch`` records for a sink that waits to fill batches (with
less, no batch could ever fill and every write would wait ``max_wait``), else
one record (taking what is waiting needs no more).

*Taking batches.* The worker's threads take their batches from the consumer
themselves, through a :class:`Taker`: one thread at a time (a lock) takes
whatever the consumer has received, up to ``max_batch``, in one call, keeps its
share and leaves the rest for the next thread. So a record passes no queue
between threads on its way from the transport to the sink, and the thread that
took a batch writes it while the next thread takes the next one. Only one
thread ever waits in the consumer's ``get``, which matters: the consumers wait
on a ``queue.SimpleQueue``, whose ``get`` with a timeout can, with several
threads waiting, miss its deadline and block until the next message arrives
(seen on CPython 3.11).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from logbus.errors import ConfigError, ConnectionLost
from logbus.sinks import Sink, load_sink
from logbus.transports.base import Consumer, Delivery, get_many

__all__ = [
    "DEFAULT_MAX_BATCH",
    "MAX_BATCH",
    "MAX_WAIT",
    "Batching",
    "Taker",
    "batching_of",
    "default_prefetch",
]

#: Records handed to the sink in one write when the sink does not say (its ``max_batch``).
DEFAULT_MAX_BATCH = 100
#: The most records a sink may ask for in one write.
MAX_BATCH = 100_000
#: The longest a sink may ask a thread to wait for a batch to fill (its ``max_wait``).
MAX_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class Batching:
    """A sink's batching hints, checked."""

    max_batch: int = DEFAULT_MAX_BATCH
    max_wait: float = 0.0

    @property
    def unit(self) -> int:
        """Records in one batch as the prefetch counts them (see the module docstring)."""
        return self.max_batch if self.max_wait > 0 else 1


#: The least default prefetch: enough in flight that the acks' round trips do not bound us.
PREFETCH_FLOOR = 2000


def default_prefetch(concurrency: int, batch: int = 1) -> int:
    """The prefetch for a pool of ``concurrency``: two batches of ``batch`` records per
    thread (process, greenlet), at least :data:`PREFETCH_FLOOR` and at most AMQP's 65535."""
    return min(65535, max(PREFETCH_FLOOR, 2 * concurrency * batch))


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


class Taker:
    """Hands the threads of a worker batches from one consumer (see the module docstring).

    ``stopping`` says whether the worker is stopping: then :meth:`take` hands out
    nothing more. ``received``, if given, is told how many deliveries each call
    to the consumer brought. ``poll`` is how often a thread waiting for records
    looks at ``stopping``.
    """

    def __init__(
        self,
        consumer: Consumer,
        batching: Batching,
        concurrency: int,
        prefetch: int,
        *,
        stopping: Callable[[], bool],
        received: Callable[[int], object] | None = None,
        poll: float = 0.2,
    ) -> None:
        self.consumer = consumer
        self.max_batch = batching.max_batch
        self.max_wait = batching.max_wait
        self.concurrency = concurrency
        self.prefetch = prefetch
        self._stopping = stopping
        self._received = received
        self._poll = poll
        self._lock = threading.Lock()
        # Received from the consumer and nobody's yet: the next thread's to take.
        self._spill: list[Delivery] = []

    def take(self) -> list[Delivery]:
        """The calling thread's next batch, waiting for it; empty once stopping.

        Raises :class:`~logbus.errors.ConnectionLost` if the broker cancelled the
        consumer (the queue was deleted, say).
        """
        with self._lock:
            while not self._stopping():
                if self._fill():
                    return self._share()
        return []

    def cancel(self) -> list[Delivery]:
        """Cancel the consumer while no thread takes from it; what it had received and
        nobody had taken (for the caller to requeue). Raises what the cancel raised."""
        with self._lock:
            self.consumer.cancel()
            left = self.leftovers()
            # What the broker sent before the cancel took effect.
            while len(left) < self.prefetch:
                more = get_many(self.consumer, self.prefetch - len(left), timeout=0)
                if not more:
                    break
                left.extend(more)
            return left

    def leftovers(self) -> list[Delivery]:
        """What was received and not taken (a thread that failed left it); forgotten here."""
        left, self._spill = self._spill, []
        return left

    def _fill(self) -> bool:
        """Receive into the spill what the next batch may hold; whether there is any."""
        spill = self._spill
        room = self.max_batch - len(spill)
        if room > 0:
            # Waiting only for a first record: with some in hand, take what is there.
            self._receive(room, 0.0 if spill else self._poll)
        if not spill:
            if getattr(self.consumer, "cancelled", False) is True and not self._stopping():
                raise ConnectionLost(
                    f"the broker stopped the consumer of queue {self.consumer.queue!r} (was "
                    "the queue deleted?); its records are safe in the queue, start again"
                )
            return False
        if self.max_wait > 0:
            deadline = time.monotonic() + self.max_wait
            while len(spill) < self.max_batch and not self._stopping():
                left = deadline - time.monotonic()
                if left <= 0 or getattr(self.consumer, "cancelled", False) is True:
                    break
                self._receive(self.max_batch - len(spill), min(left, self._poll))
        return True

    def _receive(self, limit: int, timeout: float) -> None:
        more = get_many(self.consumer, limit, timeout)
        if more:
            self._spill.extend(more)
            if self._received is not None:
                self._received(len(more))

    def _share(self) -> list[Delivery]:
        """This thread's part of the spill: a full batch for a sink that waits to fill
        them, else its share of what is waiting, so that the other threads get some too."""
        spill = self._spill
        if self.max_wait > 0:
            count = min(len(spill), self.max_batch)
        else:
            count = 1 + (len(spill) - 1) // self.concurrency
        if count >= len(spill):
            self._spill = []
            return spill
        batch = spill[:count]
        del spill[:count]
        return batch
