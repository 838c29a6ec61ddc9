"""``LOGBUS_*`` settings for the fast ``logbus emit`` path, without pydantic-settings.

:func:`quick_settings` resolves the same fields as :class:`logbus.settings.Settings`
from the same variables (names compared case-insensitively, as pydantic-settings
does) and keyword overrides. It accepts only plainly written values — digits, a
decimal point, a non-empty URL — and returns ``None`` for anything else: then
the caller asks ``Settings`` itself, which either reads the value its own way or
reports it as the one-line error the command line shows. So wherever this
returns settings, they equal what ``Settings`` would have built.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_URL", "QuickSettings", "quick_settings"]

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"

_PREFIX = "logbus_"
_FIELDS = ("url", "config", "prefetch", "confirm_timeout", "connect_timeout", "heartbeat")
# Credentials read from files: ``Settings`` reads them (and says what is wrong with them).
_FROM_FILES = ("url_file", "password_file")
_INT = re.compile(r"0|[1-9][0-9]{0,8}")
_FLOAT = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?")


@dataclass(frozen=True, slots=True)
class QuickSettings:
    """The fields of :class:`logbus.settings.Settings`, as plain values."""

    url: str = DEFAULT_URL
    config: Path | None = None
    prefetch: int = 100
    confirm_timeout: float = 30.0
    connect_timeout: float = 10.0
    heartbeat: int = 30
    url_file: Path | None = None  # always None here: set, it sends the caller to Settings
    password_file: Path | None = None


def quick_settings(
    environ: Mapping[str, str] | None = None,
    *,
    url: str | None = None,
    config: str | None = None,
    confirm_timeout: float | None = None,
) -> QuickSettings | None:
    """Settings from ``environ`` (default ``os.environ``) and overrides, or ``None``
    when a value is not plainly written (then ``Settings`` must judge it)."""
    found: dict[str, str] = {}
    for name, value in (os.environ if environ is None else environ).items():
        lowered = name.lower()
        if lowered.startswith(_PREFIX) and lowered[len(_PREFIX) :] in _FROM_FILES and value:
            return None
        if lowered.startswith(_PREFIX) and lowered[len(_PREFIX) :] in _FIELDS:
            field = lowered[len(_PREFIX) :]
            if field in found:
                return None  # LOGBUS_URL and logbus_url both set: which one wins is theirs
            found[field] = value
    if url is not None:
        found["url"] = url
    if not found.get("url", DEFAULT_URL):
        return None
    path: Path | None = None
    if config is not None:
        if not config:
            return None
        path = Path(config)
    elif found.get("config"):
        path = Path(found["config"])
    numbers: dict[str, float] = {}
    for field, low, high in (("prefetch", 1, 65535), ("heartbeat", 0, 65535)):
        text = found.get(field)
        if text is not None:
            if not _INT.fullmatch(text) or not low <= int(text) <= high:
                return None
            numbers[field] = int(text)
    for field in ("confirm_timeout", "connect_timeout"):
        text = found.get(field)
        if text is not None:
            if not _FLOAT.fullmatch(text) or not float(text) > 0:
                return None
            numbers[field] = float(text)
    if confirm_timeout is not None:
        if not confirm_timeout > 0:
            return None
        numbers["confirm_timeout"] = confirm_timeout
    return QuickSettings(
        url=found.get("url", DEFAULT_URL),
        config=path,
        prefetch=int(numbers.get("prefetch", 100)),
        confirm_timeout=float(numbers.get("confirm_timeout", 30.0)),
        connect_timeout=float(numbers.get("connect_timeout", 10.0)),
        heartbeat=int(numbers.get("heartbeat", 30)),
    )
