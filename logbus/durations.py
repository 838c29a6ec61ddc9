"""Durations as operators write them: ``250ms``, ``2s``, ``5m``, ``1h``, ``1d``, or plain seconds.

>>> parse_duration("1.5s"), parse_duration("250ms"), parse_duration("2m"), parse_duration(3)
(1.5, 0.25, 120.0, 3.0)

Used for retry delays, alert windows and time ranges alike, so every command and
config file accepts the same spellings. :func:`parse_time` reads a point in time
the same way (``logbus query --since``, ``logbus subscribe --since``): RFC 3339,
or a duration ago.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from logbus.errors import InputError

__all__ = ["UNITS", "format_duration", "parse_duration", "parse_time"]

#: Unit suffix -> seconds.
UNITS: dict[str, float] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*", re.IGNORECASE)
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
# A time "ago" also takes weeks, which retry delays and windows have no use for.
_AGO_UNITS = {**UNITS, "w": 7 * UNITS["d"]}


def parse_duration(value: str | float, *, what: str = "duration") -> float:
    """Seconds from ``value``: a number (seconds) or a number with a unit (ms, s, m, h, d).

    Negative, infinite and unparsable values raise :class:`~logbus.errors.InputError`
    naming ``what`` and showing the accepted forms.
    """
    if isinstance(value, bool):  # a TOML `true` is not a duration
        raise InputError(f"{what} must be a duration like 500ms, 2s, 5m or 1h, not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value)
        if match is None:
            raise InputError(
                f"{what} {value!r} is not a duration; write e.g. 500ms, 2s, 5m, 1h or 1d"
            )
        seconds = float(match[1]) * UNITS[(match[2] or "s").lower()]
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"{what} must be 0 or more seconds, not {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` in the units above (``1500ms``, ``2m``)."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds * 1000:g}ms"


def parse_time(text: str, *, now: datetime | None = None, option: str = "time") -> datetime:
    """An RFC 3339 time (UTC when it has no offset) or a duration ago: ``90s``, ``15m``, ``2h``,
    ``1d``, ``1w``. Anything else raises :class:`InputError` naming ``option``."""
    value = text.strip()
    match = _AGO.fullmatch(value.lower())
    if match is not None:
        seconds = float(match[1]) * _AGO_UNITS[match[2]]
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:
            raise InputError(f"{option} {text!r} reaches before year 1") from None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option} {text!r} is neither an RFC 3339 time (2025-01-02T03:04:05Z) nor a "
            "duration ago (90s, 15m, 2h, 1d, 1w)"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
