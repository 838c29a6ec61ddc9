"""A faster content header for pika and pamqp: property classes whose encoders are ours.

pika encodes every publish's properties in pure Python, one small piece at a
time; on the I/O thread that is most of the cost of a confirmed publish. The
encoding here produces the same bytes (AMQP 0-9-1 basic properties, flags then
fields in spec order) with fewer steps, and keeps the last few header tables
already encoded: records from one emitter repeat facility, severity, host and
app. Anything but plain string headers is left to pika's own table encoder.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pika
from pamqp.commands import Basic
from pika import data as pika_data

__all__ = ["FastPamqpProperties", "FastProperties", "encode_properties"]

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


def encode_properties(get: Callable[[str], Any], *, skip_empty: bool = False) -> list[bytes]:
    """AMQP basic properties as [flags, fields...], reading each by its pika name.

    ``skip_empty`` leaves out empty strings, as pamqp does (pika sends them).
    """
    flags = 0
    parts: list[bytes] = []

    def shorts(names: tuple[tuple[str, int], ...]) -> None:
        nonlocal flags
        for name, bit in names:
            value = get(name)
            if value is not None and not (skip_empty and value == ""):
                flags |= 1 << bit
                parts.append(_short(value))

    shorts(_HEAD)
    headers = get("headers")
    if headers is not None:
        flags |= 1 << 13
        parts.append(_table(headers))
    delivery_mode = get("delivery_mode")
    if delivery_mode is not None:
        flags |= 1 << 12
        parts.append(bytes((delivery_mode,)))
    priority = get("priority")
    if priority is not None:
        flags |= 1 << 11
        parts.append(bytes((priority,)))
    shorts(_MIDDLE)
    timestamp = get("timestamp")
    if timestamp is not None:
        flags |= 1 << 6
        parts.append(_UINT64.pack(timestamp))
    shorts(_TAIL)
    return [_UINT16.pack(flags), *parts]


class FastProperties(pika.BasicProperties):  # type: ignore[misc]
    """``pika.BasicProperties`` with a quicker, byte-identical ``encode``."""

    def encode(self) -> list[bytes]:
        """The encoded property flags and fields, as pika's own ``encode`` returns them."""
        return encode_properties(self.__getattribute__)


class FastPamqpProperties(Basic.Properties):
    """pamqp's ``Basic.Properties`` with a quicker, byte-identical ``marshal``.

    No ``__slots__`` of its own on purpose: pamqp walks ``self.__slots__`` to
    marshal, and an empty tuple here would hide the real list.
    """

    def marshal(self) -> bytes:
        """The content header's property bytes, as pamqp's own ``marshal`` returns them."""
        headers = self.headers
        if headers and not all(
            type(k) is str and type(v) is str and k and v and len(k) <= 32
            for k, v in headers.items()
        ):  # pamqp has its own integer widths, empty-string and key-length rules
            return bytes(super().marshal())
        return b"".join(encode_properties(self._pika_name, skip_empty=True))

    def _pika_name(self, name: str) -> Any:
        if name == "type":
            return self.message_type
        if name == "headers":  # pamqp writes table keys sorted
            return None if self.headers is None else dict(sorted(self.headers.items()))
        if name == "timestamp":
            stamp = self.timestamp
            return None if stamp is None else int(stamp.timestamp())
        return getattr(self, name)
