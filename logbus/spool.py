"""The spool: records kept on disk while RabbitMQ cannot take them, replayed in order.

A gateway that reads syslog from senders with no acknowledgement of their own
(UDP, plain TCP) has two choices when the broker is away: stop reading (the
senders' buffers fill, then they drop) or keep the lines somewhere safe. The
spool is that somewhere: an append-only log of records in a directory.

Layout: segment files ``seg-<n>.log`` (``n`` grows), each a run of entries
``LENGTH CRC32 PAYLOAD`` (two big-endian 32-bit words, then the record's wire
JSON), and a ``head`` file naming the first entry not yet confirmed
(``<segment> <offset>``), replaced atomically. Entries are read from the head
in the order they were appended; :meth:`Spool.commit` moves the head once
RabbitMQ confirmed them and deletes the segments left behind. A crash at any
point loses nothing that was synced: a torn last entry (the write was cut) is
cut off when the spool is opened again, an entry whose checksum fails is
skipped and counted in :attr:`Spool.corrupt` (it counts as waiting until a read
passes it, and the commit after that read takes it off, so a spool of corrupt
entries only still empties), and entries confirmed but not yet committed come
out again (at least once; records keep their ``id``).

One process at a time: the directory is locked (``flock``) while a spool has it open; a
second gateway is refused, while ``logbus emit --spool`` and the logging handler's
``spool=`` (``wait=True``) wait their turn. :func:`replay` sends a spool's records
from its head through any confirmed publish (``Emitter.emit_many``).
``max_bytes`` bounds the directory: :meth:`Spool.append` raises
:class:`SpoolFull` rather than grow past it, and the gateway then holds its
readers back. ``fsync`` says when appended entries are forced to disk:
``always`` (before :meth:`append` returns), ``second`` (at most once a
second, and at close) or ``never`` (the system's own pace).
"""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from time import monotonic
from typing import Any, BinaryIO, Final, Literal

from logbus.errors import ConfigError, LogbusError

__all__ = ["FSYNC_POLICIES", "FsyncPolicy", "Spool", "SpoolFull", "replay"]

FsyncPolicy = Literal["always", "second", "never"]
FSYNC_POLICIES: Final = ("always", "second", "never")
_ENTRY = struct.Struct(">II")
_SEGMENT_BYTES: Final = 16 * 1024 * 1024
_MAX_ENTRY: Final = 256 * 1024 * 1024  # no record is larger: a bigger length is a torn header


class SpoolFull(LogbusError):
    """The spool is at its size bound; the gateway holds back until replay frees room."""

    recoverable = True


def _segment_name(number: int) -> str:
    return f"seg-{number:016d}.log"


