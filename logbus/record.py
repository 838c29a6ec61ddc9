"""Log records: severities, facilities, routing keys, and the bytes on the wire.

A :class:`LogRecord` is published as compact UTF-8 JSON with the keys ``id``,
``ts`` (RFC 3339, UTC, ``Z`` suffix, microseconds), ``facility``, ``severity``
(the word), ``host``, ``app``, ``pid``, ``message``, ``fields`` and ``v``, under
the routing key ``<facility>.<severity>``; then ``key`` when the record has one.

``key`` is the routing key a record arrived under: :func:`decode` sets it from
the delivery, records that logbus's own emitters build have none (None), so
their bodies are exactly the ten keys above. A record that has a key writes it
last in its body (``"key":"error"``), so the jsonl and webhook sinks keep it;
the archive tables (sqlite, postgres) have no column for it. Reading a body
back without a delivery (``routing_key=None``) takes the body's ``key``; with
one, the delivery's key wins.

:func:`decode` turns every body into a record and never raises on bytes,
because plain AMQP clients publish to logbus too (see its docstring, and
:mod:`logbus.shapes` for the JSON log shapes it reads).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, TypeVar

from logbus._keys import (
    SYSLOG_FACILITIES,
    WORDS,
    Severity,
    format_routing_key,
    parse_routing_key,
    show,
    validate_facility,
)
from logbus._record_values import _jsonable, epoch_seconds, format_ts, hostname, new_id, now
from logbus._timestamps import Invalid, read_ts
from logbus.errors import DecodeError, RecordError
from logbus.message import PERSISTENT, Properties
from logbus.shapes import BODY_BASE64, readings

__all__ = [
    "BODY_BASE64",
    "CONTENT_TYPE",
    "FIELDS",
    "SCHEMA_VERSION",
    "SYSLOG_FACILITIES",
    "LogRecord",
    "Severity",
    "decode",
    "format_routing_key",
    "format_ts",
    "hostname",
    "new_id",
    "now",
    "parse_routing_key",
    "validate_facility",
]

_T = TypeVar("_T")

CONTENT_TYPE = "application/json"
SCHEMA_VERSION = 1

#: A record's fields, in wire order.
FIELDS = ("id", "ts", "facility", "severity", "host", "app", "pid", "message", "fields", "v")
# And the routing key it arrived under, written after them only when there is one.
_SLOT_NAMES = (*FIELDS, "key")

_DEFAULT_FACILITY = "user"


@dataclass(frozen=True, slots=True, init=False)
class LogRecord:
    """One log event, immutable; what logbus routes, stores and shows.

    Build one with keywords (or :meth:`from_key`); ``id``, ``ts``, ``host``,
    ``app``, ``pid``, ``fields`` and ``v`` have defaults. A naive ``ts`` is taken
    as UTC; ``severity`` accepts anything :meth:`Severity.parse` does. An invalid
    field raises a :class:`RecordError` (or its ``FacilityError``/``SeverityError``
    subclass) whose one-line message names the field. ``fields`` must hold JSON
    data only.

    A plain frozen class with its checks written out, not a pydantic model: a
    one-record ``logbus emit`` would otherwise pay for importing pydantic and
    building the model's schema, more than the rest of its work together.
    """

    id: str
    ts: datetime
    facility: str
    severity: Severity
    host: str
    app: str
    pid: int | None
    message: str
    fields: dict[str, Any] = field(hash=False)  # a dict cannot be hashed; ids are unique
    v: int
    # Where the record was seen, not what it is: two records are equal (and hash
    # alike) whatever routing key each arrived under.
    key: str | None = field(compare=False)

    def __init__(self, **data: Any) -> None:
        problems: list[RecordError] = []
        values = []
        for name, check, default in _CHECKS:
            value = data.pop(name, _MISSING)
            if value is _MISSING:
                if default is None:
                    problems.append(RecordError(f"record field {name!r} is required"))
                    continue
                value = default()
            try:
                values.append(check(value))
            except Invalid as exc:
                problems.append(RecordError(f"record field {name!r}: {exc} (got {show(value)})"))
            except RecordError as exc:
                problems.append(exc)
        problems += (RecordError(f"{name!r} is not a record field") for name in data)
        if problems:
            more = len(problems) - 1
            first = problems[0]
            raise type(first)(f"{first} (and {more} more problems)" if more else str(first))
        _fill(self, *values)

    @classmethod
    def from_key(cls, key: str, message: str, **kw: Any) -> LogRecord:
        """Build a record from a routing key such as ``"kern.crit"`` and a message."""
        facility, severity = parse_routing_key(key)
        return cls(facility=facility, severity=severity, message=message, **kw)

    @classmethod
    def from_parsed(cls, kw: dict[str, Any]) -> LogRecord:
        """A parser's keywords (ingest's syslog ``parse``) as a record, unchecked: valid by
        construction (PRI-table facility, Severity, UTC datetime, str, JSON-safe fields)."""
        built = _NEW(cls)
        _fill(built, new_id(), *_PARSED(kw), SCHEMA_VERSION, None)
        return built

    @property
    def routing_key(self) -> str:
        """``<facility>.<severity>`` with the canonical severity word."""
        return f"{self.facility}.{WORDS[self.severity]}"

    def replace(self, **changes: Any) -> LogRecord:
        """A copy with ``changes`` applied, validated as a new record is."""
        return LogRecord(**{name: getattr(self, name) for name in _SLOT_NAMES} | changes)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON data, what :meth:`to_bytes` writes: ``ts`` as RFC 3339 text,
        ``severity`` as its word, ``fields`` a copy (JSON data already), ``key`` if set."""
        data = {name: getattr(self, name) for name in FIELDS}
        data["ts"] = format_ts(self.ts)
        data["severity"] = WORDS[self.severity]
        data["fields"] = dict(self.fields)
        if self.key is not None:
            data["key"] = self.key
        return data

    def to_bytes(self) -> bytes:
        """The body to publish: compact UTF-8 JSON, keys in wire order."""
        try:
            return self._json(_STRING, _FIELDS_JSON).encode()
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8; \u escapes carry them losslessly.
            return self._json(_STRING_ASCII, _FIELDS_ASCII).encode()

    def _json(self, string: Callable[[str], str], dump: Callable[[Any], str]) -> str:
        """This record as JSON text; ``string`` quotes a str, ``dump`` writes ``fields``."""
        # One f-string over the C quoting function is about what pydantic's serializer
        # took, and the facility and severity need no quoting: their grammar has none.
        pid = "null" if self.pid is None else int(self.pid)
        fields = dump(self.fields) if self.fields else "{}"
        key = "" if self.key is None else f',"key":{string(self.key)}'
        return (
            f'{{"id":{string(self.id)},"ts":"{format_ts(self.ts)}","facility":"{self.facility}",'
            f'"severity":"{WORDS[self.severity]}","host":{string(self.host)},"app":'
            f'{string(self.app)},"pid":{pid},"message":{string(self.message)},"fields":{fields},'
            f'"v":{int(self.v)}{key}}}'
        )

    def to_properties(self) -> Properties:
        """The AMQP properties to publish with: persistent, ids, and filterable headers."""
        return Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=self.id,
            timestamp=epoch_seconds(self.ts),
            app_id="logbus",
            headers={
                "facility": self.facility,
                "severity": WORDS[self.severity],
                "host": self.host,
                "app": self.app,
            },
        )


