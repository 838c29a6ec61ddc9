"""AMQP 0-9-1 content headers as bytes: basic properties written and read, pika's way.

The pika transport uses :func:`encode_properties` (through ``_properties``) and
reads its consumers' deliveries with :func:`decode_properties` (``_amqp_inbound``).
The encodings are pika's byte for byte, and what is read gets pika's values and
types. Nothing here imports pika at import time (only tables beyond plain
strings go to pika's codec).
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
from collections.abc import Callable
from typing import Any

from logbus.message import Properties

__all__ = [
    "FRAME_END",
    "decode_properties",
    "decode_table",
    "default_connection_name",
    "encode_properties",
]

FRAME_END = 0xCE

_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")
_INT32 = 2**31
_TABLE_CACHE_SIZE = 512
_tables: dict[tuple[tuple[str, str], ...], bytes] = {}
_decoded_tables: dict[bytes, dict[Any, Any]] = {}


def default_connection_name() -> str:
    """``logbus-<host>-<pid>-<random>``: unique, and says where the connection comes from."""
    return f"logbus-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


# -- content headers --------------------------------------------------------------

# (attribute, flag bit) of the short-string properties, in spec order around the others.
_HEAD = (("content_type", 15), ("content_encoding", 14))
_MIDDLE = (("correlation_id", 10), ("reply_to", 9), ("expiration", 8), ("message_id", 7))
_TAIL = (("type", 5), ("user_id", 4), ("app_id", 3), ("cluster_id", 2))


def _short(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return bytes((len(raw),)) + raw


def _headers(headers: dict[str, Any]) -> bytes:
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
    from pika import data as pika_data  # other values: pika's own table encoder

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
        parts.append(_headers(headers))
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


# -- content headers, inbound -------------------------------------------------------


def _text(raw: bytes) -> str | bytes:
    """A received string as pika has it: text if it is UTF-8, else the bytes."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def decode_table(data: bytes, at: int) -> tuple[dict[Any, Any], int]:
    """The field table at ``at`` exactly as ``pika.data.decode_table`` reads it, and where
    it ends. Tables of string values (what logbus and most clients send) are read here,
    and the last few kept, as a message's headers repeat; any other value kind hands the
    whole table to pika's decoder."""
    (size,) = _UINT32.unpack_from(data, at)
    end = at + 4 + size
    raw = data[at:end]
    known = _decoded_tables.get(raw)
    if known is not None:
        return dict(known), end
    if len(raw) < size + 4:
        raise ValueError("a header table ended early")
    table: dict[Any, Any] = {}
    unpack = _UINT32.unpack_from
    pos = 4
    limit = size + 4
    while pos < limit:
        klen = raw[pos]
        key = raw[pos + 1 : pos + 1 + klen]
        pos += 1 + klen
        if raw[pos] != 0x53:  # not 'S': some other kind of value
            from pika import data as pika_data

            decoded: tuple[dict[Any, Any], int] = pika_data.decode_table(data, at)
            return decoded
        (vlen,) = unpack(raw, pos + 1)
        pos += 5
        value = raw[pos : pos + vlen]
        pos += vlen
        if len(value) < vlen:
            raise ValueError("a header table ended early")
        try:
            table[key.decode()] = value.decode()
        except UnicodeDecodeError:
            table[_text(key)] = _text(value)
    if pos != limit:
        raise ValueError("a header table's last value runs past its end")
    if len(_decoded_tables) >= _TABLE_CACHE_SIZE:
        _decoded_tables.clear()
    _decoded_tables[raw] = table
    return dict(table), end


def decode_properties(data: bytes, at: int) -> Properties:
    """Basic properties read from ``data`` at ``at`` (a content header's flags), with
    the values and Python types pika's ``BasicProperties.decode`` gives them; headers
    absent or empty become ``{}``, as :class:`Properties` has them. ``ValueError``
    (or ``struct.error``, ``IndexError``) for a header that ends early or uses a second
    flag word, which AMQP 0-9-1 never needs for basic properties."""
    (flags,) = _UINT16.unpack_from(data, at)
    at += 2
    if flags & 1:
        raise ValueError("a second property flag word")
    content_type = content_encoding = correlation_id = reply_to = expiration = None
    message_id = kind = user_id = app_id = None
    delivery_mode = priority = timestamp = None
    headers: dict[Any, Any] = {}
    if flags & 0x8000:
        content_type, at = _read_short(data, at)
    if flags & 0x4000:
        content_encoding, at = _read_short(data, at)
    if flags & 0x2000:
        headers, at = decode_table(data, at)
    if flags & 0x1000:
        delivery_mode = data[at]
        at += 1
    if flags & 0x0800:
        priority = data[at]
        at += 1
    if flags & 0x0780:
        if flags & 0x0400:
            correlation_id, at = _read_short(data, at)
        if flags & 0x0200:
            reply_to, at = _read_short(data, at)
        if flags & 0x0100:
            expiration, at = _read_short(data, at)
        if flags & 0x0080:
            message_id, at = _read_short(data, at)
    if flags & 0x0040:
        (timestamp,) = _UINT64.unpack_from(data, at)
        at += 8
    if flags & 0x003C:
        if flags & 0x0020:
            kind, at = _read_short(data, at)
        if flags & 0x0010:
            user_id, at = _read_short(data, at)
        if flags & 0x0008:
            app_id, at = _read_short(data, at)
        if flags & 0x0004:  # cluster_id: read past; Properties has no such field
            _, at = _read_short(data, at)
    return Properties(
        content_type,
        content_encoding,
        delivery_mode,
        priority,
        correlation_id,
        reply_to,
        expiration,
        message_id,
        timestamp,
        kind,
        user_id,
        app_id,
        headers,
    )


def _read_short(data: bytes, at: int) -> tuple[Any, int]:
    """A short string at ``at`` as pika decodes it (the bytes if not UTF-8), and its end."""
    size = data[at]
    end = at + 1 + size
    raw = data[at + 1 : end]
    if len(raw) < size:
        raise ValueError("a content header ended early")
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        return raw, end
