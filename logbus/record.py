"""Log records: severities, facilities, routing keys, and the bytes on the wire.

A :class:`LogRecord` is published as compact UTF-8 JSON with the keys ``id``,
``ts`` (RFC 3339, UTC, ``Z`` suffix, microseconds), ``facility``, ``severity``
(the word), ``host``, ``app``, ``pid``, ``message``, ``fields`` and ``v``, under
the routing key ``<facility>.<severity>``. :func:`decode` turns any body back
into a record or raises :class:`~logbus.errors.DecodeError`, and is lenient
where it can be lossless, because plain AMQP clients publish to logbus too.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import IntEnum
from functools import cache
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic_core import PydanticSerializationError

from logbus.errors import DecodeError, FacilityError, RecordError, RoutingKeyError, SeverityError
from logbus.message import PERSISTENT, Properties

__all__ = [
    "CONTENT_TYPE",
    "SCHEMA_VERSION",
    "SYSLOG_FACILITIES",
    "LogRecord",
    "Severity",
    "decode",
    "format_routing_key",
    "parse_routing_key",
    "validate_facility",
]

CONTENT_TYPE = "application/json"
SCHEMA_VERSION = 1

_T = TypeVar("_T")

_SHOW_MAX = 40
_MAX_DEPTH = 100
_DEFAULT_FACILITY = "user"
_KEY_SHAPE = "<facility>.<severity> (e.g. kern.critical)"


def _show(value: object) -> str:
    """Quote a bad value for an error message, cut short so one line stays one line."""
    if isinstance(value, str):
        if len(value) > _SHOW_MAX:
            return f"{value[:_SHOW_MAX]!r}... ({len(value)} chars)"
        return repr(value)
    text = repr(value)
    return text if len(text) <= _SHOW_MAX else f"{text[:_SHOW_MAX]}..."


class Severity(IntEnum):
    """The eight syslog severities, most severe first (RFC 5424 codes 0..7).

    ``str()`` and f-strings give the lowercase word (``"critical"``), which is what
    routing keys, headers and the wire carry; :meth:`parse` accepts words, aliases,
    codes and digit strings.
    """

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7

    @property
    def word(self) -> str:
        """The canonical lowercase word, e.g. ``"critical"``."""
        return _WORDS[self]

    def __str__(self) -> str:
        return _WORDS[self]

    def __format__(self, format_spec: str) -> str:
        return format(_WORDS[self], format_spec)

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        """Read a severity from a word, an alias, a code 0..7 or a digit string.

        Words and aliases (``emerg``, ``panic``, ``crit``, ``err``, ``warn``) are
        case-insensitive. Anything else raises :class:`SeverityError`.
        """
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            found = _BY_NAME.get(value.lower())
            if found is not None:
                return found
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 7:
            return _ALL[value]
        raise SeverityError(
            f"unknown severity {_show(value)}; expected one of {', '.join(_WORDS)}"
            " (aliases emerg, panic, crit, err, warn; or a code 0-7)"
        )


_ALL: tuple[Severity, ...] = tuple(Severity)
_WORDS: tuple[str, ...] = tuple(s.name.lower() for s in _ALL)
_BY_NAME: dict[str, Severity] = {
    **{s.name.lower(): s for s in _ALL},
    **{str(s.value): s for s in _ALL},
    "emerg": Severity.EMERGENCY,
    "panic": Severity.EMERGENCY,
    "crit": Severity.CRITICAL,
    "err": Severity.ERROR,
    "warn": Severity.WARNING,
}

SYSLOG_FACILITIES: tuple[str, ...] = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)  # fmt: skip
"""The syslog facility names, in the order of their codes (15, ``clock``, is not named)."""

_FACILITY_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_FACILITY_RULE = "a facility is [a-z][a-z0-9_-]{0,31}, e.g. kern or local0"


def validate_facility(name: str) -> str:
    """Return ``name`` if it is a valid facility token, else raise :class:`FacilityError`.

    Valid tokens match ``[a-z][a-z0-9_-]{0,31}``: the syslog names and any
    subsystem name of that shape. The error says which part of the rule failed.
    """
    if isinstance(name, str) and _FACILITY_RE.fullmatch(name):
        return name
    raise FacilityError(f"facility {_show(name)} {_facility_problem(name)}; {_FACILITY_RULE}")


def _facility_problem(name: object) -> str:
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not a string"
    if not name:
        return "is empty"
    if len(name) > 32:
        return f"is {len(name)} characters long, more than 32"
    if name != name.lower():
        return "contains uppercase letters"
    if "." in name:
        return "contains '.', which separates the words of a routing key"
    if not ("a" <= name[0] <= "z"):
        return "does not start with a lowercase letter a-z"
    bad = next(c for c in name if not _FACILITY_RE.fullmatch("a" + c))
    return f"contains {bad!r}, which is not a-z, 0-9, '_' or '-'"


def parse_routing_key(key: str) -> tuple[str, Severity]:
    """Split ``<facility>.<severity>`` into a valid facility and a :class:`Severity`.

    ``"kern.crit"`` gives ``("kern", Severity.CRITICAL)``. A key with other than
    two dot-separated words, or whose words are not valid, raises
    :class:`RoutingKeyError` naming the key, the shape and the reason.
    """
    if not isinstance(key, str):
        raise RoutingKeyError(f"routing key {_show(key)} is not a string; expected {_KEY_SHAPE}")
    words = key.split(".")
    if len(words) != 2:
        reason = "it is empty" if not key else f"it has {len(words)} dot-separated words, not 2"
        raise RoutingKeyError(f"routing key {_show(key)} is not {_KEY_SHAPE}: {reason}")
    try:
        return validate_facility(words[0]), Severity.parse(words[1])
    except RecordError as exc:
        raise RoutingKeyError(f"routing key {_show(key)} is not {_KEY_SHAPE}: {exc}") from None


def format_routing_key(facility: str, severity: str | int | Severity) -> str:
    """The canonical routing key: ``format_routing_key("kern", 2) == "kern.critical"``."""
    return f"{validate_facility(facility)}.{_WORDS[Severity.parse(severity)]}"


@cache
def _hostname() -> str:
    return socket.gethostname()


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


def _format_ts(ts: datetime) -> str:
    # isoformat pads the year to four digits (strftime may not) and is faster;
    # ts is always UTC, so its "+00:00" suffix is swapped for "Z".
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


def _jsonable(value: Any, depth: int = 0) -> Any:
    """Return ``value`` as plain JSON data (tuples become lists), or raise RecordError."""
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    is_map = isinstance(value, Mapping)
    if not is_map and not isinstance(value, list | tuple):
        raise RecordError(f"fields hold the {type(value).__name__} {_show(value)}; not JSON data")
    if depth >= _MAX_DEPTH:
        raise RecordError(f"fields are nested deeper than {_MAX_DEPTH} levels")
    out: dict[Any, Any] = {}
    changed = type(value) not in (dict, list)  # tuples and other mappings get rebuilt
    for key, item in value.items() if is_map else enumerate(value):
        if is_map and not isinstance(key, str):
            raise RecordError(
                f"fields hold the {type(key).__name__} key {_show(key)}; keys are str"
            )
        out[key] = new = _jsonable(item, depth + 1)
        changed = changed or new is not item
    if not changed:
        return value
    return out if is_map else list(out.values())


class LogRecord(BaseModel):
    """One log event, immutable; what logbus routes, stores and shows.

    Build one with keywords (or :meth:`from_key`); ``id``, ``ts``, ``host``,
    ``app``, ``pid``, ``fields`` and ``v`` have defaults. A naive ``ts`` is taken
    as UTC; ``severity`` accepts anything :meth:`Severity.parse` does. An invalid
    field raises a :class:`RecordError` (or its ``FacilityError``/``SeverityError``
    subclass) whose one-line message names the field. ``fields`` must hold JSON
    data only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id, min_length=1, strict=True)
    ts: datetime = Field(default_factory=_now)
    facility: str = Field(strict=True)
    severity: Severity
    host: str = Field(default_factory=_hostname, strict=True)
    app: str = Field(default="logbus", strict=True)
    pid: int | None = Field(default_factory=os.getpid, strict=True)
    message: str = Field(strict=True)
    fields: dict[str, Any] = Field(default_factory=dict, strict=True)
    v: int = Field(default=SCHEMA_VERSION, ge=1, strict=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _record_error(exc) from None

    @field_validator("ts")
    @classmethod
    def _ts_in_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        if value.tzinfo is UTC:
            return value
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise RecordError(f"ts {value.isoformat()} is out of range in UTC") from None

    @field_validator("facility")
    @classmethod
    def _valid_facility(cls, value: str) -> str:
        return validate_facility(value)

    @field_validator("severity", mode="before")
    @classmethod
    def _parse_severity(cls, value: Any) -> Severity:
        return Severity.parse(value)

    @field_validator("fields")
    @classmethod
    def _json_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = _jsonable(value) if value else value
        return result

    @field_serializer("severity", when_used="json")
    def _severity_word(self, value: Severity) -> str:
        return _WORDS[value]

    @field_serializer("ts", when_used="json")
    def _ts_text(self, value: datetime) -> str:
        return _format_ts(value)

    @classmethod
    def from_key(cls, key: str, message: str, **kw: Any) -> LogRecord:
        """Build a record from a routing key such as ``"kern.crit"`` and a message."""
        facility, severity = parse_routing_key(key)
        return cls(facility=facility, severity=severity, message=message, **kw)

    @property
    def routing_key(self) -> str:
        """``<facility>.<severity>`` with the canonical severity word."""
        return f"{self.facility}.{_WORDS[self.severity]}"

    def to_bytes(self) -> bytes:
        """The body to publish: compact UTF-8 JSON, keys in wire order."""
        try:
            # pydantic's serializer is about twice as fast as json.dumps of a dict.
            return _SERIALIZER.to_json(self)
        except PydanticSerializationError:
            # Lone surrogates cannot be UTF-8; \u escapes carry them losslessly.
            return _ENCODE_ASCII(self.model_dump(mode="json")).encode()

    def to_properties(self) -> Properties:
        """The AMQP properties to publish with: persistent, ids, and filterable headers."""
        return Properties(
            content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            message_id=self.id,
            timestamp=int(self.ts.timestamp()),
            app_id="logbus",
            headers={
                "facility": self.facility,
                "severity": _WORDS[self.severity],
                "host": self.host,
                "app": self.app,
            },
        )


_SERIALIZER = LogRecord.__pydantic_serializer__
_ENCODE_ASCII = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
_KNOWN = frozenset(LogRecord.model_fields)


def _record_error(exc: ValidationError) -> RecordError:
    """One readable line for the first problem pydantic found, as a logbus error."""
    errors = exc.errors()
    first = errors[0]
    loc = first["loc"]
    name = str(loc[0]) if loc else "record"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    inner = first.get("ctx", {}).get("error")
    if isinstance(inner, RecordError):
        return type(inner)(f"{inner}{more}")
    if first["type"] == "missing":
        return RecordError(f"record field {name!r} is required{more}")
    if first["type"] == "extra_forbidden":
        return RecordError(f"{name!r} is not a record field{more}")
    where = repr(name) + "".join(f"[{part!r}]" for part in loc[1:])
    return RecordError(f"record field {where}: {first['msg']} (got {_show(first['input'])}){more}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode
_JSON_START = frozenset('["-0123456789tfn')


def decode(body: bytes, properties: Properties | None = None, routing_key: str = "") -> LogRecord:
    """Turn a received body into a record, or raise :class:`DecodeError` saying why.

    A body whose first non-blank character is ``{`` must be a JSON record: it
    needs ``message``; known fields must have the right types; unknown top-level
    keys are kept under ``fields`` (where a key exists in both, ``fields`` wins).
    Any other body that is valid JSON (``[1]``, ``"x"``, ``42``) is not a record.
    The rest is plain text (with trailing line breaks removed) and becomes the
    message; an empty or blank body is an error.

    Missing values are filled in: facility and severity from the routing key when
    it is ``<facility>.<severity>``, else from the ``facility``/``severity``
    headers, else ``user`` and ``info``; ``id`` from ``message_id``, else a new
    one; ``ts`` from ``timestamp``, else now; ``host`` and ``app`` from headers
    (``app`` then from ``app_id``), else empty; ``pid`` is None.
    """
    props = properties if properties is not None else Properties()
    if not isinstance(body, bytes | bytearray | memoryview):
        raise DecodeError(f"body is a {type(body).__name__}, not bytes")
    try:
        text = str(body, "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"body is not valid UTF-8 (at byte {exc.start}: {exc.reason})") from None
    stripped = text.strip()
    if not stripped:
        raise DecodeError("body is empty" if not text else "body is blank (only whitespace)")
    if stripped[0] == "{":
        try:
            data = _DECODE(stripped)
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"body starts with '{{' but is not valid JSON: {exc}") from None
        if "message" not in data:
            raise DecodeError("JSON record has no 'message'")
        known = {k: v for k, v in data.items() if k in _KNOWN}
        if len(known) < len(data):
            fields = known.get("fields", {})
            if not isinstance(fields, dict):
                raise DecodeError(f"JSON record's 'fields' is {_json_type(fields)}, not an object")
            known["fields"] = {k: v for k, v in data.items() if k not in _KNOWN} | fields
        return _complete(known, props, routing_key)
    if stripped[0] in _JSON_START:
        try:
            data = _DECODE(stripped)
        except (ValueError, RecursionError):
            pass  # not JSON: plain text such as "[INFO] started" or "-- mark --"
        else:
            raise DecodeError(f"JSON body is {_json_type(data)}, not an object")
    return _complete({"message": text.rstrip("\r\n")}, props, routing_key)


def _json_type(data: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(data), "a number")


def _complete(data: dict[str, Any], props: Properties, routing_key: str) -> LogRecord:
    """Fill in what the body did not say from the key and properties, then validate."""
    headers = props.headers if isinstance(props.headers, Mapping) else {}
    if "facility" not in data or "severity" not in data:
        try:
            facility, severity = parse_routing_key(routing_key)
        except RoutingKeyError:
            facility = _from_header(headers, "facility", validate_facility, _DEFAULT_FACILITY)
            severity = _from_header(headers, "severity", Severity.parse, Severity.INFO)
        data.setdefault("facility", facility)
        data.setdefault("severity", severity)
    if "id" not in data:
        message_id = props.message_id
        data["id"] = message_id if isinstance(message_id, str) and message_id else _new_id()
    if "ts" not in data:
        data["ts"] = _timestamp(props.timestamp)
    if "host" not in data:
        data["host"] = _from_header(headers, "host", str, "")
    if "app" not in data:
        app_id = props.app_id if isinstance(props.app_id, str) else ""
        data["app"] = _from_header(headers, "app", str, app_id)
    data.setdefault("pid", None)
    try:
        return LogRecord(**data)
    except RecordError as exc:
        raise DecodeError(f"not a valid record: {exc}") from None


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
    return _now()
