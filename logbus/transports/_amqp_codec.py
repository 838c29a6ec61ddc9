"""AMQP 0-9-1 on the wire, as bytes: frames, the methods a publisher sends, tables, properties.

The pika transport uses :func:`encode_properties` (through ``_properties``) and
reads its consumers' deliveries with :func:`decode_properties` (``_amqp_inbound``); the
one-shot publisher of ``logbus emit`` (``_oneshot``) builds every frame it sends
here and reads the broker's frames back with :func:`parse_method`. The encodings
are pika's byte for byte (a test compares them), so a broker cannot tell the two
clients apart by what they send, and what is read gets pika's values and types. Nothing
here imports pika at import time (only tables beyond plain strings go to pika's codec).
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from logbus.message import Properties

__all__ = [
    "FRAME_END",
    "FRAME_HEARTBEAT",
    "FRAME_MAX",
    "HEARTBEAT",
    "PROTOCOL_HEADER",
    "Reader",
    "content",
    "decode_properties",
    "decode_table",
    "default_connection_name",
    "encode_properties",
    "encode_table",
    "frame",
    "long_string",
    "method",
    "short_string",
]

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
FRAME_MAX = 131072  # pika's default, which the broker may lower
CHANNEL_MAX = 65535
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"

_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")
_FRAME = struct.Struct(">BHI")
_INT32 = 2**31
_TABLE_CACHE_SIZE = 512
_tables: dict[tuple[tuple[str, str], ...], bytes] = {}
_decoded_tables: dict[bytes, dict[Any, Any]] = {}


def default_connection_name() -> str:
    """``logbus-<host>-<pid>-<random>``: unique, and says where the connection comes from."""
    return f"logbus-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def client_properties(connection_name: str, version: str) -> dict[str, Any]:
    """What a client tells the broker about itself in ``connection.start-ok``."""
    return {
        "product": "logbus",
        "platform": "Python {}.{}.{}".format(*sys.version_info[:3]),
        "capabilities": {
            "authentication_failure_close": True,
            "basic.nack": True,
            "connection.blocked": True,
            "consumer_cancel_notify": True,
            "exchange_exchange_bindings": True,
            "publisher_confirms": True,
        },
        "information": "logbus emit, one-shot publisher",
        "version": version,
        "connection_name": connection_name,
    }


# -- values -----------------------------------------------------------------------


def short_string(value: str | bytes) -> bytes:
    """An AMQP short string; ``ValueError`` beyond 255 bytes (pika refuses them too)."""
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) > 255:
        raise ValueError(f"{raw[:40]!r}... is longer than AMQP's 255-byte short strings")
    return bytes((len(raw),)) + raw


def long_string(value: str | bytes) -> bytes:
    """An AMQP long string: 32-bit length, then the bytes."""
    raw = value.encode() if isinstance(value, str) else value
    return _UINT32.pack(len(raw)) + raw


def _value(value: Any) -> bytes:
    """One field value as pika encodes it, for the types logbus sends."""
    if isinstance(value, str):
        return b"S" + long_string(value)
    if isinstance(value, bytes):
        return b"x" + long_string(value)
    if isinstance(value, bool):
        return b"t" + bytes((int(value),))
    if isinstance(value, int):
        if -_INT32 <= value < _INT32:
            return b"I" + struct.pack(">i", value)
        return b"l" + struct.pack(">q", value)
    if isinstance(value, dict):
        return b"F" + encode_table(value)
    if isinstance(value, list):
        items = b"".join(_value(item) for item in value)
        return b"A" + _UINT32.pack(len(items)) + items
    if value is None:
        return b"V"
    raise ValueError(f"cannot encode a {type(value).__name__} in an AMQP table here")


def encode_table(table: Mapping[str, Any] | None) -> bytes:
    """An AMQP field table (None is the empty table), as pika encodes it."""
    body = b"".join(short_string(k) + _value(v) for k, v in (table or {}).items())
    return _UINT32.pack(len(body)) + body


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


# -- frames -----------------------------------------------------------------------


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    """One frame: type, channel, size, payload, frame-end."""
    return _FRAME.pack(kind, channel, len(payload)) + payload + b"\xce"


def method(channel: int, class_id: int, method_id: int, *args: bytes) -> bytes:
    """A method frame whose arguments are already encoded."""
    return frame(
        FRAME_METHOD, channel, _UINT16.pack(class_id) + _UINT16.pack(method_id) + b"".join(args)
    )


def content(channel: int, properties: bytes, body: bytes, frame_max: int) -> bytes:
    """The content header and body frames of one message; ``properties`` encoded."""
    header = struct.pack(">HHQ", 60, 0, len(body)) + properties
    chunk = frame_max - 8  # a body frame's payload: the frame less its 8 bytes of framing
    bodies = b"".join(
        frame(FRAME_BODY, channel, body[i : i + chunk]) for i in range(0, len(body), chunk)
    )
    return frame(FRAME_HEADER, channel, header) + bodies


def bits(*flags: bool) -> bytes:
    """Consecutive bit arguments packed into one octet, first flag lowest."""
    return bytes((sum(1 << i for i, flag in enumerate(flags) if flag),))


def u16(value: int) -> bytes:
    """A 16-bit unsigned argument."""
    return _UINT16.pack(value)


def u32(value: int) -> bytes:
    """A 32-bit unsigned argument."""
    return _UINT32.pack(value)


# -- reading ----------------------------------------------------------------------


class Reader:
    """Arguments of a received method, read in order."""

    __slots__ = ("_at", "_data")

    def __init__(self, data: bytes, at: int = 4) -> None:
        self._data = data
        self._at = at

    def _take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise ValueError("a method frame ended early")
        piece = self._data[self._at : self._at + size]
        self._at += size
        return piece

    def octet(self) -> int:
        return self._take(1)[0]

    def u16(self) -> int:
        value: int = _UINT16.unpack(self._take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _UINT32.unpack(self._take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _UINT64.unpack(self._take(8))[0]
        return value

    def short(self) -> str:
        return self._take(self.octet()).decode("utf-8", "replace")

    def long(self) -> bytes:
        return self._take(self.u32())

    def skip_table(self) -> None:
        self._take(self.u32())


def parse_method(payload: bytes) -> tuple[tuple[int, int], Reader]:
    """A method frame's (class, method) ids and a reader over its arguments."""
    if len(payload) < 4:
        raise ValueError("a method frame without class and method ids")
    class_id, method_id = struct.unpack_from(">HH", payload)
    return (class_id, method_id), Reader(payload)


def split_frames(buffer: bytearray) -> Iterator[tuple[int, int, bytes]]:
    """Take the complete frames off the front of ``buffer``: (type, channel, payload).

    ``ValueError`` for a frame that does not end with frame-end.
    """
    while len(buffer) >= 7:
        kind, channel, size = _FRAME.unpack_from(buffer)
        if len(buffer) < 7 + size + 1:
            return
        if buffer[7 + size] != FRAME_END:
            raise ValueError("a frame does not end with frame-end (0xCE)")
        payload = bytes(buffer[7 : 7 + size])
        del buffer[: 8 + size]
        yield kind, channel, payload


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
