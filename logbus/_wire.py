"""A record's bytes on the wire and its AMQP properties, without pydantic.

:class:`WireRecord` holds the fields of a :class:`~logbus.record.LogRecord` as
plain values, already valid, and encodes them exactly as ``LogRecord`` does:
:meth:`WireRecord.body` is byte for byte ``LogRecord.to_bytes()`` and
:func:`record_properties` is what ``LogRecord.to_properties()`` returns (the
record module builds its properties through it). The fast ``logbus emit`` path
publishes these, so that one record does not pay for importing pydantic; a test
holds the two encodings equal.

Only what that path needs is here: ``fields`` must be plain JSON data without
floats (pydantic writes floats differently from :mod:`json`), which
:func:`plain_json` checks.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from logbus._keys import WORDS, Severity
from logbus.message import PERSISTENT, Properties

__all__ = [
    "CONTENT_TYPE",
    "SCHEMA_VERSION",
    "WireRecord",
    "format_ts",
    "hostname",
    "new_id",
    "now",
    "plain_json",
    "record_properties",
]

CONTENT_TYPE = "application/json"
SCHEMA_VERSION = 1

_MAX_DEPTH = 100
_INT64 = 2**63


@cache
def hostname() -> str:
    """This machine's name, the default ``host`` of a record."""
    return socket.gethostname()


def new_id() -> str:
    """A new record id: a random UUID (version 4) as 32 hex digits."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a ``Z``: ``2024-05-17T08:30:15.123456Z``."""
    # isoformat pads the year to four digits (strftime may not) and is faster;
    # ts is always UTC, so its "+00:00" suffix is swapped for "Z".
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


def plain_json(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON data both encoders write alike: str-keyed dicts,
    lists, str, bool, None and 64-bit ints (no floats), not deeply nested."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    if depth >= _MAX_DEPTH // 2:
        return False
    if type(value) is dict:
        return all(type(k) is str and plain_json(v, depth + 1) for k, v in value.items())
    if type(value) is list:
        return all(plain_json(v, depth + 1) for v in value)
    return False


def record_properties(
    record_id: str, ts: datetime, facility: str, severity: Severity, host: str, app: str
) -> Properties:
    """The AMQP properties a record is published with: persistent, ids, filterable headers."""
    return Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=record_id,
        timestamp=int(ts.timestamp()),
        app_id="logbus",
        headers={
            "facility": facility,
            "severity": WORDS[severity],
            "host": host,
            "app": app,
        },
    )


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_ENCODE_ASCII = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class WireRecord:
    """A valid record's fields, as plain values; the caller checked them.

    ``facility`` is a valid token and ``severity`` a :class:`Severity`;
    ``fields`` is :func:`plain_json` data.
    """

    facility: str
    severity: Severity
    message: str
    host: str = field(default_factory=hostname)
    app: str = "logbus"
    pid: int | None = field(default_factory=os.getpid)
    fields: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=new_id)
    ts: datetime = field(default_factory=now)
    v: int = SCHEMA_VERSION

    @property
    def routing_key(self) -> str:
        """``<facility>.<severity>`` with the canonical severity word."""
        return f"{self.facility}.{WORDS[self.severity]}"

    def values(self) -> dict[str, Any]:
        """The record's fields by name, in wire order: ``LogRecord(**values())`` is it."""
        return {
            "id": self.id,
            "ts": self.ts,
            "facility": self.facility,
            "severity": self.severity,
            "host": self.host,
            "app": self.app,
            "pid": self.pid,
            "message": self.message,
            "fields": dict(self.fields),
            "v": self.v,
        }

    def body(self) -> bytes:
        """The body to publish: compact UTF-8 JSON, keys in wire order."""
        data = self.values()
        data["ts"] = format_ts(self.ts)
        data["severity"] = WORDS[self.severity]
        try:
            return _ENCODE(data).encode()
        except UnicodeEncodeError:
            # Lone surrogates cannot be UTF-8; \u escapes carry them losslessly.
            return _ENCODE_ASCII(data).encode()

    def properties(self) -> Properties:
        """The AMQP properties to publish with."""
        return record_properties(
            self.id, self.ts, self.facility, self.severity, self.host, self.app
        )
