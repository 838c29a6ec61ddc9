"""Persistence for the in-process broker: an append-only journal of what must survive.

A :class:`Journal` keeps, in one file under a data directory, exactly what
RabbitMQ keeps across a restart: durable exchanges and durable queues (with
their arguments), bindings whose two ends are durable, and the persistent
messages (``delivery_mode=2``) of durable queues — written when they enter a
queue, struck off when they leave it for good (acked, dead-lettered away,
dropped, purged, expired, deleted with their queue). Unacked messages are never
struck off, so they come back after a restart: at least once. Non-durable
entities, exclusive queues and transient messages are never written.

``Broker(journal=Journal(path))`` replays it when it is built and calls its hooks
from then on; a broker without one pays nothing. Hooks run under the broker's
lock and only buffer; :meth:`Journal.commit`, called once an operation has let
go of that lock, hands the bytes to the OS and applies the fsync policy, so
publishers under ``fsync="always"`` share one fsync when they commit together.

The file format (CRC-checked records, a torn tail versus damage) is
:mod:`logbus.broker.journal_format`'s; this module locks the data directory,
replays, appends, fsyncs and compacts. Opening compacts: the live state goes
to a fresh file (temporary name, fsync, atomic rename), as it does again
whenever the file outgrows ``compact_factor`` times the live size.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from logbus._log import get_logger
from logbus.broker.journal_format import (
    MAGIC,
    BindingRecord,
    ExchangeRecord,
    LiveState,
    QueueRecord,
    Recovery,
    binding_frame,
    binding_key,
    damaged,
    exchange_frame,
    message_frame,
    old_records,
    put_record,
    queue_frame,
    read_message,
    read_records,
)
from logbus.broker.paging import JournaledEntry, JournaledQueue, PagedEntry
from logbus.broker.queues import Entry, ExchangeState, QueueState, monotonic
from logbus.errors import ConfigError, DecodeError, InputError, PreconditionFailed
from logbus.message import Message
from logbus.wire.frames import Frame

__all__ = [
    "BindingRecord",
    "ExchangeRecord",
    "FsyncPolicy",
    "Journal",
    "JournaledEntry",
    "JournaledQueue",
    "PagedEntry",
    "QueueRecord",
    "Recovery",
]

log = get_logger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]
JOURNAL_NAME = "journal"
_COMPACT_NAME = "journal.compact"
_LOCK_NAME = "lock"
_WRITE_CHUNK = 1 << 20


# -- the journal --------------------------------------------------------------------


class Journal:
    """An append-only log of a broker's durable state in ``directory`` (created 0700).

    ``fsync`` says when appended records reach the disk: ``always`` before each
    operation that wrote something that matters returns (a publish's confirm, a
    declaration's ok; acks ride along with the next fsync), ``interval`` from a
    background thread at most every ``interval`` seconds, ``never`` when the OS
    decides. In every mode each operation's records reach the OS before it
    returns, so a killed broker process loses nothing. One journal serves one
    broker; a directory serves one journal at a time (it is locked).
    """

    compact_factor: int = 4
    compact_min_bytes: int = 4 << 20

    def __init__(
        self, directory: Path | str, fsync: FsyncPolicy = "interval", interval: float = 1.0
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ConfigError(f"unknown fsync policy {fsync!r}; use always, interval or never")
        if fsync == "interval" and not interval > 0:
            raise ConfigError(f"the fsync interval must be positive, not {interval!r}")
        self.directory = Path(directory)
        self.path = self.directory / JOURNAL_NAME
        self.fsync: FsyncPolicy = fsync
        self.interval = interval
        self._lock = threading.Lock()  # the buffer, the live state, the file
        self._sync_lock = threading.Lock()  # one fsync or rewrite at a time; taken first
        self._buffer = bytearray()
        self._gone: dict[str, list[int]] = {}  # ids that left, written at the next commit
        self._state = LiveState(self)
        # Set while the broker is short of memory: new messages are paged out at once.
        self.paging = False
        self._appended = self._written = self._synced = self._must_sync = 0
        self._size = self._live = 0
        self._compact_floor = 0  # raised after a failed compaction, not to retry it every time
        self._closed = self._attached = False
        self._stop = threading.Event()
        self._lock_fd = self._open_directory()
        self._read_fd = -1  # paged messages are read back through it
        try:
            self._replay()
            self._fd = self._rewrite()
        except OSError as exc:
            self._close_files()
            raise ConfigError(f"cannot write journal {self.path}: {exc}") from None
        except BaseException:
            self._close_files()
            raise
        self._flusher: threading.Thread | None = None
        if fsync == "interval":
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="logbus-journal-fsync", daemon=True
            )
            self._flusher.start()

    # -- opening ----------------------------------------------------------------

    def _open_directory(self) -> int:
        try:
            self.directory.mkdir(mode=0o700, parents=True)
            os.chmod(self.directory, 0o700)  # whatever the umask
        except FileExistsError:
            if not self.directory.is_dir():
                raise ConfigError(f"data directory {self.directory} is not a directory") from None
        except OSError as exc:
            raise ConfigError(f"cannot create data directory {self.directory}: {exc}") from None
        try:
            fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot use data directory {self.directory}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"data directory {self.directory} is in use by another logbus broker; "
                "stop it or choose another --data-dir"
            ) from None
        return fd

    def _replay(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ConfigError(f"cannot read journal {self.path}: {exc}") from None
        if not data:
            return
        if not data.startswith(MAGIC):
            raise ConfigError(
                f"{self.path} is not a logbus journal (it does not start with {MAGIC!r}); "
                "move it aside or choose another --data-dir"
            )
        offset = len(MAGIC)
        for frame, size in read_records(self.path, data):
            try:
                self._state.apply(frame, size, offset)
            except (DecodeError, KeyError, TypeError, ValueError) as exc:
                raise damaged(self.path, offset, f"unreadable {frame.op!r} record: {exc}") from None
            offset += size
        log.info("journal replayed", path=str(self.path), bytes=offset)

    def attach(self) -> Recovery:
        """The state to rebuild, for the one broker this journal will serve."""
        with self._lock:
            if self._attached:
                raise ConfigError("a journal serves one broker; open another for another broker")
            self._attached = True
            return self._state.recovery()

    # -- hooks (called under the broker's lock) -------------------------------------

    def exchange_declared(self, exchange: ExchangeState) -> None:
        """Record a new durable exchange."""
        record = ExchangeRecord(
            exchange.name,
            exchange.type,
            exchange.auto_delete,
            exchange.internal,
            exchange.arguments,
        )
        with self._lock:
            if self._append(exchange_frame(record)):
                self._state.exchanges[record.name] = record

    def exchange_deleted(self, name: str) -> None:
        """Record that a durable exchange, and every binding to or from it, is gone."""
        with self._lock:
            if self._append(Frame("exchange.delete", 0, {"name": name})):
                self._state.drop_exchange(name)

    def queue_declared(self, queue: QueueState) -> None:
        """Record a new durable queue."""
        record = QueueRecord(queue.name, queue.auto_delete, queue.arguments)
        with self._lock:
            if self._append(queue_frame(record)):
                self._state.queues[record.name] = record
                self._state.messages[record.name] = {}

    def queue_deleted(self, name: str) -> None:
        """Record that a durable queue is gone, with its bindings and messages."""
        with self._lock:
            if self._append(Frame("queue.delete", 0, {"name": name})):
                self._live -= self._state.drop_queue(name)
                self._gone.pop(name, None)

    def binding_changed(self, binding: BindingRecord, *, added: bool) -> None:
        """Record a binding between durable entities added (or removed)."""
        with self._lock:
            if not self._append(binding_frame(binding, "bind" if added else "unbind")):
                return
            if added:
                self._state.bindings[binding_key(binding)] = binding
            else:
                self._state.bindings.pop(binding_key(binding), None)

    def entered(self, queue: str, entry: Entry, *, keep: bool = True) -> Entry:
        """Write a persistent message entering a durable queue; returns its paged entry.

        With ``keep``, the entry keeps the message in memory as well (until paged out).
        """
        message = entry.message
        expires = None
        if entry.expires_at is not None:  # the wall clock survives a restart, monotonic not
            expires = time.time() + (entry.expires_at - monotonic())
        with self._lock:
            held = self._state.messages.get(queue)
            ident = self._state.last_id + 1
            if held is None or self._closed:
                return entry
            offset = self._size + len(self._buffer)  # where it lands in the file
            size = self._append(message_frame(queue, ident, message, expires))
            self._state.last_id = ident
            paged = PagedEntry(
                self,
                ident,
                offset,
                size,
                len(message.body),
                entry.expires_at,
                entry.redelivered,
                message if keep else None,
            )
            held[ident] = paged
            self._live += size
        return paged

    def read_message(self, entry: PagedEntry) -> Message:
        """A paged entry's message: from the buffer if not written yet, else from the file."""
        with self._lock:
            start = entry.offset - self._size
            if start >= 0:
                return read_message(bytes(self._buffer[start : start + entry.record]))
            if self._closed:
                raise PreconditionFailed("PRECONDITION_FAILED - the broker's journal is closed")
            data = os.pread(self._read_fd, entry.record, entry.offset)
        return read_message(data)

    def left(self, queue: str, entry: Entry) -> None:
        """Strike off a message that left a durable queue for good (no-op if not journaled)."""
        if isinstance(entry, JournaledEntry):
            with self._lock:
                self._strike(queue, entry.id)

    def purged(self, queue: str, entries: Iterable[Entry]) -> None:
        """Strike off the messages a purge dropped."""
        with self._lock:
            for entry in entries:
                if isinstance(entry, JournaledEntry):
                    self._strike(queue, entry.id)

    def _strike(self, queue: str, ident: int) -> None:
        messages = self._state.messages.get(queue, {})
        held = messages.pop(ident, None)
        if not messages and queue in self._state.messages:
            self._state.messages[queue] = {}  # a dict never shrinks: a drained one is replaced
        if held is not None and not self._closed:
            self._live -= held.record
            self._gone.setdefault(queue, []).append(ident)

    def _append(self, frame: Frame) -> int:
        """Buffer one record that must reach the disk; its size, or 0 once closed."""
        if self._closed:
            return 0
        try:
            size = put_record(self._buffer, frame)
        except InputError as exc:
            raise PreconditionFailed(f"PRECONDITION_FAILED - cannot journal it: {exc}") from None
        self._appended += 1
        self._must_sync = self._appended
        return size

    # -- writing ------------------------------------------------------------------

    def commit(self) -> None:
        """Hand what was buffered to the OS; under ``always``, fsync it before returning."""
        always = self.fsync == "always"
        if not (self._buffer or self._gone or (always and self._must_sync > self._synced)):
            return  # read without the lock: a thread always sees its own records
        with self._lock:
            if self._closed:
                return
            self._write_locked()
            must_sync = always and self._must_sync > self._synced
            threshold = max(self.compact_min_bytes, self.compact_factor * self._live)
            compact = self._size > max(threshold, self._compact_floor)
        if compact:
            try:
                self.compact()
                return
            except OSError as exc:  # the log only stays longer: not this operation's failure
                self._compact_floor = self._size * 2
                log.error("journal compaction failed", path=str(self.path), error=str(exc))
        if must_sync:
            self._sync()

    def write(self) -> None:
        """Hand what was buffered to the OS without waiting for the disk."""
        with self._lock:
            if not self._closed:
                self._write_locked()

    def _write_locked(self) -> None:
        for queue, ids in self._gone.items():
            put_record(self._buffer, Frame("out", 0, {"queue": queue, "ids": ids}))
            self._appended += 1
        self._gone.clear()
        if self._buffer:
            try:
                _write_all(self._fd, self._buffer)
            except OSError:
                os.ftruncate(self._fd, self._size)  # no half record ahead of the next ones
                raise
            self._size += len(self._buffer)
            self._buffer.clear()
        self._written = self._appended

    def _sync(self) -> None:
        with self._sync_lock:
            with self._lock:
                if self._closed:
                    return
                self._write_locked()
                target, fd = self._written, self._fd
            if self._synced < target:
                os.fsync(fd)
                self._synced = target

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sync()
            except OSError as exc:
                log.error("journal fsync failed", path=str(self.path), error=str(exc))

    def compact(self) -> None:
        """Rewrite the file as the live state alone (temporary file, fsync, atomic rename)."""
        with self._sync_lock, self._lock:
            if self._closed:
                return
            fd = self._rewrite()  # from the live state, which has what is still buffered too
            self._gone.clear()
            os.close(self._fd)
            self._fd = fd
            self._written = self._synced = self._appended
            self._compact_floor = 0

    def _rewrite(self) -> int:
        """Write the live state to a fresh file, messages copied as their records are.

        Paged entries move: their new offsets are set once the new file has
        replaced the old one, so a failed rewrite leaves them reading the old.
        """
        state = self._state
        temp = self.directory / _COMPACT_NAME
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        out, size = bytearray(MAGIC), 0
        moved: list[tuple[PagedEntry, int]] = []
        try:
            in_file = self._size if self._read_fd >= 0 else None
            with old_records(self.path, in_file, self._buffer) as old:
                for exchange in state.exchanges.values():
                    put_record(out, exchange_frame(exchange))
                for queue in state.queues.values():
                    put_record(out, queue_frame(queue))
                for binding in state.bindings.values():
                    put_record(out, binding_frame(binding))
                live = len(out)
                for held in state.messages.values():
                    for item in held.values():
                        moved.append((item, size + len(out)))
                        out += old(item)
                        live += item.record
                        if len(out) >= _WRITE_CHUNK:
                            size += _write_all(fd, out)
                            out.clear()
            size += _write_all(fd, out)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.path)
        for item, offset in moved:
            item.offset = offset
        self._buffer.clear()
        _fsync_directory(self.directory)
        self._size, self._live = size, live
        if self._read_fd >= 0:
            os.close(self._read_fd)
        self._read_fd = os.open(self.path, os.O_RDONLY)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def close(self) -> None:
        """Write what is buffered, fsync (unless ``never``), and release the directory."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._sync_lock, self._lock:
            if self._closed:
                return
            try:
                self._write_locked()
                if self.fsync != "never":
                    os.fsync(self._fd)
            finally:
                self._closed = True
                os.close(self._fd)
                self._close_files()

    def _close_files(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
            self._read_fd = -1
        os.close(self._lock_fd)


def _write_all(fd: int, data: bytearray) -> int:
    view = memoryview(data)
    try:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])
        return done
    finally:
        view.release()


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the filesystem can)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is then the OS's affair
    finally:
        os.close(fd)
