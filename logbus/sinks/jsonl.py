"""``jsonl:PATH``: append each record's wire JSON as one line to a file.

``PATH`` may be a template: ``/var/log/logbus/{facility}/{severity}.jsonl``
writes each record to the file of its facility and severity (the two
placeholders there are; both are safe as path parts, being validated tokens).
The directory before the first placeholder must exist; the ones below it are
made as records arrive.

Options (``jsonl:PATH?KEY=VALUE&...`` or keys of a ``[sink]`` table):

``max_bytes``
    Rotate a file before a batch would take it past this size (``100M``, ``1G``,
    or bytes). A batch is never split, so one alone larger than this makes a
    larger file.
``rotate``
    ``hourly`` or ``daily``: rotate when the hour or day (UTC) changes.
``fsync``
    ``never`` (default): each batch reaches the operating system before the
    worker acks it, which survives the worker dying but not a power cut.
    ``batch``: one fsync per file and batch; ``always``: one per record.
``dedupe``
    ``true`` (default) or ``false``: skip records already in the file (below).
``dedupe_window``
    How many of a file's last lines ``dedupe`` looks at (16 batches, at least
    2000).
``max_batch`` / ``max_wait``
    The batch hints (100 records; 0 s).

A rotated file keeps its name with a tag before the extension: the hour or day
it covers with ``rotate`` (``all.2025-01-02T03.jsonl``), else the UTC time of
the rotation (``all.2025-01-02T03-04-05.jsonl``); a tag already taken gets
``.1``, ``.2`` ... Processes sharing a file (``--pool process``) rotate it once:
they take a lock on the directory and reopen a file another one has moved,
as they do after an outside ``logrotate``.

The file is opened for appending, so several workers (or restarts of one) add
to the same file and never truncate it. Every writer appends under an
exclusive lock on the file (``flock``), whole batches at a time.

*Redeliveries.* A worker killed after the sink wrote a batch, before the
broker had its acks, has that batch redelivered: to itself once restarted, or
to another worker. With ``dedupe`` the sink skips such a record, and reports it
stored, when its ``id`` is among the last W lines (``dedupe_window``) of the
path it is about to append it to. It reads those ids from the end of each file
when it first opens it (and from the end of the file last rotated from it, when
this one has fewer than W lines), then, under the file's lock, from every line
appended since: by itself, by other processes, across the rotations it makes
or sees. The guarantee: **a redelivered record is written once if fewer than W
lines were appended to its path after it** — counting, for a sink that opened
the path in between, only the current file and the one last rotated from it,
and at most :data:`~logbus.sinks._tail.TAIL_BYTES` (64 MiB) of each. A dying
worker leaves at most its prefetch unacked, so W must exceed the prefetch of
all the workers appending to one file together; the default covers the worker's
default prefetch (two batches a thread) up to eight threads. Beyond that bound
(a file edited, truncated or renamed by hand before a restart; more lines than
W) a record comes twice, and its ``id`` says so. The cost: W ids held for each
open file (:data:`MAX_OPEN_FILES` at most), up to W lines read and parsed when
a file is opened, an ``fstat`` and a lock per batch and file, and parsing the
lines other processes append to a shared file.

*Torn lines.* A write cut short (the worker killed in the middle of a large
one, a full disk) leaves a last line without its end. The next writer to take
the file's lock — this sink when it opens the file, or any other — ends that
line first, so the next record starts a line of its own. The cut line stays,
not valid JSON: readers of the file skip lines that do not parse, as this sink
does. Its record was never acked, so it comes back and is written whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from io import FileIO
from pathlib import Path
from typing import Literal

from pydantic import Field

from logbus._log import get_logger
from logbus.errors import ConfigError
from logbus.record import LogRecord
from logbus.sinks._dirs import ensure_directory
from logbus.sinks._options import ByteSize, ConfigurableSink, SinkOptions
from logbus.sinks._tail import Window, last_rotated, tail_ids, unseen

__all__ = ["JsonlOptions", "JsonlSink"]

log = get_logger(__name__)

#: Files kept open at once with a template; the least recently used is closed beyond.
MAX_OPEN_FILES = 64
_PLACEHOLDERS = frozenset({"facility", "severity"})
_PERIOD_FORMAT = {"hourly": "%Y-%m-%dT%H", "daily": "%Y-%m-%d"}

Rotate = Literal["hourly", "daily"]
Fsync = Literal["always", "batch", "never"]


def _default_window(max_batch: int) -> int:
    """The ``dedupe_window`` when none is given: 16 batches (2 a thread, 8 threads), >= 2000."""
    return max(16 * max_batch, 2000)


class JsonlOptions(SinkOptions):
    """What ``jsonl`` takes: the path (or template), rotation, fsync and de-duplication."""

    path: str
    max_bytes: ByteSize | None = None
    rotate: Rotate | None = None
    fsync: Fsync = "never"
    dedupe: bool = True
    dedupe_window: int | None = Field(default=None, ge=1, le=10_000_000)


@dataclass
class _Open:
    """One file being appended to: its rotation period, and how much of it this sink knows.

    ``end`` is the size the file had after this sink last read or wrote it
    (under the file's lock); bytes past it were appended by someone else.
    ``regular`` is False for a FIFO or a device, which are only written to.
    """

    file: FileIO
    period: str | None
    end: int = 0
    regular: bool = True


class JsonlSink(ConfigurableSink):
    """Appends one JSON line per record to ``path`` (or its template's files); thread-safe."""

    name = "jsonl"
    Options = JsonlOptions
    argument = "path"
    example = "jsonl:PATH"

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int | None = None,
        rotate: Rotate | None = None,
        fsync: Fsync = "never",
        dedupe: bool = True,
        dedupe_window: int | None = None,
        max_batch: int = 100,
        max_wait: float = 0.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.max_bytes = max_bytes
        self.rotate: Rotate | None = rotate
        self.fsync: Fsync = fsync
        self.dedupe = dedupe
        self.dedupe_window = dedupe_window or _default_window(max_batch)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._clock = clock or (lambda: datetime.now(UTC))
        self._fields = _template_fields(str(self.path))
        self._files: OrderedDict[Path, _Open] = OrderedDict()
        self._windows: dict[Path, Window] = {}
        self._opened = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the file for appending and learn the ids at its end.

        A template's files are opened as records come for them; here only its
        fixed directory is checked.
        """
        with self._lock:
            if self._fields:
                ensure_directory(_fixed_directory(str(self.path)), "jsonl")
            else:
                ensure_directory(self.path.parent, "jsonl")
                try:
                    self._file_for(self.path, self._clock())
                except OSError as exc:
                    why = exc.strerror or type(exc).__name__
                    raise ConfigError(
                        f"sink jsonl cannot open {str(self.path)!r} for appending: {why} "
                        "(check that the directory exists and is writable)"
                    ) from exc
            self._opened = True

    def write(self, batch: Sequence[LogRecord]) -> Sequence[Exception | None]:
        """Append the batch; a file that cannot be written fails the records meant for it.

        A record already in the file (see the module docstring) is skipped and
        counts as stored.
        """
        lines = [(record.id, record.to_bytes() + b"\n") for record in batch]
        groups: dict[Path, list[int]] = {}
        if self._fields:
            for index, record in enumerate(batch):
                groups.setdefault(self._target(record), []).append(index)
        elif batch:
            groups[self.path] = list(range(len(batch)))
        results: list[Exception | None] = [None] * len(batch)
        with self._lock:
            if not self._opened:
                raise ConfigError(f"sink jsonl:{self.path} was written to before open()")
            now = self._clock()
            for target, indexes in groups.items():
                try:
                    whole = len(indexes) == len(lines)
                    self._append(target, lines if whole else [lines[i] for i in indexes], now)
                except OSError as exc:  # a full disk, say: the worker retries these records
                    self._forget(target)
                    for i in indexes:
                        results[i] = exc
        return results

    def close(self) -> None:
        """Flush and close every file; idempotent."""
        with self._lock:
            for target in list(self._files):
                self._forget(target)
            self._windows.clear()
            self._opened = False

    def __repr__(self) -> str:
        return f"<JsonlSink {str(self.path)!r}>"

    def _target(self, record: LogRecord) -> Path:
        if not self._fields:
            return self.path
        return Path(str(self.path).format(facility=record.facility, severity=record.severity.word))

    def _append(self, target: Path, lines: list[tuple[str, bytes]], now: datetime) -> None:
        state = self._file_for(target, now)
        window = self._windows.get(target)
        given = len(lines)
        if self.max_bytes is not None:
            if window is not None:  # those known already need no room
                lines = [(record_id, line) for record_id, line in lines if record_id not in window]
            # The size on disk, not a count of our own writes: other processes append too.
            size = os.fstat(state.file.fileno()).st_size
            if size and size + sum(len(line) for _, line in lines) > self.max_bytes:
                state = self._rotate(target, state, now)
        with _locked_file(state):
            self._catch_up(target, state)  # what others appended: their ids, a torn end
            if window is not None:
                lines = unseen(window, lines)
            if lines:
                self._write(state, [line for _, line in lines])
        if window is not None:
            # Only once written: a record that failed must not look stored when retried.
            window.extend(record_id for record_id, _ in lines)
            if len(lines) < given:
                log.info("jsonl.duplicates_skipped", path=str(target), count=given - len(lines))

    def _write(self, state: _Open, lines: list[bytes]) -> None:
        fd = state.file.fileno()
        if self.fsync == "always":
            for line in lines:
                _write_all(fd, line)
                os.fsync(fd)
        else:
            _write_all(fd, b"".join(lines))
            if self.fsync == "batch":
                os.fsync(fd)
        state.end += sum(len(line) for line in lines)

    def _catch_up(self, target: Path, state: _Open) -> None:
        """Learn the ids of the lines appended past ``state.end``; end a torn last line.

        Call with the file's lock held, so that no other writer is in the middle
        of a write: a last line without its newline was cut short.
        """
        if not state.regular:
            return
        fd = state.file.fileno()
        size = os.fstat(fd).st_size
        if size == state.end:
            return
        start = state.end if size > state.end else 0  # smaller: truncated by someone
        window = self._windows.get(target)
        if window is not None:
            for record_id in tail_ids(fd, start, size, window.size):
                window.add(record_id)
        if size and os.pread(fd, 1, size - 1) != b"\n":
            _write_all(fd, b"\n")
            size += 1
        state.end = size

    def _file_for(self, target: Path, now: datetime) -> _Open:
        """The open file for ``target``: reopened if it was moved, rotated if its period ended."""
        state = self._files.get(target)
        if state is not None and not _same_file(target, state.file):
            # Rotated by another process, or by logrotate: what was added to it before counts.
            with _locked_file(state):
                self._catch_up(target, state)
            self._forget(target)
            state = None
        if state is None:
            state = self._open_file(target)
        self._files.move_to_end(target)
        if self.rotate is not None and state.period != _period(now, self.rotate):
            state = self._rotate(target, state, now)
        return state

    def _open_file(self, target: Path) -> _Open:
        if self._fields:
            target.parent.mkdir(parents=True, exist_ok=True)
        regular = _regular_or_missing(target)
        # Regular files are read too (the ids of their last lines); a FIFO only written to.
        # Unbuffered: a write that failed leaves no bytes behind to be flushed later.
        handle = FileIO(target, "a+" if regular else "a")
        info = os.fstat(handle.fileno())
        period = None
        if self.rotate is not None:
            # A file that already has lines belongs to the period it was last written in.
            when = datetime.fromtimestamp(info.st_mtime, UTC) if info.st_size else self._clock()
            period = _period(when, self.rotate)
        state = _Open(handle, period, regular=regular and stat.S_ISREG(info.st_mode))
        first = self.dedupe and state.regular and target not in self._windows
        if first:
            self._windows[target] = Window(self.dedupe_window)
        try:
            with _locked_file(state):
                self._catch_up(target, state)
            if first:
                self._learn_rotated(target)
        except BaseException:
            handle.close()
            if first:
                del self._windows[target]
            raise
        self._files[target] = state
        while len(self._files) > MAX_OPEN_FILES:
            oldest = next(iter(self._files))
            self._forget(oldest)
            self._windows.pop(oldest, None)  # reopened later, it is read again
        return state

    def _learn_rotated(self, target: Path) -> None:
        """Fewer lines at ``target`` than its window holds: learn those of its last rotation."""
        window = self._windows[target]
        previous = last_rotated(target) if len(window) < window.size else None
        if previous is not None:
            with FileIO(previous) as handle:
                fd = handle.fileno()
                window.add_older(tail_ids(fd, 0, os.fstat(fd).st_size, window.size))

    def _rotate(self, target: Path, state: _Open, now: datetime) -> _Open:
        """Move ``target`` aside under a tag, unless another process already did; reopen it."""
        with _locked_directory(target.parent):
            with _locked_file(state):
                self._catch_up(target, state)  # lines others added are in the rotated file
            if _same_file(target, state.file) and os.fstat(state.file.fileno()).st_size:
                tag = state.period or now.strftime("%Y-%m-%dT%H-%M-%S")
                os.rename(target, _free_name(target, tag))
            self._forget(target)
            fresh = self._open_file(target)
        if self.rotate is not None:
            fresh.period = _period(now, self.rotate)
        return fresh

    def _forget(self, target: Path) -> None:
        """Close ``target``'s file; its window stays, for the file that takes its place."""
        state = self._files.pop(target, None)
        if state is not None:
            with contextlib.suppress(OSError):  # its error was reported with the write
                state.file.close()


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: ``os.write`` may take only part of it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _regular_or_missing(target: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        return True


def _template_fields(path: str) -> set[str]:
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(path) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"sink jsonl: path template {path!r} is not valid: {exc}") from None
    unknown = fields - _PLACEHOLDERS
    if unknown:
        raise ConfigError(
            f"sink jsonl: path template {path!r} uses {{{sorted(unknown)[0]}}}; "
            "the placeholders are {facility} and {severity} (write {{ and }} for braces)"
        )
    return fields


def _fixed_directory(template: str) -> Path:
    """The deepest directory of ``template`` that has no placeholder in it."""
    fixed = Path(template[: template.index("{")] + "x")
    return fixed.parent


def _period(when: datetime, rotate: Rotate) -> str:
    return when.astimezone(UTC).strftime(_PERIOD_FORMAT[rotate])


def _same_file(target: Path, handle: FileIO) -> bool:
    try:
        on_disk = os.stat(target)
    except FileNotFoundError:
        return False
    mine = os.fstat(handle.fileno())
    return (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev, mine.st_ino)


def _free_name(target: Path, tag: str) -> Path:
    """``all.jsonl`` -> ``all.<tag>.jsonl``, or ``all.<tag>.<n>.jsonl`` if that is taken."""
    stem, suffix = target.stem, target.suffix
    candidate = target.with_name(f"{stem}.{tag}{suffix}")
    number = 0
    while candidate.exists():
        number += 1
        candidate = target.with_name(f"{stem}.{tag}.{number}{suffix}")
    return candidate


@contextlib.contextmanager
def _locked_file(state: _Open) -> Iterator[None]:
    """Hold an exclusive lock on ``state``'s file, so that writers append one at a time."""
    if not state.regular:
        yield
        return
    fd = state.file.fileno()
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def _locked_directory(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory``, so that processes rotate one at a time."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
