"""A faster content header for pika: ``BasicProperties`` whose ``encode`` is ours.

pika encodes every publish's properties in pure Python, one small piece at a
time; on the I/O thread that is most of the cost of a confirmed publish. The
encoding here produces the same bytes (AMQP 0-9-1 basic properties, flags then
fields in spec order) with fewer steps, and keeps the last few header tables
already encoded: records from one emitter repeat facility, severity, host and
app. Anything but plain string headers is left to pika's own table encoder.
"""

from __future__ import annotations

import struct
from typing import Any

import pika
from pika import data as pika_data

__all__ = ["FastProperties"]

_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")
_TABLE_CACHE_SIZE = 512
_tables: dict[tuple[tuple[str, str], ...], bytes] = {}

# (attribute, flag bit) of the short-string properties, in spec order around the others.
_HEAD = (("content_type", 15), ("content_encoding", 14))
_MIDDLE = (("correlation_id", 10), ("reply_to", 9), ("expiration", 8), ("message_id", 7))
_TAIL = (("type", 5), ("user_id", 4), ("app_id", 3), ("cluster_id", 2))


def _short(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return bytes((len(raw),)) + raw


def _table(headers: dict[str, Any]) -> bytes:
    items = tuple(headers.items())
    if all(type(k) is str and type(v) is str for k, v in items):
        cached = _tables.get(items)
        if cached is not None:
            return cached
        body = b"".join(
            _short(k) + b"S" + _UINT32.pack(len(raw)) + raw
            for k, v in items
            for raw in (v.encode(),)
        )
        encoded = _UINT32.pack(len(body)) + body
        if len(_tables) >= _TABLE_CACHE_SIZE:
            _tables.clear()
        _tables[items] = encoded
        return encoded
    pieces: list[bytes] = []
    pika_data.encode_table(pieces, headers)
    return b"".join(pieces)


class FastProperties(pika.BasicProperties):  # type: ignore[misc]
    """``pika.BasicProperties`` with a quicker, byte-identical ``encode``."""

    def encode(self) -> list[bytes]:
        """The encoded property flags and fields, as pika's own ``encode`` returns them."""
        flags = 0
        parts: list[bytes] = []
        for name, bit in _HEAD:
            value = getattr(self, name)
            if value is not None:
                flags |= 1 << bit
                parts.append(_short(value))
        if self.headers is not None:
            flags |= 1 << 13
            parts.append(_table(self.headers))
        if self.delivery_mode is not None:
            flags |= 1 << 12
            parts.append(bytes((self.delivery_mode,)))
        if self.priority is not None:
            flags |= 1 << 11
            parts.append(bytes((self.priority,)))
        for name, bit in _MIDDLE:
            value = getattr(self, name)
            if value is not None:
                flags |= 1 << bit
                parts.append(_short(value))
        if self.timestamp is not None:
            flags |= 1 << 6
            parts.append(_UINT64.pack(self.timestamp))
        for name, bit in _TAIL:
            value = getattr(self, name)
            if value is not None:
                flags |= 1 << bit
                parts.append(_short(value))
        return [_UINT16.pack(flags), *parts]
