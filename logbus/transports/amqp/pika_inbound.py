"""Deliveries to logbus consumers read off the wire, beside pika's own frame handling.

pika turns every frame into objects (a ``Method`` with a ``Basic.Deliver``, a
``Header`` with ``BasicProperties``, a ``Body``), passes each through its callback
manager and the channel's content assembler, and trims its read buffer once per
frame. For a worker draining a queue that is most of the CPU a record costs: this
path gives ``logbus worker`` about 30 % more records a second (``bench/cli.py
--part=c``).

:class:`InboundConnection` reads each chunk from the socket itself. A complete
``basic.deliver`` (method, content header, body frames) for a consumer logbus
registered, on the channel that consumer is live on and which pika still has
consuming (not cancelled, no content half assembled), is unpacked here and handed
to :meth:`AmqpConsumer.io_deliver` as pika would have handed it. Every other frame
goes through pika's own ``_process_frame`` in stream order, so heartbeats, channel
and connection closes, cancels, ``connection.blocked`` and RPC replies work as
before; a delivery that does not fit the fast path in any way (another channel's
frame in between, a malformed header) is left to pika, which reports it as it
always has. ``bytes_received`` and ``frames_received`` (which pika's heartbeat
checker reads) are kept as pika keeps them, and the buffer is sliced once per read.

The only codec here is a decoder, and a small one: ``basic.deliver``'s arguments
and the basic properties, with pika's values and types (a test compares them with
pika's decoder). Header tables of plain strings are read here, anything else is
handed to ``pika.data.decode_table``. Nothing is encoded here: publishes go through
pika's own encoders.

pika internals relied on (pika 1.3 and 1.4), checked by :func:`missing_internals`
when a connection is opened; if any is gone, :func:`open_connection` warns
(``amqp.fast_inbound_unavailable``) and the transport uses pika's own
``SelectConnection``, which is slower but complete:

- ``Connection._on_data_available``, ``_process_frame``, ``_frame_buffer``,
  ``_channels``, ``bytes_received``, ``frames_received``;
- ``pika.frame.decode_frame``, ``pika.data.decode_table``;
- a channel's ``_consumers``, ``_cancelled`` and ``_content_assembler._method_frame``.

``LOGBUS_AMQP_FAST_INBOUND=0`` turns the path off (pika's own path only), to rule it
out when chasing a consume problem; the consume contract tests run both ways.
"""

from __future__ import annotations

import functools
import os
import struct
import types
from collections.abc import Mapping
from typing import Any, Protocol

import pika
from pika import channel as pika_channel
from pika import connection as pika_connection
from pika import data as pika_data
from pika import frame as pika_frame
from pika.adapters.select_connection import SelectConnection

from logbus._log import get_logger
from logbus.message import Properties

__all__ = [
    "ENV",
    "InboundConnection",
    "InboundConsumer",
    "decode_properties",
    "enabled",
    "missing_internals",
    "open_connection",
]

log = get_logger("logbus.transports.amqp")

#: The environment variable that turns the path off (``0``, ``false``, ``no``, ``off``).
ENV = "LOGBUS_AMQP_FAST_INBOUND"

FRAME_END = 0xCE
_FRAME = struct.Struct(">BHI")
_DELIVER = struct.Struct(">BHIHH")  # a method frame's framing and (class, method) ids
_TAG = struct.Struct(">QB")  # delivery tag and the redelivered bit
_HEADER = struct.Struct(">BHIHHQ")  # a content header's framing, class, weight, body size
_UINT16 = struct.Struct(">H")
_UINT32 = struct.Struct(">I")
_UINT64 = struct.Struct(">Q")
_BASIC_DELIVER = (60, 60)
_METHOD, _CONTENT_HEADER, _BODY, _HEARTBEAT = 1, 2, 3, 8  # AMQP 0-9-1 frame types
# Content up to this many bytes beyond what has arrived is waited for (it will come in
# the next few reads); more than that goes to pika instead, as it arrives.
_WAIT_LIMIT = 65536
# Header tables decoded lately: a worker's records repeat facility, severity, host, app.
_TABLE_CACHE_SIZE = 512
_decoded_tables: dict[bytes, dict[Any, Any]] = {}
_CONNECTION_STATE = ("_frame_buffer", "_channels", "bytes_received", "frames_received")


