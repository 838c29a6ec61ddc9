"""What the ``jsonl`` sink knows of a file's last lines: the ids of their records.

:class:`Window` holds the ids of the last lines of one path, :func:`tail_ids`
reads them from the end of a file, :func:`unseen` drops from a batch what a
window (or the batch itself) already has, and :func:`last_rotated` finds the
file last rotated from a path, whose tail counts too. See :mod:`logbus.sinks.jsonl`
for the guarantee they make up.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["ROTATED_TAG", "TAIL_BYTES", "Window", "last_rotated", "line_id", "tail_ids", "unseen"]

#: The most bytes read from the end of a file to learn the ids of its last lines.
TAIL_BYTES = 64 * 1024 * 1024
_CHUNK = 256 * 1024
#: The tags the sink puts between a rotated file's stem and suffix.
ROTATED_TAG = r"\.\d{4}-\d{2}-\d{2}(?:T\d{2}(?:-\d{2}-\d{2})?)?(?:\.\d+)?"


class Window:
    """The ids of the last ``size`` lines of one path: a set to ask, a deque to forget."""

    __slots__ = ("_ids", "_order", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._ids

    def __len__(self) -> int:
        return len(self._order)

    def isdisjoint(self, ids: set[str]) -> bool:
        """Whether none of ``ids`` is remembered."""
        return self._ids.isdisjoint(ids)

    def add(self, record_id: str) -> None:
        """Remember ``record_id`` as the newest, forgetting the oldest beyond ``size``."""
        if record_id in self._ids:
            return  # once is enough: the deque then never holds an id twice
        if len(self._order) >= self.size:
            self._ids.discard(self._order.popleft())
        self._order.append(record_id)
        self._ids.add(record_id)

    def extend(self, newer: Iterable[str]) -> None:
        """Remember each of ``newer`` (oldest first), as :meth:`add` does."""
        ids, order, size = self._ids, self._order, self.size
        for record_id in newer:  # add(), inlined: this runs for every record written
            if record_id in ids:
                continue
            if len(order) >= size:
                ids.discard(order.popleft())
            order.append(record_id)
            ids.add(record_id)

    def add_older(self, older: Sequence[str]) -> None:
        """Remember ``older`` (oldest first) as older than every id known, as room allows."""
        for record_id in reversed(older):
            if len(self._order) >= self.size:
                return
            if record_id not in self._ids:
                self._order.appendleft(record_id)
                self._ids.add(record_id)


def unseen(window: Window, lines: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The lines whose record is neither in ``window`` nor earlier in ``lines``."""
    ids = {record_id for record_id, _ in lines}
    if len(ids) == len(lines) and window.isdisjoint(ids):
        return lines  # the usual case, at the cost of one set
    fresh: list[tuple[str, bytes]] = []
    batch: set[str] = set()
    for record_id, line in lines:
        if record_id in window or record_id in batch:
            continue
        batch.add(record_id)
        fresh.append((record_id, line))
    return fresh


def tail_ids(fd: int, start: int, end: int, limit: int) -> list[str]:
    """The ids of the records of the last ``limit`` lines between ``start`` and ``end``.

    Oldest first. ``start`` is where a line begins; only lines ending before
    ``end`` count, and only those that parse as a record (not a torn one).
    Reads backwards from ``end``, at most :data:`TAIL_BYTES`.
    """
    floor = max(start, end - TAIL_BYTES)
    position = end
    chunks: list[bytes] = []
    newlines = 0
    while position > floor and newlines <= limit:
        wanted = min(_CHUNK, position - floor)
        chunk = os.pread(fd, wanted, position - wanted)
        if len(chunk) != wanted:  # truncated while we read: what we have will do
            break
        position -= wanted
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    lines = b"".join(reversed(chunks)).split(b"\n")
    lines.pop()  # after the last newline: nothing, or a line not yet ended
    if position > start and lines:
        lines.pop(0)  # the end of a line that began before what was read
    ids: list[str] = []
    for line in lines[-limit:]:
        found = line_id(line)
        if found is not None:
            ids.append(found)
    return ids


def line_id(line: bytes) -> str | None:
    """The ``id`` of a line that is a whole record's JSON, else None."""
    if not line.startswith(b"{"):
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # a torn line, or something else: no record
        return None
    record_id = data.get("id") if isinstance(data, dict) else None
    return record_id if isinstance(record_id, str) and record_id else None


def last_rotated(target: Path) -> Path | None:
    """The file most recently rotated from ``target`` (by its name's tag), if there is one."""
    pattern = re.compile(re.escape(target.stem) + ROTATED_TAG + re.escape(target.suffix) + r"\Z")
    newest: tuple[float, str] | None = None
    try:
        with os.scandir(target.parent) as entries:
            for entry in entries:
                if pattern.match(entry.name) and entry.is_file():
                    key = (entry.stat().st_mtime, entry.name)
                    newest = key if newest is None or key > newest else newest
    except OSError:
        return None
    return None if newest is None else target.with_name(newest[1])
