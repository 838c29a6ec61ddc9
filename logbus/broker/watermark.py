"""The memory high watermark of a served broker, as RabbitMQ's ``vm_memory_high_watermark``.

A :class:`Watermark` samples what the broker holds every ``interval`` seconds
and raises its alarm when that passes ``limit``; a served broker then stops
reading from every connection that publishes (:mod:`logbus.broker.server`),
after telling it so (a ``blocked`` frame, RabbitMQ's ``connection.blocked``),
so its publishes go unconfirmed until their confirm timeout. Consumers keep
draining; once the figure falls below the limit the alarm clears and the
blocked connections are read again.

What is measured is the broker's *accounted* memory, not the process's RSS:
the bodies it holds in RAM plus a per-message estimate of the objects around
each one (:data:`~logbus.broker.paging.RESIDENT_OVERHEAD`), and the small
index entry of each paged message (:data:`~logbus.broker.paging.PAGED_OVERHEAD`).
Why: it is exact at every sample and costs a sum over queues, not a walk of
the heap; and it falls as soon as messages leave, whereas RSS stays high after
a drain until the allocator gives pages back (and then only if it can), which
would hold publishers blocked on an empty broker. RSS (from ``/proc``) is
reported beside it for the operator and the benchmarks.

Below the alarm, a broker with a journal pages: once what it holds passes
:data:`PAGING_RATIO` of the limit, durable queues drop the persistent messages
they keep in memory and page new ones at once (read back from the journal on
delivery), until it falls below half of that again — RabbitMQ's
``vm_memory_high_watermark_paging_ratio``.

After a drain (what is held fell below a quarter of its peak, by at least
:data:`TRIM_BYTES`) the sampler gives memory back to the system with glibc's
``malloc_trim`` where there is one: Python frees the broker's objects as they
go (they hold no cycles; a ``gc.collect`` was measured to free nothing more),
but glibc keeps freed heap pages mapped until asked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from logbus._log import get_logger
from logbus.broker.paging import PAGED_OVERHEAD, RESIDENT_OVERHEAD, JournaledQueue, PagedEntry
from logbus.broker.queues import QueueState, SessionState
from logbus.broker.streams import StreamState

__all__ = [
    "DEFAULT_SHARE",
    "PAGING_RATIO",
    "TRIM_BYTES",
    "MemoryReport",
    "Watermark",
    "accounted",
    "default_limit",
    "give_back",
    "rss_bytes",
]

log = get_logger(__name__)

#: The share of the machine's memory the default limit is (RabbitMQ's default 0.4).
DEFAULT_SHARE = 0.4
#: The share of the limit above which durable queues page their messages out (RabbitMQ's 0.5).
PAGING_RATIO = 0.5
#: How much must have been freed since the peak before memory is given back.
TRIM_BYTES = 8 << 20


def accounted(queues: Iterable[QueueState], sessions: Iterable[SessionState]) -> int:
    """Bytes held for messages: ready ones per queue, a stream's log, and every
    unacknowledged delivery."""
    total = 0
    for queue in queues:
        if isinstance(queue, StreamState):  # its log, kept in memory until retention drops it
            total += len(queue) * RESIDENT_OVERHEAD + queue.log_bytes
            continue
        count, body_bytes = len(queue.ready), queue.ready_bytes
        if isinstance(queue, JournaledQueue) and queue.paged:
            total += queue.paged * PAGED_OVERHEAD
            count -= queue.paged
            body_bytes -= queue.paged_bytes
        total += count * RESIDENT_OVERHEAD + body_bytes
    for session in sessions:
        for unacked in session.unacked.values():
            entry = unacked.entry
            if type(entry) is PagedEntry and entry.cached is None:
                total += PAGED_OVERHEAD
            else:
                total += RESIDENT_OVERHEAD + entry.size
    return total


def default_limit() -> int:
    """:data:`DEFAULT_SHARE` of this machine's physical memory (1 GiB if it cannot tell)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 1 << 30
    return int(pages * page_size * DEFAULT_SHARE)


