"""Batched frames for the process broker's hot path: many publishes or deliveries per frame.

A record crossing to or from the broker process as a frame of its own costs a
JSON header each way — most of what that hop costs in Python. So publishes
travel in ``publish`` frames and deliveries in ``deliver`` frames of many
messages each: the frame's JSON header carries each distinct property table and
each distinct name (exchange, routing key, queue, consumer tag) once, and its
body one fixed-size record per message, followed by that message's body,
integers big-endian::

    publish: props u32 | exchange u32 | routing key u32 | body length u32 | body
    deliver: tag u64 | consumer id u32 | props u32 | exchange u32 | routing key u32
             | queue u32 | consumer tag u32 | redelivered u8 | body length u32 | body

where props and names are indices into the header's ``props`` and ``names``.
A ``publish`` frame is confirmed by one reply whose body holds one outcome byte
per message, in order (:data:`OUTCOMES`, plus :data:`ERROR` for a publish the
broker refused, whose error is in the reply's ``result``). Decoding checks
every index, length and type: malformed input raises
:class:`~logbus.errors.DecodeError`, never another error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from logbus.errors import DecodeError, InputError
from logbus.message import Message, Properties
from logbus.wire.frames import encode_plain, encode_value, properties_from, properties_wire

__all__ = [
    "ERROR",
    "OUTCOMES",
    "Delivered",
    "decode_deliveries",
    "decode_publishes",
    "encode_deliveries",
    "encode_publishes",
]

_PUBLISH = struct.Struct(">IIII")
_DELIVER = struct.Struct(">QIIIIIIBI")
#: Publish outcomes as confirm bytes, in :class:`~logbus.broker.PublishOutcome` value order.
OUTCOMES = ("routed", "unroutable", "rejected")
#: The confirm byte of a publish the broker refused with an error.
ERROR = len(OUTCOMES)


class Delivered(Protocol):
    """What the broker hands a consumer (:class:`logbus.broker.queues.Delivered`)."""

    @property
    def message(self) -> Message: ...
    @property
    def consumer_tag(self) -> str: ...
    @property
    def delivery_tag(self) -> int: ...
    @property
    def redelivered(self) -> bool: ...
    @property
    def queue(self) -> str: ...


def encode_publishes(ident: int, messages: Sequence[Message], *, mandatory: bool) -> bytes:
    """One ``publish`` frame holding ``messages``, to be confirmed by one reply."""
    props: dict[int, int] = {}
    tables: list[Properties] = []
    names: dict[str, int] = {}
    parts: list[bytes] = []
    pack = _PUBLISH.pack
    for message in messages:
        properties = message.properties
        p = props.get(id(properties))  # the messages hold their properties: ids stay unique
        if p is None:
            p = props[id(properties)] = len(tables)
            tables.append(properties)
        exchange = names.setdefault(message.exchange, len(names))
        key = names.setdefault(message.routing_key, len(names))
        body = message.body
        parts.append(pack(p, exchange, key, len(body)))
        parts.append(body)
    args = {"mandatory": mandatory, "props": _tables(tables), "names": _names(names)}
    return encode_plain("publish", ident, args, b"".join(parts))


def decode_publishes(args: Mapping[str, Any], body: bytes) -> list[Message]:
    """The messages of a ``publish`` frame's arguments and body."""
    props = [properties_from(table) for table in _list(args, "props")]
    names = _strings(args)
    messages: list[Message] = []
    unpack, size, end = _PUBLISH.unpack_from, _PUBLISH.size, len(body)
    offset = 0
    try:
        while offset < end:
            p, exchange, key, length = unpack(body, offset)
            start = offset + size
            offset = start + length
            if offset > end:
                raise DecodeError(f"frame: a published body runs past the frame's {end} bytes")
            messages.append(Message(body[start:offset], props[p], names[exchange], names[key]))
    except (struct.error, IndexError) as exc:
        raise DecodeError(f"frame: malformed publish record at byte {offset}: {exc}") from None
    return messages


def encode_deliveries(items: Iterable[tuple[int, Delivered]]) -> bytes:
    """One ``deliver`` frame holding ``(consumer id, delivery)`` pairs, in order."""
    props: dict[int, int] = {}
    tables: list[Properties] = []  # holds each one while its id() is a key above
    names: dict[str, int] = {}
    parts: list[bytes] = []
    pack = _DELIVER.pack
    for cid, item in items:
        message = item.message
        properties = message.properties
        p = props.get(id(properties))
        if p is None:
            p = props[id(properties)] = len(tables)
            tables.append(properties)
        body = message.body
        parts.append(
            pack(
                item.delivery_tag,
                cid,
                p,
                names.setdefault(message.exchange, len(names)),
                names.setdefault(message.routing_key, len(names)),
                names.setdefault(item.queue, len(names)),
                names.setdefault(item.consumer_tag, len(names)),
                item.redelivered,
                len(body),
            )
        )
        parts.append(body)
    args = {"props": _tables(tables), "names": _names(names)}
    return encode_plain("deliver", 0, args, b"".join(parts))


def decode_deliveries(
    args: Mapping[str, Any], body: bytes
) -> list[tuple[int, int, bool, str, str, Message]]:
    """``(consumer id, tag, redelivered, consumer tag, queue, message)`` of a ``deliver`` frame."""
    props = [properties_from(table) for table in _list(args, "props")]
    names = _strings(args)
    out: list[tuple[int, int, bool, str, str, Message]] = []
    unpack, size, end = _DELIVER.unpack_from, _DELIVER.size, len(body)
    offset = 0
    try:
        while offset < end:
            tag, cid, p, exchange, key, queue, ctag, redelivered, length = unpack(body, offset)
            start = offset + size
            offset = start + length
            if offset > end:
                raise DecodeError(f"frame: a delivered body runs past the frame's {end} bytes")
            if redelivered > 1:
                raise DecodeError(f"frame: redelivered must be 0 or 1, not {redelivered}")
            message = Message(body[start:offset], props[p], names[exchange], names[key])
            out.append((cid, tag, redelivered == 1, names[ctag], names[queue], message))
    except (struct.error, IndexError) as exc:
        raise DecodeError(f"frame: malformed delivery record at byte {offset}: {exc}") from None
    return out


def _tables(tables: list[Properties]) -> list[Any]:
    try:
        return [encode_value(properties_wire(properties)) for properties in tables]
    except RecursionError:
        raise InputError("a message's headers are nested too deeply") from None


def _names(names: dict[str, int]) -> list[str]:
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"exchange, routing key and queue must be strings, not {name!r:.40}")
    return list(names)


def _list(args: Mapping[str, Any], key: str) -> list[Any]:
    value = args.get(key)
    if not isinstance(value, list):
        raise DecodeError(f"frame: argument {key!r} must be a list, not {value!r:.40}")
    return value


def _strings(args: Mapping[str, Any]) -> list[str]:
    names = _list(args, "names")
    if not all(isinstance(name, str) for name in names):
        raise DecodeError("frame: every name must be a string")
    return names