class InboundConsumer(Protocol):
    """What this path hands a delivery to: a consumer live on ``channel``
    (:class:`~logbus.transports.amqp.pika_consume.AmqpConsumer`)."""

    @property
    def channel(self) -> Any: ...

    def io_deliver(
        self,
        channel: Any,
        tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        properties: Properties,
        body: bytes,
    ) -> None: ...


def enabled() -> bool:
    """Whether the environment leaves the path on (it is on unless ``ENV`` says no)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def missing_internals() -> tuple[str, ...]:
    """The pika internals this module needs that the installed pika lacks (none: usable).

    The methods and functions are looked up on pika's classes and modules; a channel's
    state is looked up on a channel made on a stand-in connection, as pika makes them.
    A connection's own state is checked again on each connection (see
    :class:`InboundConnection`).
    """
    missing = [
        f"Connection.{name}"
        for name in ("_on_data_available", "_process_frame")
        if not callable(getattr(pika_connection.Connection, name, None))
    ]
    missing += [
        f"pika.{module.__name__.rpartition('.')[2]}.{name}"
        for module, name in ((pika_frame, "decode_frame"), (pika_data, "decode_table"))
        if not callable(getattr(module, name, None))
    ]
    try:
        channel = pika_channel.Channel(types.SimpleNamespace(callbacks=None), 1, lambda _c: None)
    except Exception:
        return (*missing, "Channel(connection, number, on_open)")
    for name in ("_consumers", "_cancelled"):
        if not hasattr(channel, name):
            missing.append(f"Channel.{name}")
    if not hasattr(getattr(channel, "_content_assembler", None), "_method_frame"):
        missing.append("Channel._content_assembler._method_frame")
    return tuple(missing)


def open_connection(
    *args: Any, consumers: Mapping[str, InboundConsumer], **kwargs: Any
) -> SelectConnection:
    """Open a connection as ``SelectConnection(*args, **kwargs)`` would: an
    :class:`InboundConnection` when the path is on and the installed pika has what it
    needs, else pika's own (with a warning, once, saying what is missing)."""
    if not enabled():
        return SelectConnection(*args, **kwargs)
    missing = missing_internals()
    if missing:
        _warn(missing)
        return SelectConnection(*args, **kwargs)
    return InboundConnection(*args, consumers=consumers, **kwargs)


_warned: set[tuple[str, ...]] = set()


def _warn(missing: tuple[str, ...]) -> None:
    if missing in _warned:
        return  # once per process, not once per reconnect
    _warned.add(missing)
    log.warning(
        "amqp.fast_inbound_unavailable",
        pika_version=pika.__version__,
        missing=list(missing),
        effect="deliveries go through pika's own frame handling (slower)",
    )