def rss_bytes(pid: int | str = "self") -> int | None:
    """The resident set size of a process, from ``/proc`` (None where there is none)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _load_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: gc alone
        return None


_malloc_trim = _load_trim()


def give_back() -> None:
    """Return freed heap memory to the system: ``malloc_trim(0)`` on glibc, else nothing."""
    if _malloc_trim is not None:
        _malloc_trim(0)


@dataclass(frozen=True, slots=True)
class MemoryReport:
    """What the watermark last saw: accounted bytes, the limit, the alarm, the RSS."""

    accounted: int
    limit: int
    alarmed: bool
    rss: int | None


class Watermark:
    """Sample ``held()`` every ``interval`` seconds; alarm above ``limit``, clear below.

    ``held`` is the broker's accounting (:meth:`~logbus.broker.Broker.held_bytes`);
    ``page``, when given, is called with True when what is held passes
    :data:`PAGING_RATIO` of the limit and with False when it falls below half
    of that (:meth:`~logbus.broker.Broker.page`).
    Call :meth:`start` to run the sampler thread and :meth:`close` to stop it;
    :meth:`sample` takes one sample now (tests, and the server after a drain).
    """

    def __init__(
        self,
        held: Callable[[], int],
        limit: int,
        *,
        interval: float = 0.1,
        page: Callable[[bool], object] | None = None,
    ) -> None:
        if limit <= 0:
            raise ValueError(f"the memory limit must be positive, not {limit!r}")
        self.limit = limit
        self.interval = interval
        self._held = held
        self._page = page
        self._paging = False
        self._changed = threading.Condition()
        self._alarmed = False
        self._last = 0
        self._peak = 0  # the most held since memory was last given back
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def alarmed(self) -> bool:
        """Whether publishers are to be blocked (read without a lock: a flag)."""
        return self._alarmed

    def start(self) -> Watermark:
        """Start sampling in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="logbus-broker-watermark", daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop sampling and release whoever waits for the alarm to clear."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def sample(self) -> int:
        """Measure now, raise or clear the alarm; returns the accounted bytes."""
        held = self._held()
        with self._changed:
            self._last = held
            alarmed = held >= self.limit
            if alarmed != self._alarmed:
                self._alarmed = alarmed
                self._changed.notify_all()
                log.warning(
                    "broker.memory_alarm" if alarmed else "broker.memory_alarm_cleared",
                    accounted=held,
                    limit=self.limit,
                )
        if self._page is not None:
            self._follow_paging(held)
        self._peak = max(self._peak, held)
        if self._peak - held >= TRIM_BYTES and held < self._peak // 4:
            log.debug("broker.memory_given_back", accounted=held, peak=self._peak)
            give_back()
            self._peak = held
        return held

    def _follow_paging(self, held: int) -> None:
        mark = self.limit * PAGING_RATIO
        paging = held >= mark if not self._paging else held >= mark / 2
        if paging != self._paging and self._page is not None:
            self._paging = paging
            dropped = self._page(paging)
            log.info(
                "broker.paging" if paging else "broker.paging_ended",
                accounted=held,
                dropped=dropped,
            )

    def wait_clear(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the alarm to clear; whether it has."""
        with self._changed:
            if self._alarmed and not self._stop.is_set():
                self._changed.wait(timeout)
            return not self._alarmed

    def report(self) -> MemoryReport:
        """The last sample, the limit, the alarm and this process's RSS."""
        return MemoryReport(self._last, self.limit, self._alarmed, rss_bytes())

    def _run(self) -> None:
        pause = self.interval
        while not self._stop.wait(pause):
            started = time.monotonic()
            try:
                self.sample()
            except Exception:  # the sampler must outlive a bug in one sample
                log.exception("broker.memory_sample_failed")
            # A sample walks every unacked delivery under the broker's lock: when there
            # are very many, sample less often, so that it never takes over 5 % of the time.
            pause = max(self.interval, 20 * (time.monotonic() - started))
