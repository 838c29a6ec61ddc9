"""Inbound frames of the AMQP transport: deliveries to logbus consumers read without pika.

pika turns every frame into objects (a ``Method`` with a ``Basic.Deliver``, a
``Header`` with ``BasicProperties``, a ``Body``), passes each through its callback
manager and the channel's content assembler, and trims its read buffer once per
frame. For a consumer draining a queue that is most of the CPU a record costs.

:class:`InboundConnection` reads each chunk from the socket itself. A complete
``basic.deliver`` (method, content header, body frames) for a consumer logbus
registered, on the channel that consumer is live on and which pika still has
consuming (not cancelled, no content half assembled), is unpacked with ``struct``
and handed to :meth:`AmqpConsumer.io_deliver` as pika would have handed it.
Every other frame goes through pika's own ``_process_frame`` in stream order, so
heartbeats, channel and connection closes, cancels, ``connection.blocked`` and
RPC replies work as before; a delivery that does not fit the fast path in any way
(another channel's frame in between, a malformed header) is left to pika, which
reports it as it always has. ``bytes_received`` and ``frames_received`` (which
pika's heartbeat checker reads) are kept as pika keeps them, and the buffer is
sliced once per read.

pika internals relied on (``pika>=1.3,<2``): ``Connection._on_data_available``,
``_frame_buffer``, ``_process_frame``, ``_channels``, ``bytes_received``,
``frames_received``, ``pika.frame.decode_frame``, and a channel's ``_consumers``,
``_cancelled`` and ``_content_assembler._method_frame``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pika import frame as pika_frame
from pika.adapters.select_connection import SelectConnection

from logbus.transports._amqp_codec import FRAME_END, decode_properties

if TYPE_CHECKING:
    from logbus.transports._amqp_consume import AmqpConsumer

__all__ = ["InboundConnection"]

_FRAME = struct.Struct(">BHI")
_DELIVER = struct.Struct(">BHIHH")  # a method frame's framing and (class, method) ids
_TAG = struct.Struct(">QB")  # delivery tag and the redelivered bit
_HEADER = struct.Struct(">BHIHHQ")  # a content header's framing, class, weight, body size
_BASIC_DELIVER = (60, 60)
_METHOD, _CONTENT_HEADER, _BODY = 1, 2, 3
# Content up to this many bytes beyond what has arrived is waited for (it will come in
# the next few reads); more than that goes to pika instead, as it arrives.
_WAIT_LIMIT = 65536


class InboundConnection(SelectConnection):  # type: ignore[misc]
    """A ``SelectConnection`` that hands logbus consumers their deliveries directly.

    ``consumers`` maps consumer tags to the consumers registered on this transport;
    it is read (never changed) on each delivery, on the I/O thread.
    """

    def __init__(self, *args: Any, consumers: Mapping[str, AmqpConsumer], **kwargs: Any) -> None:
        self._logbus_consumers = consumers
        super().__init__(*args, **kwargs)

    def _on_data_available(self, data_in: bytes) -> None:
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
                elif kind not in (_CONTENT_HEADER, _BODY, pika_frame.spec.FRAME_HEARTBEAT):
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
            pika_frame.spec.FRAME_HEARTBEAT,
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
            at += 9
            exchange, at = _short(buf, at, end)
            routing_key, at = _short(buf, at, end)
            # The content header, next on the same channel.
            size = len(buf)
            start = end
            if size - start < 22:
                return -1
            kind, header_number, length, class_id, _weight, body_size = _HEADER.unpack_from(
                buf, start
            )
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
        except (ValueError, IndexError, struct.error):
            return 0
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.bytes_received += at - pos
        self.frames_received += frames
        consumer.io_deliver(
            channel, delivery_tag, bool(bits & 1), exchange, routing_key, properties, body
        )
        return at


def _short(buf: bytes, at: int, end: int) -> tuple[Any, int]:
    """A short string of a method frame, as pika decodes it (bytes if not UTF-8)."""
    size = buf[at]
    stop = at + 1 + size
    if stop > end - 1:
        raise ValueError("a method frame ended early")
    raw = buf[at + 1 : stop]
    try:
        return raw.decode(), stop
    except UnicodeDecodeError:
        return raw, stop
