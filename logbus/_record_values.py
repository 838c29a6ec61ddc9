"""A record's default values and the check of its ``fields``, kept apart from
:mod:`logbus.record` (which re-exports them) so that module stays one screenful of
the record itself: the id, the time and the host a record gets when not told,
the wire's form of a time, and what counts as JSON data under ``fields``."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any

from logbus._keys import show
from logbus.errors import RecordError

__all__ = ["epoch_seconds", "format_ts", "hostname", "new_id", "now"]

_MAX_DEPTH = 100
_IDS_PER_DRAW = 512  # ids made from one os.urandom call
# RFC 4122 version 4: the version nibble of byte 6, the variant bits of byte 8.
_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
_ids: list[str] = []
_KEEP_TIMES = 512
_formatted: dict[datetime, str] = {}
_seconds: dict[datetime, int] = {}


@cache
def hostname() -> str:
    """This machine's name, the default ``host`` of a record."""
    return socket.gethostname()


def new_id() -> str:
    """A new record id: a random UUID (version 4) as 32 hex digits.

    Ids are made :data:`_IDS_PER_DRAW` at a time from one ``os.urandom`` call: one
    system call per record was a tenth of the ingest gateway's time, and each one
    let go of the GIL and waited to get it back behind the other threads. ``pop`` on
    a list is atomic, so threads never share an id; a forked child drops what it
    inherited (its parent hands out the same ones).
    """
    try:
        return _ids.pop()
    except IndexError:
        _draw()
        return new_id()


def _draw() -> None:
    raw = bytearray(os.urandom(16 * _IDS_PER_DRAW))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    text = raw.hex()
    _ids.extend([text[i : i + 32] for i in range(0, len(text), 32)])


os.register_at_fork(after_in_child=_ids.clear)


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: ``2024-05-17T08:30:15.123456Z``.

    ``ts`` is in UTC (a record's always is). Texts are kept for the last few hundred
    times: a stream's records share their times (syslog's have whole seconds), and
    formatting one cost a third of encoding a record.
    """
    text = _formatted.get(ts)
    if text is None:
        # isoformat pads the year to four digits (strftime may not) and is faster;
        # ts is UTC, so its "+00:00" suffix is swapped for "Z".
        text = ts.isoformat(timespec="microseconds")[:-6] + "Z"
        if len(_formatted) >= _KEEP_TIMES:
            _formatted.clear()
        _formatted[ts] = text
    return text


def epoch_seconds(ts: datetime) -> int:
    """Whole seconds since the epoch (AMQP's ``timestamp``), kept as :func:`format_ts` is."""
    seconds = _seconds.get(ts)
    if seconds is None:
        seconds = int(ts.timestamp())
        if len(_seconds) >= _KEEP_TIMES:
            _seconds.clear()
        _seconds[ts] = seconds
    return seconds


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Return ``value`` as plain JSON data (tuples become lists), or raise RecordError."""
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    is_map = isinstance(value, Mapping)
    if not is_map and not isinstance(value, list | tuple):
        raise RecordError(f"fields hold the {type(value).__name__} {show(value)}; not JSON data")
    if depth >= _MAX_DEPTH:
        raise RecordError(f"fields are nested deeper than {_MAX_DEPTH} levels")
    out: dict[Any, Any] = {}
    changed = type(value) not in (dict, list)  # tuples and other mappings get rebuilt
    for key, item in value.items() if is_map else enumerate(value):
        if is_map and not isinstance(key, str):
            raise RecordError(f"fields hold the {type(key).__name__} key {show(key)}; keys are str")
        out[key] = new = _jsonable(item, depth + 1)
        changed = changed or new is not item
    if not changed:
        return value
    return out if is_map else list(out.values())
