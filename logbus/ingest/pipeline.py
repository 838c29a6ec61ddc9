"""The gateway's publisher: one thread that moves parsed records into RabbitMQ, confirmed.

Listeners hand over :class:`Pending` records with :meth:`Pipeline.put` (from any
thread; the gateway's event loop). The publisher thread streams what
arrives into :meth:`Emitter.emit_stream <logbus.emitter.Emitter.emit_stream>` —
the engine of ``logbus emit``'s stdin batches (one pika transport, its confirm
window), without a wait at the end of each batch: records keep flowing into the
window while earlier ones are confirmed, and :attr:`Pipeline.settle` is told of
each as its confirm comes, in order (the gateway then answers RELP frames and
lets paused readers go on). A stream ends when nothing arrives for a moment
while nothing of it waits for a confirm (or its confirms stall).

A batch the broker did not take (down, blocked, refusing) is never dropped:

- without a spool it is kept and published again after a pause, ahead of
  anything newer, while the listeners stay paused (their in-flight bound is
  full): back-pressure, and order kept;
- with a :class:`~logbus.spool.Spool`, it is appended there and settled
  as ``"spooled"``; from then on every new batch goes to the spool too, behind
  it, and the spool is replayed from its head while the broker answers, entries
  committed (deleted) only after their confirms. Once the spool is empty,
  records go straight to the broker again. Order is kept throughout.

Publishing is at least once: what a failed stream (or a replayed spool batch)
had not had confirmed is published again, and records keep their ``id``, so
consumers can drop duplicates.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from time import monotonic
from typing import Any, Literal, Protocol

from logbus._log import get_logger
from logbus.errors import InputError, LogbusError, TransportError
from logbus.record import LogRecord, decode
from logbus.spool import Spool, SpoolFull

__all__ = ["Link", "Outcome", "Pending", "Pipeline"]

log = get_logger("logbus.ingest")

#: How a batch ended: taken by RabbitMQ, written to the spool, or given up (refused as input).
Outcome = Literal["confirmed", "spooled", "failed"]
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 2.0
_IDLE = 0.05  # seconds a stream waits for new records before it ends
#: Seconds a stream with records in flight waits for new ones while no confirm comes.
_STALL = 1.0


class Link(Protocol):
    """What the publisher publishes through: an :class:`~logbus.emitter.Emitter` on its
    own transport (the gateway's), or a fake in tests."""

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now."""
        ...

    def emit_many(self, records: Iterable[LogRecord]) -> int: ...

    def emit_stream(
        self,
        take: Callable[[int], tuple[list[LogRecord], bool]],
        progress: Callable[[int], None],
    ) -> int: ...

    def close(self) -> None: ...


@dataclass(slots=True, eq=False)
class Pending:
    """One parsed record on its way, with what its listener wants to hear back.

    ``source`` is whatever the listener uses to count (its stats); ``done`` is
    called on the gateway's side once the record's outcome is known (RELP answers
    its frame then).
    """

    record: LogRecord
    source: Any = None
    done: Callable[[Outcome], None] | None = None


@dataclass(slots=True)
class PipelineStats:
    """What the publisher thread did, for metrics (written by it alone)."""

    published: int = 0
    confirmed: int = 0
    spooled: int = 0
    replayed: int = 0
    failed: int = 0
    held_since: float | None = None
    last_error: str = ""
    extra: dict[str, int] = field(default_factory=dict)


class Pipeline:
    """The publisher thread and its inbound queue (see the module doc).

    ``link`` is called to get a connected :class:`Link` (it may raise a recoverable
    :class:`~logbus.errors.TransportError`; it is asked again after a pause).
    ``settle(items, outcome)`` is called on the publisher thread once per batch;
    the gateway forwards it to its loop.
    ``fatal`` holds an error that will not go away by waiting (credentials
    refused, a configuration error); the thread stops on it.
    """

    def __init__(
        self,
        link: Callable[[], Link],
        settle: Callable[[list[Pending], Outcome], None],
        *,
        spool: Spool | None = None,
        batch_size: int = 5000,
    ) -> None:
        self._link_factory = link
        self._link: Link | None = None
        self.settle = settle
        self.spool = spool
        self.batch_size = max(1, batch_size)
        self.stats = PipelineStats()
        self.fatal: LogbusError | None = None
        self._cond = threading.Condition()
        self._inbound: deque[Pending] = deque()
        self._held: list[Pending] = []  # a batch the broker did not take, first in line
        self._current: list[Pending] = []  # the batch the thread is working on
        self._unconfirmed: deque[Pending] = deque()  # a stream's records, taken, not confirmed
        self._stream_lock = threading.Lock()  # a late confirm of an ended stream settles nothing
        self._given_up = False  # stop() settled what the thread still held
        self._stopping = False
        self._deadline = float("inf")
        self._pause = _FIRST_PAUSE
        self._retry_at = 0.0  # while the broker is away: no attempt before this
        self._thread = threading.Thread(target=self._run, name="logbus-ingest-publisher")

    # -- the listeners' side ------------------------------------------------------

    def put(self, items: Iterable[Pending]) -> None:
        """Queue records for publishing, in order (any thread)."""
        with self._cond:
            was_empty = not self._inbound
            self._inbound.extend(items)
            if was_empty:
                self._cond.notify()

    @property
    def queued(self) -> int:
        """Records waiting for the publisher thread (not yet in a batch)."""
        return len(self._inbound) + len(self._held)

    @property
    def healthy(self) -> bool:
        """Whether records are reaching RabbitMQ (no batch held back, nothing fatal)."""
        return self.fatal is None and self.stats.held_since is None

    def start(self) -> None:
        self._thread.start()

    def stop(self, deadline: float) -> bool:
        """Publish what is queued until ``deadline`` (monotonic), then stop; whether it all went
        (what is left goes to the spool if there is one, else it is settled ``failed``)."""
        with self._cond:
            self._stopping = True
            self._deadline = deadline
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - monotonic()) + 5.0)
        stuck = self._thread.is_alive()  # inside a publish that does not come back
        with self._cond:
            self._given_up = stuck
            left = (self._current + self._left() if stuck else []) + self._take_all()
        if left and self.spool is not None and not stuck:
            try:
                self._spool(left)
                left = []
            except (SpoolFull, OSError) as exc:
                log.error("ingest.spool_failed", error=str(exc))
        if left:
            self.stats.failed += len(left)
            self.settle(left, "failed")
        if not stuck:
            self._close_link()
            if self.spool is not None:
                self.spool.close()
        return not left

    # -- the publisher thread -----------------------------------------------------

    def _run(self) -> None:
        while self.fatal is None:
            batch = self._next_batch()
            if batch is None:
                return
            self._current = batch
            try:
                if self.spool is not None and (len(self.spool) or monotonic() < self._retry_at):
                    self._spool_mode(batch)
                elif batch:
                    self._stream(batch)
            except LogbusError as exc:  # not recoverable: credentials, configuration
                log.error("ingest.publisher_stopped", error=str(exc))
                self.fatal = exc
                self._held = self._current + self._left() + self._held
            except Exception as exc:  # a bug must stop the gateway loudly, not hang it
                log.error("ingest.publisher_crashed", error=f"{type(exc).__name__}: {exc}")
                self.fatal = TransportError(f"the publisher failed: {type(exc).__name__}: {exc}")
                self._held = self._current + self._left() + self._held
            self._current = []

    def _report(self, items: list[Pending], outcome: Outcome) -> None:
        """Settle from the publisher thread, unless stop() gave up on it and settled them."""
        with self._cond:
            if self._given_up:
                return
        self.settle(items, outcome)

    def _next_batch(self) -> list[Pending] | None:
        """The held batch, else new records (waiting a little for them); None to stop."""
        with self._cond:
            while True:
                if self._stopping and monotonic() >= self._deadline:
                    return None
                if self._held:
                    held, self._held = self._held, []
                    return held
                if self._inbound:
                    n = min(self.batch_size, len(self._inbound))
                    return [self._inbound.popleft() for _ in range(n)]
                if self._stopping and not (self.spool is not None and len(self.spool)):
                    return None
                if self.spool is not None and len(self.spool):
                    # Replay: wake at the next retry time, or now if the broker is back.
                    wait = max(0.0, self._retry_at - monotonic())
                    if wait == 0.0:
                        return []
                    self._cond.wait(min(wait, 0.5))
                    continue
                self._cond.wait(0.5)

    def _stream(self, first: list[Pending]) -> None:
        """Publish ``first`` and what keeps arriving as one stream, each record settled as
        its confirm comes (in order), until the inbound queue stays empty a moment.

        What was taken but not confirmed when the stream fails is handled as a batch that
        failed (held, spooled, or sent one by one), ahead of anything newer.
        """
        with self._stream_lock:
            unconfirmed = self._unconfirmed = deque(first)
        self._current = []  # tracked in unconfirmed from here
        handed: list[list[Pending]] = [first]

        def take(room: int) -> tuple[list[LogRecord], bool]:
            out = handed.pop() if handed else self._take(room)
            if out is None:
                return [], False
            if out is not first:
                unconfirmed.extend(out)
            self.stats.published += len(out)
            return [p.record for p in out], True

        def progress(count: int) -> None:  # on the transport's I/O thread
            with self._stream_lock:
                if unconfirmed is not self._unconfirmed:
                    return  # this stream ended (its rest was held or spooled): too late
                done = [unconfirmed.popleft() for _ in range(min(count, len(unconfirmed)))]
            self.stats.confirmed += len(done)
            self._report(done, "confirmed")

        try:
            link = self._link
            if link is None:
                link = self._link = self._link_factory()
            if self.spool is not None and not link.connected:
                raise _Away("the broker connection is down (reconnecting)")
            link.emit_stream(take, progress)
        except InputError:
            self._one_by_one(self._left())
            return
        except TransportError as exc:
            if not exc.recoverable:
                raise
            self._broker_away(exc)
            left = self._left()
            if self.spool is not None:
                self._spool_or_hold(left)
            else:
                self._hold(left)
            return
        self._went_well()

    def _left(self) -> list[Pending]:
        """End the stream: what it took and did not get confirmed (in order)."""
        with self._stream_lock:
            left = list(self._unconfirmed)
            self._unconfirmed = deque()
        return left

    def _take(self, room: int) -> list[Pending] | None:
        """Up to ``room`` new records for a stream, waiting a little; None to end it (idle,
        stopping, or the broker connection down with a spool to fall back on)."""
        with self._cond:
            # Ending a stream waits for all of it to be confirmed: with records in flight
            # (the listeners paused on the gate, say) that would empty the window and
            # leave the broker idle, so the stream goes on while its confirms come.
            confirmed, since = self.stats.confirmed, monotonic()
            while not self._inbound and not self._stopping:
                self._cond.wait(_IDLE)
                now = monotonic()
                if self.stats.confirmed != confirmed:
                    confirmed, since = self.stats.confirmed, now
                if not self._unconfirmed or now - since >= _STALL or self._spooling_away():
                    break
            if not self._inbound or (self._stopping and monotonic() >= self._deadline):
                return None
            if self._spooling_away():
                return None
            n = min(room, len(self._inbound))
            return [self._inbound.popleft() for _ in range(n)]

    def _spooling_away(self) -> bool:
        """The broker connection is down and a spool can take what comes meanwhile."""
        return self.spool is not None and self._link is not None and not self._link.connected

    def _spool_mode(self, batch: list[Pending]) -> None:
        """While the spool is not empty: new records behind it, replay from its head."""
        assert self.spool is not None
        if batch:
            self._spool_or_hold(batch)
        if monotonic() < self._retry_at or not len(self.spool):
            return
        entries, position = self.spool.peek(self.batch_size)
        records = [decode(entry) for entry in entries]
        try:
            if records:
                self._send(records)
        except TransportError as exc:
            if not exc.recoverable:
                raise
            self._broker_away(exc)
            return
        self._went_well()
        self.spool.commit(position, len(entries))
        self.stats.replayed += len(records)
        if not len(self.spool):
            log.info("ingest.spool_replayed", replayed=self.stats.replayed)

    def _send(self, records: list[LogRecord]) -> None:
        link = self._link
        if link is None:
            link = self._link = self._link_factory()
        if self.spool is not None and not link.connected:
            raise _Away("the broker connection is down (reconnecting)")
        self.stats.published += len(records)
        link.emit_many(records)

    def _one_by_one(self, batch: list[Pending]) -> None:
        """A batch refused as input: publish its records alone, so one bad record costs
        only itself (counted as failed)."""
        for pending in batch:
            try:
                self._send([pending.record])
            except InputError as exc:
                log.warning("ingest.record_refused", error=str(exc))
                self.stats.failed += 1
                self._report([pending], "failed")
                continue
            self.stats.confirmed += 1
            self._report([pending], "confirmed")

    def _spool_or_hold(self, batch: list[Pending]) -> None:
        try:
            self._spool(batch)
        except SpoolFull as exc:
            self.stats.last_error = str(exc)
            self._hold(batch)

    def _spool(self, batch: list[Pending]) -> None:
        assert self.spool is not None
        self.spool.append(p.record.to_bytes() for p in batch)
        self.stats.spooled += len(batch)
        self._report(batch, "spooled")

    def _hold(self, batch: list[Pending]) -> None:
        """Keep ``batch`` first in line and pause before the next attempt."""
        with self._cond:
            self._held = batch + self._held
            if self.stats.held_since is None:
                self.stats.held_since = monotonic()
            self._cond.wait(self._pause)  # a stop wakes it

    def _broker_away(self, exc: TransportError) -> None:
        self.stats.last_error = str(exc)
        log.warning("ingest.not_confirmed", error=str(exc), retry_in=round(self._pause, 2))
        if not isinstance(exc, _Away) and type(exc).__name__ != "NotConfirmed":
            self._close_link()  # it could not connect: a new one next time
        self._retry_at = monotonic() + self._pause
        self._pause = min(self._pause * 2, _MAX_PAUSE)

    def _went_well(self) -> None:
        self._pause = _FIRST_PAUSE
        self._retry_at = 0.0
        self.stats.held_since = None

    def _close_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            try:
                link.close()
            except Exception as exc:
                log.info("ingest.close_failed", error=str(exc))

    def _take_all(self) -> list[Pending]:
        with self._cond:
            left = self._held + list(self._inbound)
            self._held = []
            self._inbound.clear()
            return left


class _Away(TransportError):
    """The connection is down right now: spool rather than wait for a timeout."""

    recoverable = True