_MISSING: Any = object()
_PARSED = itemgetter(*FIELDS[1:9])  # from_parsed's values, ts to fields
_NEW = LogRecord.__new__
_SLOTS = tuple(getattr(LogRecord, name).__set__ for name in _SLOT_NAMES)
assert tuple(f.name for f in dataclasses.fields(LogRecord)) == _SLOT_NAMES
_STRING: Callable[[str], str] = json.encoder.encode_basestring
_STRING_ASCII: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _fields_writer(quote: Callable[[str], str]) -> Callable[[Any], str]:
    """Compact JSON of a record's fields through json's C encoder, built once: they are
    checked JSON data (no NaN, no cycles, nothing for ``default``), so neither a
    per-call encoder nor its circular-reference bookkeeping is needed."""

    def refuse(value: object) -> None:
        raise TypeError(f"not JSON data: {type(value).__name__}")  # _jsonable let none in

    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    if make is None:  # a Python without json's C speed-ups
        return json.JSONEncoder(ensure_ascii=quote is _STRING_ASCII, separators=(",", ":")).encode
    encode = make(None, refuse, quote, None, ":", ",", False, False, False)
    return lambda fields: "".join(encode(fields, 0))


_FIELDS_JSON = _fields_writer(_STRING)
_FIELDS_ASCII = _fields_writer(_STRING_ASCII)