class InboundConnection(SelectConnection):  # type: ignore[misc]
    """A ``SelectConnection`` that hands logbus consumers their deliveries directly.

    ``consumers`` maps consumer tags to the consumers registered on this transport;
    it is read (never changed) on each delivery, on the I/O thread. A connection whose
    state lacks what this class reads (a pika that changed it) warns once and leaves
    every frame to pika.
    """

    def __init__(self, *args: Any, consumers: Mapping[str, InboundConsumer], **kwargs: Any) -> None:
        self._logbus_consumers = consumers
        self._logbus_fast = True
        super().__init__(*args, **kwargs)
        missing = tuple(f"Connection.{n}" for n in _CONNECTION_STATE if not hasattr(self, n))
        if missing:
            self._logbus_fast = False
            _warn(missing)

    def _on_data_available(self, data_in: bytes) -> None:
        if not self._logbus_fast:
            super()._on_data_available(data_in)
            return
        held: bytes = self._frame_buffer  # type: ignore[has-type]  # pika: `bytes = None`
        buf = held + data_in if held else data_in
        self._frame_buffer = buf
        size = len(buf)
        pos = 0
        try:
            while size - pos >= 8:
                kind, channel, length = _FRAME.unpack_from(buf, pos)
                end = pos + length + 8
                if end > size:
                    break
                if kind == _METHOD:
                    taken = self._deliver(buf, pos, end, channel) if self._logbus_consumers else 0
                    if taken < 0:
                        break  # a delivery of ours whose content has not all arrived
                    if taken:
                        pos = taken
                        continue
                elif kind not in (_CONTENT_HEADER, _BODY, _HEARTBEAT):
                    break  # a protocol header or garbage: pika's own reading below
                _, value = pika_frame.decode_frame(buf[pos:end])
                pos = end
                self.bytes_received += length + 8
                self._process_frame(value)
                if self._frame_buffer is not buf:
                    return  # the connection was torn down and its state reset
        finally:
            if self._frame_buffer is buf:
                self._frame_buffer = buf[pos:] if pos else buf
        if self._frame_buffer and self._frame_buffer[0] not in (
            _METHOD,
            _CONTENT_HEADER,
            _BODY,
            _HEARTBEAT,
        ):
            super()._on_data_available(b"")

    def _deliver(self, buf: bytes, pos: int, end: int, number: int) -> int:
        """Hand over the delivery starting with the method frame at ``pos``: where it
        ends; 0 to leave this frame to pika; -1 to wait for the rest of its content."""
        if end - pos < 14 or buf[end - 1] != FRAME_END:
            return 0
        if _DELIVER.unpack_from(buf, pos)[3:] != _BASIC_DELIVER:
            return 0
        at: int = pos + 11
        tag_size = buf[at]
        if at + 1 + tag_size > end - 1:
            return 0
        try:
            tag = buf[at + 1 : at + 1 + tag_size].decode()
        except UnicodeDecodeError:
            return 0
        consumer = self._logbus_consumers.get(tag)
        if consumer is None:
            return 0
        channel = self._channels.get(number)
        if (
            channel is None
            or channel is not consumer.channel
            or not channel.is_open
            or tag not in channel._consumers
            or tag in channel._cancelled
            or channel._content_assembler._method_frame is not None
        ):
            return 0
        try:
            at += 1 + tag_size
            if at + 9 > end - 1:
                return 0
            delivery_tag, bits = _TAG.unpack_from(buf, at)
            exchange, at = _read_short(buf, at + 9)
            routing_key, at = _read_short(buf, at)
            if at > end - 1:
                return 0  # the strings ran past the method frame
            content = _read_content(buf, end, number)
        except (ValueError, IndexError, struct.error):
            return 0
        if isinstance(content, int):
            return content
        properties, body, at, frames = content
        self.bytes_received += at - pos
        self.frames_received += frames
        consumer.io_deliver(
            channel, delivery_tag, bool(bits & 1), exchange, routing_key, properties, body
        )
        return at


def _read_content(buf: bytes, start: int, number: int) -> tuple[Properties, bytes, int, int] | int:
    """The content header and body frames of channel ``number`` from ``start``:
    (properties, body, where they end, how many frames with the method's); 0 to leave
    the delivery to pika; -1 to wait for more of it."""
    size = len(buf)
    if size - start < 22:
        return -1
    kind, header_number, length, class_id, _weight, body_size = _HEADER.unpack_from(buf, start)
    if kind != _CONTENT_HEADER or header_number != number or class_id != 60:
        return 0
    header_end = start + length + 8
    if header_end > size:
        return -1
    if header_end + body_size - size > _WAIT_LIMIT:
        # Much content still to come: pika takes it frame by frame as it arrives
        # rather than it being buffered (and scanned again on every read) here.
        return 0
    if buf[header_end - 1] != FRAME_END:
        return 0
    properties = decode_properties(buf[start + 7 : header_end - 1], 12)
    # The body frames, as many as carry body_size bytes.
    frames = 2
    at = header_end
    pieces: list[bytes] = []
    seen = 0
    while seen < body_size:
        if size - at < 8:
            return -1
        kind, body_number, length = _FRAME.unpack_from(buf, at)
        if kind != _BODY or body_number != number:
            return 0
        body_end = at + length + 8
        if body_end > size:
            return -1
        if buf[body_end - 1] != FRAME_END:
            return 0
        pieces.append(buf[at + 7 : body_end - 1])
        seen += length
        frames += 1
        at = body_end
    if seen != body_size:
        return 0  # too long: pika raises BodyTooLongError
    body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
    return properties, body, at, frames


# -- the decoder: basic properties, as pika decodes them ----------------------------


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
    """Basic properties from ``data`` at ``at`` (a content header's flags), as pika's
    ``BasicProperties.decode`` has them (absent headers: ``{}``); ``ValueError`` (or
    ``struct.error``, ``IndexError``) for a header cut short or with a second flag word."""
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
