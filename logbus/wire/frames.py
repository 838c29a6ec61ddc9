"""logbus's framing for whatever crosses a process boundary: a JSON header and raw body bytes.

The process broker (``logbus broker serve``, ``local://``, ``process://``) moves
operations and records between processes as bytes, through
:mod:`multiprocessing.connection`'s ``send_bytes``/``recv_bytes`` only. Nothing
is pickled: unpickling what a peer sent would let that peer run code here, and
a record is bytes anyway. One *packet* (one ``send_bytes``) holds one or more
frames back to back, so a writer can flush many deliveries in one system call.

One frame, integers big-endian::

    +--------------+--------------+--------------------+------------+
    | header bytes | body bytes   | header: JSON, UTF-8 | body: raw  |
    | uint32       | uint32       | {"op", "id", "args"} | bytes      |
    +--------------+--------------+--------------------+------------+

``op`` names the operation, ``id`` pairs a reply with its request (0 for frames
that get no reply), ``args`` holds its arguments, message properties included.
AMQP field values that JSON lacks cross as one-key objects whose key starts
with ``$`` — ``{"$bytes": base64}``, ``{"$datetime": ISO 8601}`` (x-death's
``time``), ``{"$decimal": "1.50"}``, ``{"$float": "nan"}`` — and a table that
itself has a single ``$`` key is wrapped as ``{"$map": {...}}``, so every value
an AMQP table can hold comes back equal (tuples come back as lists, as AMQP
has arrays only). Decoding anything else raises :class:`~logbus.errors.DecodeError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from logbus.errors import DecodeError, InputError
from logbus.message import Message, Properties

__all__ = [
    "Frame",
    "arg_bool",
    "arg_int",
    "arg_str",
    "arg_table",
    "decode_many",
    "decode_value",
    "encode",
    "encode_many",
    "encode_plain",
    "encode_value",
    "message_args",
    "message_from",
    "properties_from",
    "properties_wire",
]

_LENGTHS = struct.Struct(">II")
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_STR_PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "type",
    "user_id",
    "app_id",
)
_INT_PROPERTIES = ("delivery_mode", "priority", "timestamp")
_PROPERTIES = (*_STR_PROPERTIES, *_INT_PROPERTIES)


@dataclass(frozen=True, slots=True)
class Frame:
    """One operation, reply or push: its name, request id, arguments and body bytes."""

    op: str
    id: int = 0
    args: Mapping[str, Any] = field(default_factory=dict)
    body: bytes = b""


# -- values ---------------------------------------------------------------------


def encode_value(value: Any) -> Any:
    """``value`` as plain JSON data, tagging what JSON cannot carry (see the module doc)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Mapping):
        table = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"a table key must be a string, not {type(key).__name__}")
            table[key] = encode_value(item)
        if len(table) == 1 and next(iter(table)).startswith("$"):
            return {"$map": table}
        return table
    if isinstance(value, list | tuple):
        return [encode_value(item) for item in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, str):  # subclasses (StrEnum ...) cross as their plain value
        return str.__str__(value)
    if isinstance(value, int):  # IntEnum and friends; bool cannot be subclassed
        return int(value)
    if isinstance(value, float):
        return encode_value(float(value))
    raise InputError(
        f"a {kind.__name__} cannot cross a process boundary as an AMQP field value "
        "(use str, int, float, bool, bytes, Decimal, datetime, lists and tables)"
    )


def decode_value(value: Any) -> Any:
    """The inverse of :func:`encode_value`; a malformed tag raises ``DecodeError``."""
    if isinstance(value, dict):
        if len(value) == 1:
            key, payload = next(iter(value.items()))
            if key.startswith("$"):
                return _untag(key, payload)
        return {key: decode_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_value(item) for item in value]
    return value


def _untag(tag: str, payload: Any) -> Any:
    if tag == "$map":
        if not isinstance(payload, dict):
            raise DecodeError("frame: $map must hold an object")
        return {key: decode_value(item) for key, item in payload.items()}
    if not isinstance(payload, str):
        raise DecodeError(f"frame: {tag} must hold a string")
    try:
        if tag == "$bytes":
            return base64.b64decode(payload.encode("ascii"), validate=True)
        if tag == "$datetime":
            return datetime.fromisoformat(payload)
        if tag == "$decimal":
            return Decimal(payload)
        if tag == "$float" and payload in ("nan", "inf", "-inf"):
            return float(payload)
    except (ValueError, binascii.Error, InvalidOperation, UnicodeEncodeError) as exc:
        raise DecodeError(f"frame: bad {tag} value {payload[:40]!r}: {exc}") from None
    raise DecodeError(f"frame: unknown tag {tag!r} (with {payload[:40]!r})")


# -- frames ---------------------------------------------------------------------


def encode(frame: Frame) -> bytes:
    """One frame as bytes; raises ``InputError`` for a value that cannot cross."""
    try:
        args = encode_value(frame.args)
    except RecursionError:
        raise InputError(f"frame {frame.op!r}: a table is nested too deeply") from None
    return encode_plain(frame.op, frame.id, args, frame.body)


