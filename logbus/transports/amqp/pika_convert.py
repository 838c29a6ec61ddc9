"""The pika boundary: broker URLs to connection parameters, messages to and from pika's
properties (pika's exceptions are mapped in :mod:`logbus.transports.amqp.pika_errors`).

Nothing here does I/O. Errors name the broker as ``host:port`` and never show a
password.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlunsplit

import pika

from logbus._urls import parse_url, redact_url
from logbus.errors import ConfigError, InputError, InvalidExpiration
from logbus.message import Message, Properties
from logbus.transports.amqp.errors import named_exchange, reply_error
from logbus.transports.amqp.tls import TLS_QUERY, client_context
from logbus.transports.amqp.urls import broker_urls

__all__ = [
    "Encoded",
    "Endpoint",
    "arguments",
    "endpoints",
    "from_pika",
    "named_exchange",
    "names",
    "properties_from_pika",
    "reply_error",
    "to_pika",
]

_SHORTSTR = 255
_SHORT_CHARS = _SHORTSTR // 4  # this many characters cannot exceed 255 bytes in UTF-8
_INT64 = 2**63
_INT32 = 2**31
_SHORT_PROPERTIES = (
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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One broker of a failover list: pika parameters plus what may be shown of it."""

    parameters: Any  # pika.URLParameters
    address: str  # host:port
    vhost: str
    user: str
    shown: str  # the URL with its password redacted

    def __str__(self) -> str:
        return self.address


def endpoints(
    url: str,
    *,
    heartbeat: int,
    heartbeat_wins: bool,
    connect_timeout: float,
    connection_name: str,
    ssl_context: ssl.SSLContext | None = None,
    cafile: str | None = None,
) -> list[Endpoint]:
    """Parse ``url`` (one URL or a comma-separated failover list) into endpoints.

    ``heartbeat`` applies unless the URL's query sets one and ``heartbeat_wins`` is
    false. TLS (``amqps://``) verifies the broker's certificate and host name against
    the system's CAs, or ``cafile`` (an option, or the URL's ``cafile=`` parameter).
    """
    return [
        _endpoint(
            part,
            heartbeat=heartbeat,
            heartbeat_wins=heartbeat_wins,
            connect_timeout=connect_timeout,
            connection_name=connection_name,
            ssl_context=ssl_context,
            cafile=cafile,
        )
        for part in broker_urls(url, "pika")
    ]


def _endpoint(
    url: str,
    *,
    heartbeat: int,
    heartbeat_wins: bool,
    connect_timeout: float,
    connection_name: str,
    ssl_context: ssl.SSLContext | None,
    cafile: str | None,
) -> Endpoint:
    shown = redact_url(url)
    split = parse_url(url)
    scheme = split.scheme.lower()  # amqp or amqps: broker_urls saw to it
    query = parse_qsl(split.query, keep_blank_values=True)
    tls = {key: value for key, value in query if key in TLS_QUERY}
    rest = [(key, value) for key, value in query if key not in TLS_QUERY]
    if "ssl_options" in dict(rest):
        # pika's own TLS parameter would build a context that logbus does not check
        # (and evaluate Python literals from the URL): TLS has one way in.
        raise ConfigError(
            f"ssl_options is not read in broker URLs ({shown}); use amqps:// with cafile=, "
            "capath=, certfile=, keyfile= or server_hostname="
        )
    plain = urlunsplit(split._replace(query=urlencode(rest)))
    try:
        params = pika.URLParameters(plain)
        port = split.port
    except Exception as exc:  # pika validates the query with ValueError, literal_eval ...
        raise ConfigError(f"invalid broker URL {shown}: {exc}") from None
    if heartbeat_wins or "heartbeat" not in dict(rest):
        params.heartbeat = heartbeat
    params.connection_attempts = 1
    params.retry_delay = 0
    params.socket_timeout = connect_timeout
    params.stack_timeout = connect_timeout
    params.blocked_connection_timeout = None  # publishes time out on their own
    params.client_properties = {"connection_name": connection_name}
    if scheme == "amqps":
        context = ssl_context or client_context(tls, shown, cafile=cafile)
        params.ssl_options = pika.SSLOptions(context, tls.get("server_hostname"))
    elif tls:
        raise ConfigError(f"{', '.join(tls)} only apply to amqps:// URLs: {shown}")
    host = split.hostname or params.host
    return Endpoint(
        parameters=params,
        address=f"{host}:{port or params.port}",
        vhost=params.virtual_host,
        user=unquote(split.username) if split.username else params.credentials.username,
        shown=shown,
    )


# -- messages -----------------------------------------------------------------