def _fill(record: LogRecord, *values: Any) -> None:
    """Set the (frozen) slots of a new record, in :data:`FIELDS` order, then ``key``."""
    for put, value in zip(_SLOTS, values, strict=True):
        put(record, value)


# -- the checks of each field ---------------------------------------------------------


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("Input should be a valid string")
    return value


def _ident(value: Any) -> str:
    text = _text(value)
    if not text:
        raise Invalid("String should have at least 1 character")
    return text


def _facility(value: Any) -> str:
    return validate_facility(_text(value))


def _pid(value: Any) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise Invalid("Input should be a valid integer")
    return value


def _key(value: Any) -> str | None:
    return None if value is None else _text(value)


def _version(value: Any) -> int:
    number = _pid(value)
    if number is None:
        raise Invalid("Input should be a valid integer")
    if number < 1:
        raise Invalid("Input should be greater than or equal to 1")
    return number


def _fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("Input should be a valid dictionary")
    if not value:
        return {}
    result = _jsonable(value)
    return dict(result) if result is value else result


_CHECKS: tuple[tuple[str, Callable[[Any], Any], Callable[[], Any] | None], ...] = (
    ("id", _ident, new_id),
    ("ts", read_ts, now),
    ("facility", _facility, None),
    ("severity", Severity.parse, None),
    ("host", _text, hostname),
    ("app", _text, lambda: "logbus"),
    ("pid", _pid, os.getpid),
    ("message", _text, None),
    ("fields", _fields, dict),
    ("v", _version, lambda: SCHEMA_VERSION),
    ("key", _key, lambda: None),
)

_KNOWN = frozenset(_SLOT_NAMES)
# ts as format_ts writes it; other forms get the full check's (more lenient) parsing.
_WIRE_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_NO_FIELDS: Any = object()
_NO_PROPERTIES = Properties()
# What building a record from a reading may raise: a value it cannot take.
_UNFIT = (RecordError, Invalid, ValueError, TypeError, OverflowError, RecursionError)