class Spool:
    """An append-only, checksummed, size-bounded queue of records on disk (module doc).

    Used from one thread (the gateway's publisher). ``len(spool)`` is how many
    entries wait behind the head.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 1024**3,
        fsync: FsyncPolicy = "always",
        segment_bytes: int = _SEGMENT_BYTES,
        wait: bool = False,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ConfigError(f"spool fsync must be one of {', '.join(FSYNC_POLICIES)}")
        if max_bytes < 1 or segment_bytes < 1:
            raise ConfigError("the spool's max_bytes and segment_bytes must be positive")
        self.path = Path(directory)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot use {self.path} as a spool: {exc.strerror}") from None
        self._lock = open(self.path / "lock", "a")  # noqa: SIM115  (held while open)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            self._lock.close()
            raise ConfigError(f"the spool {self.path} is in use by another process") from None
        self.max_bytes = max_bytes
        self.fsync: FsyncPolicy = fsync
        self.segment_bytes = segment_bytes
        #: Entries whose checksum failed, skipped when read.
        self.corrupt = 0
        self._corrupt_at: set[tuple[int, int]] = set()
        # peek's end position -> corrupt entries it skipped, taken off by that commit
        self._skipped: dict[tuple[int, int], int] = {}
        self._synced_at = monotonic()
        self._dirty = False
        self._head = self._read_head()
        self._count, self._bytes = self._scan()
        self._tail_number = max(self._segments(), default=self._head[0])
        self._tail: BinaryIO = open(self.path / _segment_name(self._tail_number), "ab")  # noqa: SIM115

    def __len__(self) -> int:
        """Entries behind the head, those that will fail their checksum included."""
        return self._count

    @property
    def size(self) -> int:
        """Bytes of the segments on disk (the bound applies to this)."""
        return self._bytes

    # -- writing ------------------------------------------------------------------

    def append(self, payloads: Iterable[bytes]) -> int:
        """Append entries in order; how many. Raises :class:`SpoolFull` before writing
        any of them when they would take the spool past ``max_bytes``."""
        blob = bytearray()
        count = 0
        for payload in payloads:
            blob += _ENTRY.pack(len(payload), zlib.crc32(payload)) + payload
            count += 1
        if not count:
            return 0
        if self._bytes + len(blob) > self.max_bytes:
            raise SpoolFull(
                f"the spool {self.path} is full ({self._bytes} of {self.max_bytes} bytes)"
            )
        if self._tail.tell() >= self.segment_bytes:
            self._roll()
        self._tail.write(blob)
        self._tail.flush()
        self._bytes += len(blob)
        self._count += count
        self._dirty = True
        if self.fsync == "always" or (
            self.fsync == "second" and monotonic() - self._synced_at >= 1.0
        ):
            self.sync()
        return count

    def sync(self) -> None:
        """Force what was appended to disk."""
        if self._dirty:
            os.fsync(self._tail.fileno())
            self._dirty = False
        self._synced_at = monotonic()

    def _roll(self) -> None:
        self.sync()
        self._tail.close()
        self._tail_number += 1
        self._tail = open(self.path / _segment_name(self._tail_number), "ab")  # noqa: SIM115
        self._sync_directory()

    # -- reading and committing ---------------------------------------------------

    def peek(self, limit: int) -> tuple[list[bytes], tuple[int, int]]:
        """Up to ``limit`` entries from the head, and the position just after them
        (give it to :meth:`commit` once they were confirmed). Corrupt entries on the way
        are skipped (not part of ``limit``), and the commit to that position drops them."""
        out: list[bytes] = []
        skipped = 0
        number, offset = self._head
        while len(out) < limit and number <= self._tail_number:
            path = self.path / _segment_name(number)
            if not path.exists():
                number, offset = number + 1, 0
                continue
            with open(path, "rb") as segment:
                segment.seek(offset)
                while len(out) < limit:
                    entry, size = self._read_entry(segment)
                    if size == 0:
                        break
                    offset += size
                    if entry is not None:
                        out.append(entry)
                    else:
                        skipped += 1
                        self._corrupt_at.add((number, offset))
                        self.corrupt = len(self._corrupt_at)
            if len(out) < limit and number < self._tail_number:
                number, offset = number + 1, 0
            else:
                break
        if skipped:
            if len(self._skipped) >= 64:  # positions peeked and never committed
                self._skipped.clear()
            self._skipped[number, offset] = skipped
        return out, (number, offset)

    def commit(self, position: tuple[int, int], count: int) -> None:
        """``count`` entries up to ``position`` were confirmed: move the head past them and
        delete the segments now wholly behind it (and the corrupt entries the read to
        ``position`` skipped)."""
        self._write_head(position)
        self._count = max(0, self._count - count - self._skipped.pop(position, 0))
        self._skipped.clear()  # positions before this one are behind the head now
        for number in self._segments():
            if number < position[0]:
                path = self.path / _segment_name(number)
                self._bytes -= path.stat().st_size
                path.unlink()
        if self._count == 0 and position[0] == self._tail_number and self._tail.tell() > 0:
            # Everything is confirmed: start the tail again rather than grow it forever.
            self._roll()
            self._write_head((self._tail_number, 0))
            old = self.path / _segment_name(self._tail_number - 1)
            self._bytes -= old.stat().st_size
            old.unlink()

    def close(self) -> None:
        """Sync and close the tail segment."""
        if not self._tail.closed:
            self.sync()
            self._tail.close()
        self._lock.close()

    # -- on disk ------------------------------------------------------------------

    def _read_entry(self, segment: BinaryIO) -> tuple[bytes | None, int]:
        """The next entry (None if its checksum failed) and its size; size 0 at the end
        or at a torn entry."""
        header = segment.read(_ENTRY.size)
        if len(header) < _ENTRY.size:
            return None, 0
        length, crc = _ENTRY.unpack(header)
        if length > _MAX_ENTRY:
            return None, 0
        payload = segment.read(length)
        if len(payload) < length:
            return None, 0
        if zlib.crc32(payload) != crc:
            return None, _ENTRY.size + length
        return payload, _ENTRY.size + length

    def _segments(self) -> list[int]:
        numbers = []
        for path in self.path.glob("seg-*.log"):
            try:
                numbers.append(int(path.stem.removeprefix("seg-")))
            except ValueError:
                continue
        return sorted(numbers)

    def _read_head(self) -> tuple[int, int]:
        try:
            number, offset = (self.path / "head").read_text().split()
            return int(number), int(offset)
        except (OSError, ValueError):
            segments = self._segments()
            return (segments[0] if segments else 0), 0

    def _write_head(self, position: tuple[int, int]) -> None:
        temporary = self.path / "head.tmp"
        with open(temporary, "w") as head:
            head.write(f"{position[0]} {position[1]}\n")
            head.flush()
            if self.fsync != "never":
                os.fsync(head.fileno())
        os.replace(temporary, self.path / "head")
        self._head = position

    def _scan(self) -> tuple[int, int]:
        """Count the entries behind the head and the bytes on disk; cut a torn tail off."""
        count = size = 0
        segments = self._segments()
        for number in segments:
            path = self.path / _segment_name(number)
            if number < self._head[0]:
                path.unlink()  # left behind by a crash between head and delete
                continue
            with open(path, "r+b") as segment:
                offset = self._head[1] if number == self._head[0] else 0
                segment.seek(offset)
                while True:
                    _, length = self._read_entry(segment)
                    if length == 0:
                        break
                    offset += length
                    count += 1  # a corrupt one too: it waits until a read skips it
                if number == segments[-1]:
                    segment.truncate(offset)  # a torn last entry: its write was cut
            size += path.stat().st_size
        return count, size

    def _sync_directory(self) -> None:
        if self.fsync == "never":
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replay(spool: Spool, publish: Callable[[list[Any]], object], batch: int = 1000) -> int:
    """Publish ``spool``'s records from its head, in order, ``batch`` at a time, each batch
    committed (deleted) once ``publish`` returned (confirmed); how many went. What
    ``publish`` raises is raised, and the rest stays for the next time."""
    from logbus.record import decode  # here: a spool that is never replayed needs no records

    sent = 0
    while len(spool):
        entries, position = spool.peek(batch)
        if entries:
            publish([decode(entry) for entry in entries])
        spool.commit(position, len(entries))
        sent += len(entries)
        if not entries:
            break  # only entries that failed their checksum were left (counted in corrupt)
    return sent
