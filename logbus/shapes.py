"""Common JSON log shapes, mapped onto a record's fields.

A JSON object that arrives from a producer other than logbus is still a record:
its keys are read as the log libraries and shippers that wrote them meant them,
and every key that is not read (or whose value does not fit) is kept under
``fields``. The shapes, and the keys read from each:

============================  =============================================================
logbus                        ``id ts facility severity host app pid message fields v``
pino, bunyan                  ``msg``, numeric ``level`` (10 trace .. 60 fatal), ``time``
                              (ms since the epoch, or RFC 3339), ``hostname``, ``pid``, ``name``
ECS                           ``@timestamp``, ``log.level``, ``message``, ``host.name``,
                              ``service.name``, ``process.pid`` (dotted keys or nested objects)
GELF                          ``short_message`` (``full_message`` stays in fields), syslog
                              numeric ``level``, ``host``, ``timestamp`` (seconds, fractions)
Logstash                      ``@timestamp``, ``message``, ``level``
python-json-logger            ``message``, ``levelname``, ``asctime``, ``name``, ``process``
============================  =============================================================

:func:`read_shape` never raises: a value it cannot read stays in ``fields`` under
its own key, and the record then takes its defaults (from the routing key, the
AMQP properties or the time of arrival). Nothing here imports pydantic.

:func:`readings` is how :func:`logbus.record.decode` reads a whole body: the
ways to read it, most structured first, each a mapping of record fields that
the decoder tries in turn until one makes a valid record. The last is always
the body as text, so every body is a record. Bytes that are not UTF-8 are read
once: the message is the text with each bad byte written as ``\\xe9``
(``backslashreplace``: readable, and a byte never passes for the character it
would be in Latin-1), and the exact bytes are kept, base64, under
``fields["body_base64"]`` (:data:`BODY_BASE64`).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from logbus._keys import Severity, validate_facility
from logbus.errors import RecordError

__all__ = ["BODY_BASE64", "read_shape", "readings", "severity_of"]

#: The record's own keys, as logbus writes them.
OWN_KEYS = ("id", "ts", "facility", "severity", "host", "app", "pid", "message", "fields", "v")
#: The field that keeps a body that is not UTF-8, exactly, in base64.
BODY_BASE64 = "body_base64"
# A logbus body: its own keys, and the routing key it carried when it had one.
_OWN = frozenset((*OWN_KEYS, "key"))

# Level words of the log libraries (case-insensitive) beyond the syslog words and aliases.
_LEVEL_WORDS = {
    "trace": Severity.DEBUG,
    "verbose": Severity.DEBUG,
    "fatal": Severity.EMERGENCY,
    "information": Severity.INFO,
    "informational": Severity.INFO,
    "warnings": Severity.WARNING,
    "severe": Severity.ERROR,
}

# pino and bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
_PINO_LEVELS = (
    (60, Severity.EMERGENCY),
    (50, Severity.ERROR),
    (40, Severity.WARNING),
    (30, Severity.INFO),
    (20, Severity.DEBUG),
)

# Epoch numbers above this are milliseconds (it is 1973 in ms, year 5138 in seconds).
_MS_THRESHOLD = 1e11


def severity_of(value: object, *, syslog_numbers: bool = True) -> Severity | None:
    """The severity a level value names, or None.

    Words are the syslog words and aliases plus the log libraries' own (``trace``,
    ``fatal``, ``WARNING``), in any case. Numbers 0..7 are syslog codes when
    ``syslog_numbers`` is true; 10..60 are pino/bunyan levels (and any number
    from 10 up rounds down to the nearest of them).
    """
    if isinstance(value, str):
        word = value.strip().lower()
        found = _LEVEL_WORDS.get(word)
        if found is not None:
            return found
        try:
            return Severity.parse(word)
        except RecordError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
        return None
    number = int(value)
    if syslog_numbers and 0 <= number <= 7:
        return Severity(number)
    for bound, severity in _PINO_LEVELS:
        if number >= bound:
            return severity
    return Severity.DEBUG if number >= 10 else None


def _epoch(value: object) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1000 if abs(value) > _MS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _rfc3339(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 time (``Z``, offsets, fractions); naive ones are UTC."""
    if not isinstance(value, str) or not 10 <= len(value) <= 64:
        return None
    text = value.strip()
    if text[-1:] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def _asctime(value: object) -> datetime | None:
    """logging's default asctime, ``2024-05-17 08:30:15,123``: local time of this machine."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return _rfc3339(value)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, OSError):
        return None


def _any_time(value: object) -> datetime | None:
    return _epoch(value) if isinstance(value, int | float) else _rfc3339(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _pid(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _facility(value: object) -> str | None:
    try:
        return validate_facility(value) if isinstance(value, str) else None
    except RecordError:
        return None


_Reader = Callable[[object], Any]

# For each record field, the keys to try in order, and how to read each. A path of
# two names reads a dotted key ("log.level") or the same path through nested objects.
_MESSAGE: tuple[tuple[str, ...], ...] = (("message",), ("msg",), ("short_message",))
_TIME: tuple[tuple[tuple[str, ...], _Reader], ...] = (
    (("ts",), _rfc3339),
    (("@timestamp",), _rfc3339),
    (("time",), _any_time),
    (("timestamp",), _any_time),
    (("asctime",), _asctime),
)
_HOST: tuple[tuple[str, ...], ...] = (("host",), ("hostname",), ("host", "name"))
_APP: tuple[tuple[str, ...], ...] = (("app",), ("service", "name"), ("name",))
_PID: tuple[tuple[str, ...], ...] = (("pid",), ("process", "pid"), ("process",))


def _take(data: dict[str, Any], path: tuple[str, ...], read: _Reader) -> Any:
    """The value at ``path`` read by ``read``, removed from ``data`` if it was read; else None."""
    if len(path) == 1 or path[0] + "." + path[1] in data:
        key = path[0] if len(path) == 1 else path[0] + "." + path[1]
        if key not in data:
            return None
        value = read(data[key])
        if value is not None:
            del data[key]
        return value
    inner = data.get(path[0])
    if not isinstance(inner, dict) or path[1] not in inner:
        return None
    value = read(inner[path[1]])
    if value is not None:
        rest = {k: v for k, v in inner.items() if k != path[1]}
        if rest:
            data[path[0]] = rest
        else:
            del data[path[0]]
    return value


def _first(data: dict[str, Any], paths: tuple[tuple[str, ...], ...], read: _Reader) -> Any:
    for path in paths:
        value = _take(data, path, read)
        if value is not None:
            return value
    return None


def _is_gelf(data: Mapping[str, Any]) -> bool:
    return "short_message" in data or (
        isinstance(data.get("version"), str) and data.get("version", "").startswith("1.")
    )


def _severity(data: dict[str, Any]) -> Severity | None:
    """``severity``, ``log.level``, ``level`` or ``levelname``; a bare number under
    ``level`` is a syslog code only in GELF (elsewhere it is pino's scale)."""
    gelf = _is_gelf(data)

    def syslog_level(value: object) -> Severity | None:
        return severity_of(value)

    def level(value: object) -> Severity | None:
        return severity_of(value, syslog_numbers=gelf)

    for path, read in (
        (("severity",), syslog_level),
        (("log", "level"), syslog_level),
        (("level",), level),
        (("levelname",), syslog_level),
    ):
        found: Severity | None = _take(data, path, read)
        if found is not None:
            return found
    return None


def read_shape(data: Mapping[str, Any]) -> dict[str, Any]:
    """The record fields a JSON object's keys give, with the rest under ``fields``.

    The result holds only the keys that were found and readable, among ``id``,
    ``ts``, ``facility``, ``severity``, ``host``, ``app``, ``pid``, ``message`` and
    ``v``, plus ``fields`` whenever any key was left over. A ``fields`` object in
    the body is merged in (its keys win over leftovers of the same name).
    """
    rest = dict(data)
    out: dict[str, Any] = {}
    found = {
        "message": _first(rest, _MESSAGE, _text),
        "ts": next((t for path, read in _TIME if (t := _take(rest, path, read)) is not None), None),
        "severity": _severity(rest),
        "facility": _take(rest, ("facility",), _facility),
        "host": _first(rest, _HOST, _text),
        "app": _first(rest, _APP, _text),
        "pid": _first(rest, _PID, _pid),
        "id": _take(rest, ("id",), lambda v: v if isinstance(v, str) and v else None),
        "v": _take(rest, ("v",), lambda v: v if type(v) is int and v >= 1 else None),
    }
    out.update((key, value) for key, value in found.items() if value is not None)
    inner = rest.pop("fields", None) if isinstance(rest.get("fields"), dict) else None
    if inner is not None:
        rest.update(inner)
    if rest:
        out["fields"] = rest
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not standard JSON")


_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode


def readings(body: bytes) -> Iterator[dict[str, Any]]:
    """The ways to read ``body`` as record fields, most structured first; the last
    is the text alone (trailing line breaks removed), which always makes a record.

    A JSON object of logbus's own keys with a ``message`` comes first as it is,
    then any JSON object through :func:`read_shape` (the body's text is the
    message when no key gave one). Other JSON and any other text are only text.
    """
    try:
        text = str(body, "utf-8-sig")
    except UnicodeDecodeError:
        readable = str(body, "utf-8", "backslashreplace").rstrip("\r\n")
        yield {"message": readable, "fields": {BODY_BASE64: base64.b64encode(body).decode()}}
        return
    line = text.rstrip("\r\n")
    stripped = text.strip()
    if stripped[:1] == "{":
        try:
            data = _DECODE(stripped)
        except (ValueError, RecursionError):
            data = None  # text that starts with '{': "{worker-3} crashed"
        if type(data) is dict:
            if "message" in data and data.keys() <= _OWN:
                yield dict(data)
            shape = read_shape(data)
            shape.setdefault("message", line)
            yield shape
    yield {"message": line}
