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
``max_batch`` / ``max_wait``
    The batch hints (100 records; 0 s).

A rotated file keeps its name with a tag before the extension: the hour or day
it covers with ``rotate`` (``all.2025-01-02T03.jsonl``), else the UTC time of
the rotation (``all.2025-01-02T03-04-05.jsonl``); a tag already taken gets
``.1``, ``.2`` ... Processes sharing a file (``--pool process``) rotate it once:
they take a lock on the directory and reopen a file another one has moved,
as they do after an outside ``logrotate``.

The file is opened for appending, so several workers (or restarts of one) add
to the same file and never truncate it. Records the broker redelivers (after a
worker died before its ack) may appear twice; their ``id`` says so.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import string
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from logbus.errors import ConfigError
from logbus.record import LogRecord
from logbus.sinks._options import ByteSize, ConfigurableSink, SinkOptions

__all__ = ["JsonlOptions", "JsonlSink"]

#: Files kept open at once with a template; the least recently used is closed beyond.
MAX_OPEN_FILES = 64
_PLACEHOLDERS = frozenset({"facility", "severity"})
_PERIOD_FORMAT = {"hourly": "%Y-%m-%dT%H", "daily": "%Y-%m-%d"}

Rotate = Literal["hourly", "daily"]
Fsync = Literal["always", "batch", "never"]


class JsonlOptions(SinkOptions):
    """What ``jsonl`` takes: the path (or template), rotation and the fsync policy."""

    path: str
    max_bytes: ByteSize | None = None
    rotate: Rotate | None = None
    fsync: Fsync = "never"


@dataclass
class _Open:
    """One file being appended to, and the rotation period it belongs to."""

    file: BinaryIO
    period: str | None


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
        max_batch: int = 100,
        max_wait: float = 0.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.max_bytes = max_bytes
        self.rotate: Rotate | None = rotate
        self.fsync: Fsync = fsync
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._clock = clock or (lambda: datetime.now(UTC))
        self._fields = _template_fields(str(self.path))
        self._files: OrderedDict[Path, _Open] = OrderedDict()
        self._opened = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the file for appending (a template: check that its fixed directory exists)."""
        with self._lock:
            if self._fields:
                root = _fixed_directory(str(self.path))
                if not root.is_dir():
                    raise ConfigError(
                        f"sink jsonl: directory {str(root)!r} of the template "
                        f"{str(self.path)!r} does not exist (create it first)"
                    )
            else:
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
        """Append the batch; a file that cannot be written fails the records meant for it."""
        groups: dict[Path, list[int]] = {}
        lines = [record.to_bytes() + b"\n" for record in batch]
        for index, record in enumerate(batch):
            groups.setdefault(self._target(record), []).append(index)
        results: list[Exception | None] = [None] * len(batch)
        with self._lock:
            if not self._opened:
                raise ConfigError(f"sink jsonl:{self.path} was written to before open()")
            now = self._clock()
            for target, indexes in groups.items():
                try:
                    self._append(target, [lines[i] for i in indexes], now)
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
            self._opened = False

    def __repr__(self) -> str:
        return f"<JsonlSink {str(self.path)!r}>"

    def _target(self, record: LogRecord) -> Path:
        if not self._fields:
            return self.path
        return Path(str(self.path).format(facility=record.facility, severity=record.severity.word))

    def _append(self, target: Path, lines: list[bytes], now: datetime) -> None:
        state = self._file_for(target, now)
        data = b"".join(lines)
        if self.max_bytes is not None:
            # The size on disk, not a count of our own writes: other processes append too.
            size = os.fstat(state.file.fileno()).st_size
            if size and size + len(data) > self.max_bytes:
                state = self._rotate(target, state, now)
        if self.fsync == "always":
            for line in lines:
                state.file.write(line)
                state.file.flush()
                os.fsync(state.file.fileno())
        else:
            state.file.write(data)
            state.file.flush()
            if self.fsync == "batch":
                os.fsync(state.file.fileno())

    def _file_for(self, target: Path, now: datetime) -> _Open:
        """The open file for ``target``: reopened if it was moved, rotated if its period ended."""
        state = self._files.get(target)
        if state is not None and not _same_file(target, state.file):
            self._forget(target)  # rotated by another process, or by logrotate
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
        handle = open(target, "ab")  # noqa: SIM115 (kept open across writes)
        info = os.fstat(handle.fileno())
        period = None
        if self.rotate is not None:
            # A file that already has lines belongs to the period it was last written in.
            when = datetime.fromtimestamp(info.st_mtime, UTC) if info.st_size else self._clock()
            period = _period(when, self.rotate)
        state = _Open(handle, period)
        self._files[target] = state
        while len(self._files) > MAX_OPEN_FILES:
            self._forget(next(iter(self._files)))
        return state

    def _rotate(self, target: Path, state: _Open, now: datetime) -> _Open:
        """Move ``target`` aside under a tag, unless another process already did; reopen it."""
        with _locked_directory(target.parent):
            if _same_file(target, state.file) and os.fstat(state.file.fileno()).st_size:
                tag = state.period or now.strftime("%Y-%m-%dT%H-%M-%S")
                os.rename(target, _free_name(target, tag))
            self._forget(target)
            fresh = self._open_file(target)
        if self.rotate is not None:
            fresh.period = _period(now, self.rotate)
        return fresh

    def _forget(self, target: Path) -> None:
        state = self._files.pop(target, None)
        if state is not None:
            with contextlib.suppress(OSError):  # its error was reported with the write
                state.file.close()


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


def _same_file(target: Path, handle: BinaryIO) -> bool:
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
def _locked_directory(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory``, so that processes rotate one at a time."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
