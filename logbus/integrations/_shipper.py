"""The engine behind the logging handler and the structlog processor: a bounded buffer and a
listener thread that publishes through :class:`~logbus.emitter.Emitter`.

Why a buffer and a thread: an application thread that logs must never wait on the
network. :meth:`Shipper.put` only appends to a bounded buffer (microseconds); the
listener thread takes what is there, a batch at a time, builds the records and
publishes them with ``Emitter.emit_many`` (confirmed, pipelined). The emitter's
transport reconnects by itself; a batch the broker did not confirm is kept and sent
again after a pause (at least once: a duplicate is possible, it keeps its ``id``).

When the buffer is full — the broker is away, or slower than the application —
the *policy* decides, and says so in counters:

- ``"drop"``: the new event is dropped and :attr:`Shipper.dropped` counts it.
  The application never waits.
- ``"block"``: the caller waits for room, up to ``block_timeout`` seconds; only
  then is the event dropped (and counted).

:meth:`Shipper.close` sends what is buffered, within ``flush_timeout`` seconds,
and logs the counters once (logger ``logbus.integrations``) if anything was lost.
It also runs at interpreter exit (``atexit``); the listener is a daemon thread,
so a broker that never answers cannot hold the interpreter's exit. Memory held is
at most ``buffer_size`` events plus the one batch (``batch_size``) being sent.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import random
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from logbus.errors import ConfigError, InputError, LogbusError, RecordError, TransportError
from logbus.record import LogRecord, Severity

if TYPE_CHECKING:
    from logbus.integrations._spooled import SpoolKeeper
    from logbus.settings import Settings
    from logbus.topology import Topology

__all__ = ["Event", "Policy", "Sender", "Shipper"]

Policy = Literal["drop", "block"]
log = logging.getLogger("logbus.integrations")

_FIRST_PAUSE = 0.1  # seconds before the first retry of a batch; doubles up to _MAX_PAUSE
_MAX_PAUSE = 5.0
_LEAVE = 0.25  # seconds an abandoned listener is given to stop touching records


class Event(NamedTuple):
    """One log event as the application thread hands it over (no record built yet)."""

    severity: Severity
    message: str
    created: float  # time.time() when it was logged
    fields: dict[str, Any]
    pid: int | None = None


class Sender(Protocol):
    """What the listener publishes through: :class:`~logbus.emitter.Emitter`, or a fake."""

    def emit_many(self, records: Iterable[LogRecord]) -> int: ...

    def close(self) -> None: ...


class Shipper:
    """A bounded buffer of events and the thread that publishes them (see the module docs).

    ``url``, ``settings`` and ``topology`` (a :class:`~logbus.topology.Topology` or a
    TOML file) are the emitter's; ``facility``, ``app`` and ``host`` fill every record.
    ``sender`` replaces the emitter factory (tests pass a fake). Nothing connects
    before the first event; the listener starts then.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        facility: str = "user",
        app: str = "python",
        host: str | None = None,
        policy: Policy = "drop",
        buffer_size: int = 10_000,
        block_timeout: float = 10.0,
        flush_timeout: float = 5.0,
        batch_size: int = 5000,
        topology: Topology | str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        sender: Callable[[], Sender] | None = None,
        spool: str | os.PathLike[str] | None = None,
    ) -> None:
        if policy not in ("drop", "block"):
            raise ConfigError(f"policy must be 'drop' or 'block', not {policy!r}")
        if buffer_size < 1 or batch_size < 1:
            raise ConfigError("buffer_size and batch_size must be at least 1")
        if block_timeout <= 0 or flush_timeout < 0:
            raise ConfigError("block_timeout must be > 0 and flush_timeout >= 0 (seconds)")
        self.policy: Policy = policy
        self.buffer_size = buffer_size
        self.block_timeout = float(block_timeout)
        self.flush_timeout = float(flush_timeout)
        self.batch_size = batch_size
        # A record's fixed fields, checked now so that a bad facility fails at configuration.
        host_field = {} if host is None else {"host": host}
        try:
            LogRecord(facility=facility, severity="info", message="", app=app, **host_field)
        except RecordError as exc:
            raise ConfigError(f"the handler's record fields: {exc}") from None
        self._static: dict[str, Any] = {"facility": facility, "app": app, **host_field}
        self._sender_factory = sender or _emitter_factory(url, topology, settings)
        self._sender: Sender | None = None
        self._keeper: SpoolKeeper | None = None
        if spool is not None:  # records the broker does not take go there (_spooled.py)
            from logbus.integrations._spooled import SpoolKeeper

            self._keeper = SpoolKeeper(spool)
        self._reset_state()
        # Closing at interpreter exit, through a weak reference: atexit keeps no shipper alive.
        self._at_exit = partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)
        os.register_at_fork(after_in_child=partial(_forked, weakref.ref(self)))

    def _reset_state(self) -> None:
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._wake = threading.Condition(self._lock)  # ends a retry pause early: closing
        self._buffer: deque[Event] = deque()
        self._in_flight = 0  # events the listener holds, not yet confirmed nor given up
        self._closing = False
        self._abandoned = False  # close() gave up on a listener stuck in a publish
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._sent = self._dropped = self._failed = self._spooled = 0
        self._stalled_at: int | None = None  # self._sent when a flush last timed out

    # -- counters -----------------------------------------------------------------

    @property
    def sent(self) -> int:
        """Records the broker confirmed."""
        return self._sent

    @property
    def dropped(self) -> int:
        """Events given up: buffer full (policy), caller's wait over, or unsent at close."""
        return self._dropped

    @property
    def failed(self) -> int:
        """Events that can never be a published record (too large, refused as input)."""
        return self._failed

    @property
    def spooled(self) -> int:
        """Events written to the spool (``spool=``) because the broker did not take them."""
        return self._spooled

    @property
    def buffered(self) -> int:
        """Events waiting in the buffer or in the batch being sent."""
        return len(self._buffer) + self._in_flight

    # -- the application's threads ------------------------------------------------

    def put(self, event: Event) -> bool:
        """Buffer one event; ``False`` when it was dropped (counted in :attr:`dropped`)."""
        with self._lock:
            if self._closing:
                self._dropped += 1
                return False
            if self._thread is None:
                self._start()
            buffer = self._buffer
            if len(buffer) >= self.buffer_size and not self._wait_for_room():
                self._dropped += 1
                return False
            buffer.append(event)
            if len(buffer) == 1:
                self._not_empty.notify()
            return True

    def _wait_for_room(self) -> bool:
        """Under the lock: whether room came for one more event (only ``block`` waits)."""
        if self.policy == "drop":
            return False
        deadline = monotonic() + self.block_timeout
        while len(self._buffer) >= self.buffer_size and not self._closing:
            left = deadline - monotonic()
            if left <= 0:
                return False
            self._not_full.wait(left)
        return not self._closing

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything buffered was sent (or given up), up to ``timeout``
        seconds (default ``flush_timeout``); whether it all went."""
        deadline = monotonic() + (self.flush_timeout if timeout is None else timeout)
        with self._lock:
            sent_before = self._sent
            while self._buffer or self._in_flight:
                left = deadline - monotonic()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    # Nothing at all went out while waiting: the broker is away, and
                    # close() (which logging.shutdown calls next) need not wait again.
                    self._stalled_at = self._sent if self._sent == sent_before else None
                    return False
                self._progress.wait(min(left, 0.5))
            return True

    def close(self, timeout: float | None = None) -> None:
        """Send what is buffered within ``timeout`` (default ``flush_timeout``) seconds,
        stop the listener and close the emitter; then log once what was lost. Idempotent.

        If a flush just timed out having sent nothing, and nothing was sent since, the
        broker is away: close does not wait a second time."""
        with self._lock:
            if self._closing:
                return
            wait = self.flush_timeout if timeout is None else timeout
            if self._stalled_at is not None and self._stalled_at == self._sent:
                wait = 0.0
            self._closing = True
            self._deadline = monotonic() + wait
            thread = self._thread
            self._not_empty.notify_all()
            self._not_full.notify_all()
            self._wake.notify_all()
        atexit.unregister(self._at_exit)
        if thread is not None:
            thread.join(wait + 0.5)
        self._spool_rest(thread)
        with self._lock:
            # A listener still stuck in a publish is abandoned: its batch counts as dropped
            # (some of it may yet arrive); it is a daemon thread and cannot hold the exit.
            self._dropped += len(self._buffer) + self._in_flight
            self._buffer.clear()
            self._in_flight = 0
            self._abandoned = True
        if thread is not None and thread.is_alive():
            # A moment to see that flag: a daemon thread still building or encoding records
            # (pydantic's Rust code calling back into Python) when the interpreter
            # finalises aborts the process; one that waits on the network exits quietly.
            thread.join(_LEAVE)
        if thread is None or not thread.is_alive():
            self._close_sender()
        if self._dropped or self._failed:
            log.warning(
                "logbus: %d log records were dropped (policy %r, buffer %d) and %d could not "
                "be sent; %d were sent",
                self._dropped,
                self.policy,
                self.buffer_size,
                self._failed,
                self._sent,
            )

    def _spool_rest(self, thread: threading.Thread | None) -> None:
        """At close, with a spool and the listener stopped: what is still buffered is kept
        there rather than dropped."""
        if self._keeper is None or (thread is not None and thread.is_alive()):
            return
        with self._lock:
            events = list(self._buffer)
            self._buffer.clear()
        records = self._records(events)
        if records and not self._spool(self._keeper, records):
            with self._lock:
                self._dropped += len(records)

    # -- the listener thread ------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="logbus-shipper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pause = _FIRST_PAUSE
        records: list[LogRecord] = []
        while not self._abandoned:
            if not records:
                taken = self._take()
                if taken is None:
                    return  # closing, and nothing left
                records = taken
                if not records:
                    continue  # none of the batch could be a record (counted as failed)
            if self._send(records):
                records, pause = [], _FIRST_PAUSE
                continue
            if not self._pause(pause):
                return  # closing and the deadline passed: close() counts what is left
            pause = min(_MAX_PAUSE, pause * 2)

    def _take(self) -> list[LogRecord] | None:
        """The next batch as records (waiting for one); ``None`` once closing and drained."""
        with self._lock:
            while not self._buffer and not self._closing:
                self._not_empty.wait()
            count = min(self.batch_size, len(self._buffer))
            if not count:
                return None
            events = [self._buffer.popleft() for _ in range(count)]
            self._in_flight = count
            self._not_full.notify_all()
        return self._records(events)

    def _records(self, events: list[Event]) -> list[LogRecord]:
        records = []
        for event in events:
            if self._abandoned:
                return []
            try:
                records.append(self._record(event))
            except LogbusError:
                self._settle(0, failed=1)
        return records

    def _record(self, event: Event) -> LogRecord:
        return LogRecord(
            severity=event.severity,
            message=event.message,
            ts=datetime.fromtimestamp(event.created, UTC),
            pid=event.pid,
            fields=event.fields,
            **self._static,
        )

    def _send(self, records: list[LogRecord]) -> bool:
        """Publish a batch; whether it is settled (sent, spooled, or the rest can never go)."""
        keeper = self._keeper
        if keeper is not None and keeper.waiting and not (keeper.due() and self._replay(keeper)):
            return self._spool(keeper, records)  # behind what the spool holds
        try:
            sender = self._sender or self._open_sender()
            sender.emit_many(self._unless_abandoned(records))
        except InputError:
            self._send_one_by_one(records)  # one record the broker cannot take
            return True
        except TransportError as exc:
            if not exc.recoverable:  # closed or refused: start again with a new emitter
                self._close_sender()
            if keeper is None:
                return False
            keeper.away()
            return self._spool(keeper, records)
        self._settle(len(records))
        return True

    def _replay(self, keeper: SpoolKeeper) -> bool:
        """Send what the spool holds; whether it is empty now."""
        try:
            keeper.replay((self._sender or self._open_sender()).emit_many)
        except LogbusError:
            return False
        return True

    def _spool(self, keeper: SpoolKeeper, records: list[LogRecord]) -> bool:
        """Keep ``records`` in the spool; whether they are (else retried as without one)."""
        try:
            kept = keeper.keep(records)
        except (LogbusError, OSError) as exc:
            log.warning("logbus: the spool %s cannot take records: %s", keeper.path, exc)
            return False
        self._settle(0, spooled=kept)
        return True

    def _unless_abandoned(self, records: list[LogRecord]) -> Iterator[LogRecord]:
        """The batch, cut short once close() gave up on it (see close)."""
        for record in records:
            if self._abandoned:
                return
            yield record

    def _send_one_by_one(self, records: list[LogRecord]) -> None:
        for record in records:
            try:
                (self._sender or self._open_sender()).emit_many([record])
            except InputError:
                self._settle(0, failed=1)
            except TransportError:
                self._settle(0, failed=1)  # the next batch finds out whether it lasts
            else:
                self._settle(1)

    def _settle(self, sent: int, *, failed: int = 0, spooled: int = 0) -> None:
        with self._lock:
            if self._abandoned:
                return
            self._sent += sent
            self._failed += failed
            self._spooled += spooled
            self._in_flight = max(0, self._in_flight - sent - failed - spooled)
            self._progress.notify_all()

    def _pause(self, seconds: float) -> bool:
        """Wait before retrying (less once closing); ``False`` once the close deadline passed."""
        with self._lock:
            if self._closing:
                left = self._deadline - monotonic()
                if left <= 0:
                    return False
                seconds = min(seconds, left)
            self._wake.wait(random.uniform(seconds / 2, seconds))
            return True

    def _open_sender(self) -> Sender:
        sender = self._sender = self._sender_factory()
        # Connecting registers exit hooks of its own: the AMQP transport closes itself at
        # exit (weakref.finalize), failing what is still in flight. atexit runs last in,
        # first out, so the flush at exit is registered again after them, to run first;
        # else a batch in flight at exit failed, was sent again and arrived twice.
        getattr(sender, "transport", None)  # an Emitter connects here (TransportError)
        with self._lock:
            if not self._closing:
                atexit.unregister(self._at_exit)
                atexit.register(self._at_exit)
        return sender

    def _close_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            # A connection that is already gone has nothing left to close.
            with contextlib.suppress(LogbusError):
                sender.close()


def _emitter_factory(
    url: str | None, topology: Topology | str | os.PathLike[str] | None, settings: Settings | None
) -> Callable[[], Sender]:
    """An :class:`Emitter` maker, the emitter built once now so that configuration
    errors (a bad topology file, no emit targets) raise when the handler is made."""
    from logbus.emitter import Emitter
    from logbus.settings import Settings
    from logbus.topology import load

    settings = settings or Settings()
    loaded = load(Path(topology)) if isinstance(topology, str | os.PathLike) else topology
    Emitter(url, settings=settings, topology=loaded)  # raises ConfigError; connects nothing
    return partial(Emitter, url, settings=settings, topology=loaded)


def _close_at_exit(ref: weakref.ref[Shipper]) -> None:
    shipper = ref()
    if shipper is not None:
        shipper.close()


def _forked(ref: weakref.ref[Shipper]) -> None:
    """In a forked child: the parent's thread and connection are not ours; start afresh."""
    shipper = ref()
    if shipper is not None:
        shipper._sender = None
        shipper._reset_state()