def encode_plain(op: str, ident: int, args: dict[str, Any], body: bytes = b"") -> bytes:
    """One frame whose ``args`` are plain JSON data already (tagged by :func:`encode_value`)."""
    header = {"op": op, "id": ident, "args": args}
    raw = _JSON.encode(header).encode("ascii")  # ensure_ascii: lone surrogates survive too
    return _LENGTHS.pack(len(raw), len(body)) + raw + body


def encode_many(frames: Iterable[Frame]) -> bytes:
    """Several frames as one packet, to be sent with a single ``send_bytes``."""
    return b"".join(encode(frame) for frame in frames)


def decode_many(data: bytes) -> list[Frame]:
    """Every frame of a packet; anything malformed raises ``DecodeError``, never another error."""
    frames: list[Frame] = []
    view = memoryview(data)
    offset, end = 0, len(data)
    if end == 0:
        raise DecodeError("frame: empty packet")
    while offset < end:
        if end - offset < _LENGTHS.size:
            raise DecodeError(f"frame: {end - offset} stray bytes after the last frame")
        header_len, body_len = _LENGTHS.unpack_from(view, offset)
        start = offset + _LENGTHS.size
        stop = start + header_len + body_len
        if stop > end:
            raise DecodeError(
                f"frame: lengths {header_len}+{body_len} run past the packet's {end} bytes"
            )
        frames.append(_decode_header(bytes(view[start : start + header_len]), data, stop, body_len))
        offset = stop
    return frames


def _decode_header(raw: bytes, data: bytes, stop: int, body_len: int) -> Frame:
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        if not isinstance(header, dict):
            raise DecodeError("frame: the header is not a JSON object")
        op, ident, args = header.get("op"), header.get("id"), header.get("args")
        if not isinstance(op, str) or type(ident) is not int or not isinstance(args, dict):
            raise DecodeError("frame: the header needs op (string), id (integer), args (object)")
        decoded = decode_value(args)
    except DecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise DecodeError(f"frame: the header is not valid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise DecodeError("frame: args is not a table")
    return Frame(op, ident, decoded, data[stop - body_len : stop])


def _no_constant(name: str) -> Any:
    raise DecodeError(f"frame: bare {name} is not JSON (non-finite floats are tagged)")


# -- typed arguments --------------------------------------------------------------


def arg_str(args: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """A string argument; missing (with no default) or mistyped raises ``DecodeError``."""
    value = args.get(key, default)
    if not isinstance(value, str):
        raise DecodeError(f"frame: argument {key!r} must be a string, not {value!r:.40}")
    return value


def arg_int(args: Mapping[str, Any], key: str, default: int | None = None) -> int:
    """An integer argument (not a bool)."""
    value = args.get(key, default)
    if type(value) is not int:
        raise DecodeError(f"frame: argument {key!r} must be an integer, not {value!r:.40}")
    return value


def arg_bool(args: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    """A boolean argument."""
    value = args.get(key, default)
    if type(value) is not bool:
        raise DecodeError(f"frame: argument {key!r} must be true or false, not {value!r:.40}")
    return value


def arg_table(args: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """A table argument (queue or binding arguments), or None when absent."""
    value = args.get(key)
    if value is not None and not isinstance(value, dict):
        raise DecodeError(f"frame: argument {key!r} must be a table, not {value!r:.40}")
    return value


# -- messages -----------------------------------------------------------------------


def properties_wire(props: Properties) -> dict[str, Any]:
    """A message's properties as a table: the ones that are set, headers included."""
    wire: dict[str, Any] = {}
    for name in _PROPERTIES:
        value = getattr(props, name)
        if value is not None:
            wire[name] = value
    if props.headers:
        wire["headers"] = props.headers
    return wire


def properties_from(wire: Any) -> Properties:
    """The properties :func:`properties_wire` describes; checks every name and type."""
    if not isinstance(wire, dict):
        raise DecodeError("frame: props must be a table")
    fields: dict[str, Any] = {}
    for name in wire:
        if name in _STR_PROPERTIES:
            fields[name] = arg_str(wire, name)
        elif name in _INT_PROPERTIES:
            fields[name] = arg_int(wire, name)
        elif name == "headers":
            fields[name] = arg_table(wire, name) or {}
        else:
            raise DecodeError(f"frame: unknown message property {name!r}")
    return Properties(**fields)


def message_args(message: Message) -> dict[str, Any]:
    """A message's exchange, routing key and properties as frame arguments (body apart)."""
    return {
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "props": properties_wire(message.properties),
    }


def message_from(args: Mapping[str, Any], body: bytes) -> Message:
    """The message that :func:`message_args` and a body describe; checks every type."""
    props = properties_from(args.get("props", {}))
    return Message(body, props, arg_str(args, "exchange"), arg_str(args, "routing_key"))
