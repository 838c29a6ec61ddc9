"""Severities, facilities and routing keys: the grammar of a record's key.

:mod:`logbus.record` re-exports everything here (it lives apart to keep the
record module under 500 lines, and needs no pydantic). The errors are the
record module's: one line, naming the value and the rule it broke.
"""

from __future__ import annotations

import re
from enum import IntEnum

from logbus.errors import FacilityError, RecordError, RoutingKeyError, SeverityError

__all__ = [
    "SYSLOG_FACILITIES",
    "Severity",
    "format_routing_key",
    "parse_routing_key",
    "show",
    "validate_facility",
]

_SHOW_MAX = 40
_KEY_SHAPE = "<facility>.<severity> (e.g. kern.critical)"


def show(value: object) -> str:
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
        return WORDS[self]

    def __str__(self) -> str:
        return WORDS[self]

    def __format__(self, format_spec: str) -> str:
        return format(WORDS[self], format_spec)

    @classmethod
    def parse(cls, value: str | int | Severity) -> Severity:
        """Read a severity from a word, an alias, a code 0..7 or a digit string.

        Words and aliases (``emerg``, ``panic``, ``crit``, ``err``, ``warn``) are
        case-insensitive. Anything else raises :class:`SeverityError`.
        """
        if isinstance(value, Severity):
            return value
        if isinstance(value, str):
            found = BY_NAME.get(value.lower())
            if found is not None:
                return found
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 7:
            return ALL[value]
        raise SeverityError(
            f"unknown severity {show(value)}; expected one of {', '.join(WORDS)}"
            " (aliases emerg, panic, crit, err, warn; or a code 0-7)"
        )


# Pickles and reprs name the public home of the class.
Severity.__module__ = "logbus.record"

ALL: tuple[Severity, ...] = tuple(Severity)
WORDS: tuple[str, ...] = tuple(s.name.lower() for s in ALL)
BY_NAME: dict[str, Severity] = {
    **{s.name.lower(): s for s in ALL},
    **{str(s.value): s for s in ALL},
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
    raise FacilityError(f"facility {show(name)} {_facility_problem(name)}; {_FACILITY_RULE}")


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
        raise RoutingKeyError(f"routing key {show(key)} is not a string; expected {_KEY_SHAPE}")
    words = key.split(".")
    if len(words) != 2:
        reason = "it is empty" if not key else f"it has {len(words)} dot-separated words, not 2"
        raise RoutingKeyError(f"routing key {show(key)} is not {_KEY_SHAPE}: {reason}")
    try:
        return validate_facility(words[0]), Severity.parse(words[1])
    except RecordError as exc:
        raise RoutingKeyError(f"routing key {show(key)} is not {_KEY_SHAPE}: {exc}") from None


def format_routing_key(facility: str, severity: str | int | Severity) -> str:
    """The canonical routing key: ``format_routing_key("kern", 2) == "kern.critical"``."""
    return f"{validate_facility(facility)}.{WORDS[Severity.parse(severity)]}"