def to_pika(message: Message) -> Any:
    """``message``'s properties as pika sends them (:class:`Encoded`); raises
    ``InputError`` for what AMQP cannot carry (a float header, an over-long short string).

    Records share a few shapes of properties and differ only in ``message_id`` and
    ``timestamp``: the rest is checked and encoded (by pika) once per shape and kept,
    so a publish costs a lookup and a join. Headers other than plain strings (whose
    equal values may encode differently: ``1`` and ``True``) are checked and encoded
    every time.
    """
    exchange, routing_key = message.exchange, message.routing_key
    if not (type(exchange) is str and len(exchange) <= _SHORT_CHARS):
        _check_short(exchange, "exchange name")
    if not (type(routing_key) is str and len(routing_key) <= _SHORT_CHARS):
        _check_short(routing_key, "routing key")
    if not isinstance(message.body, bytes | bytearray | memoryview):
        raise InputError(f"a message body must be bytes, not {type(message.body).__name__}")
    props = message.properties
    headers = props.headers
    key = (
        props.content_type,
        props.content_encoding,
        tuple(headers.items()) if headers else None,
        props.delivery_mode,
        props.priority,
        props.correlation_id,
        props.reply_to,
        props.expiration,
        props.type,
        props.user_id,
        props.app_id,
    )
    # Only shapes whose header values are all plain strings are kept, so a hit has
    # string values (no other value equals a string); an unhashable value misses.
    try:
        shape = _shapes.get(key)
    except TypeError:
        return _whole(props)
    if shape is None:
        if headers and not all(type(value) is str for value in headers.values()):
            return _whole(props)
        shape = _shape(props)
        if len(_shapes) >= _SHAPES_MAX:
            _shapes.clear()
        _shapes[key] = shape
    flags, head, tail = shape
    middle = b""
    message_id = props.message_id
    if message_id is not None:
        if not (type(message_id) is str and len(message_id) <= _SHORT_CHARS):
            _check_short(message_id, "message_id")
        raw = message_id.encode()
        flags |= _MESSAGE_ID
        middle = bytes((len(raw),)) + raw
    timestamp = props.timestamp
    if timestamp is not None:
        _check_timestamp(timestamp)
        flags |= _TIMESTAMP
        middle += _Q.pack(timestamp)
    return Encoded(_H.pack(flags) + head + middle + tail)


def from_pika(props: Any, body: bytes, exchange: str, routing_key: str) -> Message:
    """A :class:`Message` from what pika hands a consumer or ``basic.get``."""
    if type(body) is not bytes:
        body = bytes(body)
    return Message(body, properties_from_pika(props), exchange, routing_key)


def properties_from_pika(props: Any) -> Properties:
    """:class:`Properties` from pika's ``BasicProperties`` of a received message.

    pika decodes a fresh headers dict for every message and nothing else holds it,
    so it is taken as it is rather than copied.
    """
    headers = props.headers
    return Properties(
        props.content_type,
        props.content_encoding,
        props.delivery_mode,
        props.priority,
        props.correlation_id,
        props.reply_to,
        props.expiration,
        props.message_id,
        props.timestamp,
        props.type,
        props.user_id,
        props.app_id,
        headers if type(headers) is dict else dict(headers) if headers else {},
    )


