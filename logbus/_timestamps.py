"""Reading a record's ``ts``: a datetime, a date, RFC 3339 text or a unix time, always UTC.

:mod:`logbus.record` checks every field by hand (no pydantic on the one-record
path); this is its most lenient check, kept apart so the record module stays
small. It accepts what records arriving from other producers carry: RFC 3339
and its common relatives (a space for ``T``, no seconds, a date alone, lowercase
``t``/``z``), unix seconds (milliseconds above 2e10, as JavaScript writes them),
as numbers or digit strings. A naive time is UTC; an aware one is converted.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

from logbus.errors import RecordError

__all__ = ["Invalid", "read_ts"]


class Invalid(Exception):
    """A field's value has the wrong type or range; the message says what was expected."""


def read_ts(value: Any) -> datetime:
    """``value`` as an aware UTC datetime; :class:`Invalid` (or RecordError) if it is none."""
    return _in_utc(_datetime(value))


# RFC 3339 and its common relatives: a date, then optionally a time (T, t or a space
# between) with optional fraction and zone; more than six fraction digits are cut.
# Patterns, not compiled regexes: re caches them on first use, and a record that gets
# its ts from now() (every emit) never needs them, so importing costs nothing.
_TS = (
    r"(\d{4})-(\d\d)-(\d\d)(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?"
    r"(?:([Zz])|([+-])(\d\d):?(\d\d))?)?"
)
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_MS_FROM = 2e10  # larger unix times are in milliseconds (as pydantic and JavaScript have it)


def _datetime(value: Any) -> datetime:
    """A datetime from a datetime, a date, RFC 3339 text (str or bytes) or unix time."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise Invalid("Input should be a valid datetime") from None
    if isinstance(value, str):
        if re.fullmatch(_NUMBER, value):
            return _unix(float(value))
        return _rfc3339(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _unix(value)
    raise Invalid("Input should be a valid datetime")


def _rfc3339(text: str) -> datetime:
    found = re.fullmatch(_TS, text)
    if found is None:
        raise Invalid("Input should be a valid datetime or date, in RFC 3339 form")
    year, month, day, hour, minute, second, fraction, z, sign, zh, zm = found.groups()
    zone: tzinfo | None = UTC if z else None
    try:
        if sign:
            offset = timedelta(hours=int(zh), minutes=int(zm))
            zone = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        y, mo, d, h, mi, sec = (int(part or 0) for part in (year, month, day, hour, minute, second))
        return datetime(y, mo, d, h, mi, sec, micro, tzinfo=zone)
    except ValueError as exc:
        raise Invalid(f"Input should be a valid datetime or date, {exc}") from None


def _unix(seconds: float) -> datetime:
    if abs(seconds) > _MS_FROM:
        seconds /= 1000
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise Invalid("Input should be a valid datetime, out of range as a unix time") from None


def _in_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise RecordError(f"ts {value.isoformat()} is out of range in UTC") from None