def decode(
    body: bytes, properties: Properties | None = None, routing_key: str | None = None
) -> LogRecord:
    """Turn any received body into a record: every body is one, and nothing is lost.

    * A JSON object of logbus's own keys is read as it is; any other JSON object
      through :func:`logbus.shapes.read_shape` (pino, bunyan, ECS, GELF, Logstash,
      python-json-logger), its unknown keys under ``fields``; without a message
      key, the message is the body's text. An object whose values do not fit a
      record is read as a shape, else as text: its whole text is the message.
    * Any other body (other JSON: ``42``, ``[1, 2]``, ``"x"``; any text; an empty
      one) is a record whose message is the text, trailing line breaks removed.
    * Bytes that are not UTF-8: the message is the text with each bad byte
      written ``\\xe9``, and ``fields["body_base64"]`` (:data:`BODY_BASE64`)
      holds the exact bytes, base64.

    ``key`` is ``routing_key`` (without one, a logbus body's own ``key``). What the
    body does not say comes from the key, then the properties: a key
    ``<facility>.<severity>`` (any case, ``Kern.Critical``) gives both, a key that
    is one severity word (``error``, ``crit``) gives the severity, any other key
    neither; then the ``facility``/``severity`` headers, else ``user`` and
    ``info``. ``id`` from ``message_id``, else a new one; ``ts`` from
    ``timestamp``, else now; ``host`` and ``app`` from headers (``app`` then from
    ``app_id``), else empty; ``pid`` is None. :class:`DecodeError` only when
    ``body`` is not bytes at all (a caller's bug).
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError(f"body is a {type(body).__name__}, not bytes")
    props = _NO_PROPERTIES if properties is None else properties
    key = routing_key if isinstance(routing_key, str) else None
    for data in readings(bytes(body)):
        try:
            return _complete(data, props, key)
        except _UNFIT:
            continue  # the next reading keeps more as text
    raise AssertionError("unreachable: a text reading always makes a record")


def _complete(data: dict[str, Any], props: Properties, routing_key: str | None) -> LogRecord:
    """Fill in what the body did not say from the key and properties, then validate."""
    if routing_key is not None:
        data["key"] = routing_key
    key = data.get("key")
    if "facility" not in data or "severity" not in data:
        headers = props.headers if isinstance(props.headers, Mapping) else {}
        facility, severity = _key_parts(key) if type(key) is str else (None, None)
        if facility is None:
            facility = _from_header(headers, "facility", validate_facility, _DEFAULT_FACILITY)
        if severity is None:
            severity = _from_header(headers, "severity", Severity.parse, Severity.INFO)
        data.setdefault("facility", facility)
        data.setdefault("severity", severity)
    if "id" not in data:
        message_id = props.message_id
        data["id"] = message_id if isinstance(message_id, str) and message_id else new_id()
    if "ts" not in data:
        data["ts"] = _timestamp(props.timestamp)
    if "host" not in data or "app" not in data:
        headers = props.headers if isinstance(props.headers, Mapping) else {}
        data.setdefault("host", _from_header(headers, "host", str, ""))
        app_id = props.app_id if isinstance(props.app_id, str) else ""
        data.setdefault("app", _from_header(headers, "app", str, app_id))
    data.setdefault("pid", None)
    trusted = _trusted(data)
    return trusted if trusted is not None else LogRecord(**data)


@lru_cache(maxsize=4096)  # keys repeat; a bound keeps a stream of unique ones cheap
def _key_parts(key: str) -> tuple[str | None, Severity | None]:
    """What a routing key says: ``(facility, severity)``, either None where it says nothing."""
    words = key.lower().split(".")
    try:
        if len(words) == 2:
            return validate_facility(words[0]), Severity.parse(words[1])
        if len(words) == 1 and words[0].isalpha():
            return None, Severity.parse(words[0])
    except RecordError:
        pass
    return None, None


def _trusted(data: dict[str, Any]) -> LogRecord | None:
    """The record validation would build from ``data``, built without running it again,
    when every value is one validation is known to accept as it is (or, for ``ts`` in
    the wire's own format, to read as :meth:`datetime.fromisoformat` does); None for
    anything else, which then gets the full validation and its errors."""
    if not data.keys() <= _KNOWN:
        return None
    try:
        facility = data["facility"]
        if type(facility) is not str:
            return None
        validate_facility(facility)
        severity = Severity.parse(data["severity"])
        ident, host, app, message = data["id"], data["host"], data["app"], data["message"]
        ts = data["ts"]
        pid = data["pid"]
    except (KeyError, RecordError):
        return None
    key = data.get("key")
    if not (
        type(ident) is str
        and ident
        and type(host) is str
        and type(app) is str
        and type(message) is str
        and (pid is None or type(pid) is int)
        and (key is None or type(key) is str)
    ):
        return None
    if type(ts) is str:
        if not _WIRE_TS.fullmatch(ts):
            return None
        try:
            ts = datetime.fromisoformat(ts)
        except ValueError:
            return None
    elif type(ts) is not datetime or ts.tzinfo is not UTC:
        return None
    fields = data.get("fields", _NO_FIELDS)
    if fields is _NO_FIELDS:
        fields = {}
    elif type(fields) is not dict:
        return None
    elif fields:
        try:
            fields = _jsonable(fields)
        except RecordError:
            return None
    v = data.get("v", SCHEMA_VERSION)
    if type(v) is not int or v < 1:
        return None
    built = _NEW(LogRecord)
    _fill(built, ident, ts, facility, severity, host, app, pid, message, fields, v, key)
    return built


def _from_header(
    headers: Mapping[str, Any], name: str, read: Callable[[str], _T], default: _T
) -> _T:
    value = headers.get(name)
    try:
        return read(value) if isinstance(value, str) else default
    except RecordError:
        return default


def _timestamp(seconds: object) -> datetime:
    if isinstance(seconds, int) and not isinstance(seconds, bool):
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            pass  # out of range for datetime: fall back to arrival time
    return now()