def arguments(value: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    """Declaration or binding arguments checked as an AMQP table (None stays None)."""
    return None if value is None else _table(value, what)


def names(**values: str) -> None:
    """Check names and keys (``queue=..., routing_key=...``) fit AMQP's short strings."""
    for what, value in values.items():
        _check_short(value, what.replace("_", " "))


def _check_short(value: str, what: str) -> None:
    if type(value) is str and len(value) <= _SHORT_CHARS:
        return  # the common case, on every publish: cannot exceed 255 bytes in UTF-8
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, not {type(value).__name__}")
    if len(value.encode()) > _SHORTSTR:
        raise InputError(f"{what} is longer than AMQP's 255 bytes: {value[:40]!r}...")


def _table(mapping: Mapping[str, Any], where: str) -> dict[str, Any]:
    if all(type(k) is str and type(v) is str for k, v in mapping.items()):
        for key in mapping:  # record headers: short string keys and values
            _check_short(key, f"{where} key")
        return dict(mapping)
    table: dict[str, Any] = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise InputError(f"{where} key {key!r} is not a string")
        _check_short(key, f"{where} key")
        table[key] = _field(value, f"{where}[{key!r}]")
    return table


def _field(value: Any, where: str) -> Any:
    """One AMQP field value, as pika can encode it without loss."""
    if value is None or isinstance(value, str | bytes | bool | dt.datetime):
        return value
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise InputError(f"{where} = {value} does not fit AMQP's 64-bit integers")
        return value
    if isinstance(value, decimal.Decimal):
        return _decimal(value, where)
    if isinstance(value, Mapping):
        return _table(value, where)
    if isinstance(value, list | tuple):
        return [_field(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise InputError(
        f"{where} is a {type(value).__name__}; AMQP tables here carry str, bytes, int, bool, "
        "Decimal, datetime, None, tables and lists (send a float as a string)"
    )


def _decimal(value: decimal.Decimal, where: str) -> decimal.Decimal:
    # AMQP's decimal is a 32-bit integer scaled by up to 255 decimal places.
    exponent = value.normalize().as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if places > _SHORTSTR or not -_INT32 <= int(value.scaleb(places)) < _INT32:
        raise InputError(f"{where} = {value} does not fit an AMQP decimal")
    return value


# -- what a publish sends ---------------------------------------------------------

_H = struct.Struct(">H")
_Q = struct.Struct(">Q")
_MESSAGE_ID, _TIMESTAMP = 1 << 7, 1 << 6  # their property flags
_SHAPES_MAX = 256
_NO_FIELDS = (None,) * 10  # the ten properties up to timestamp, unset
_shapes: dict[tuple[Any, ...], tuple[int, bytes, bytes]] = {}


class Encoded(pika.BasicProperties):  # type: ignore[misc]
    """A publish's properties as the bytes pika's own ``encode`` gives (see :func:`to_pika`).

    pika reads nothing of a publish's properties but ``encode()``; these carry only
    their bytes.
    """

    def __init__(self, data: bytes) -> None:  # not pika's: no fields to set
        self.data = data

    def encode(self) -> list[bytes]:
        return [self.data]  # a new list each time: pika inserts the frame header into it

    def __repr__(self) -> str:
        return f"<Encoded properties, {len(self.data)} bytes>"


def _check(props: Properties) -> None:
    """The checks of every property but ``message_id`` and ``timestamp`` (and headers)."""
    if props.expiration is not None and not (
        isinstance(props.expiration, str) and props.expiration.isdigit()
    ):
        raise InvalidExpiration(  # RabbitMQ's 406, before it closes the channel
            f"PRECONDITION_FAILED - invalid expiration {props.expiration!r}: it must be "
            f"milliseconds as a string of digits"
        )
    for name in _SHORT_PROPERTIES:
        value = getattr(props, name)
        if value is not None and name != "message_id":
            _check_short(value, name)
    if props.delivery_mode not in (None, 1, 2):
        raise InputError(f"delivery_mode must be 1 or 2, not {props.delivery_mode!r}")
    if props.priority is not None and not (
        isinstance(props.priority, int) and 0 <= props.priority <= 255
    ):
        raise InputError(f"priority must be 0..255, not {props.priority!r}")


def _check_timestamp(timestamp: Any) -> None:
    if not (isinstance(timestamp, int) and 0 <= timestamp < 2**64):
        raise InputError(f"timestamp must be whole seconds since the epoch: {timestamp!r}")


def _fields(props: Properties) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """pika's fields before ``message_id`` and after ``timestamp``, checked."""
    _check(props)
    headers = _table(props.headers, "headers") if props.headers else None
    before = (
        props.content_type,
        props.content_encoding,
        headers,
        props.delivery_mode,
        props.priority,
        props.correlation_id,
        props.reply_to,
        props.expiration,
    )
    return before, (props.type, props.user_id, props.app_id)


def _shape(props: Properties) -> tuple[int, bytes, bytes]:
    """The flags and pika's bytes of the fields before ``message_id`` and after ``timestamp``.

    In AMQP's property order the two sit side by side, between ``expiration`` and
    ``type``, so a message's bytes are the flags, the fields before, the two, the
    fields after.
    """
    before, after = _fields(props)
    head = pika.BasicProperties(*before).encode()
    tail = pika.BasicProperties(*_NO_FIELDS, *after).encode()
    flags = _H.unpack(head[0])[0] | _H.unpack(tail[0])[0]
    return flags, b"".join(head[1:]), b"".join(tail[1:])


def _whole(props: Properties) -> Encoded:
    """Properties with headers other than strings: checked and encoded by pika, whole."""
    before, after = _fields(props)
    if props.message_id is not None:
        _check_short(props.message_id, "message_id")
    if props.timestamp is not None:
        _check_timestamp(props.timestamp)
    whole = pika.BasicProperties(*before, props.message_id, props.timestamp, *after)
    return Encoded(b"".join(whole.encode()))
