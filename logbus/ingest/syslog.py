"""One syslog message, as real senders write it, read into a record's keywords.

Senders disagree with the RFCs more than they agree with each other: rsyslog,
syslog-ng, journald, ``logger(1)``, Python's ``SysLogHandler`` and network gear
each bend RFC 3164 a different way, and RFC 5424 is the exception. So
:func:`parse` never refuses a line. It reads what it recognises and keeps the
rest as the message; a line with no header it can read is still a record, with
the raw text as its message and ``fields["syslog"]["parsed"]`` false, because a
gateway that drops what it does not understand loses exactly the lines an
operator needs when something is odd.

What lands where (the keywords of :class:`~logbus.record.LogRecord`):

- ``facility``/``severity`` from PRI (``<189>`` is ``local7.notice``); no PRI, or
  one above 191, reads as RFC 3164's default ``user.notice``. Code 15 has no
  syslog name in logbus; it is ``clock`` here, as rsyslog and RFC 5424's table
  call it (the number stays in ``fields["syslog"]["pri"]``).
- ``ts`` from the message's timestamp, in UTC; from the arrival time when there
  is none or it cannot be a time (then ``fields["syslog"]["ts_invalid"]`` keeps
  its text). A time with no zone is read in ``zone`` (UTC unless the caller says);
  an RFC 3164 time with no year gets the current year, unless that puts it more
  than a day in the future, when it is last year's.
- ``host`` from HOSTNAME, else the caller's ``host``, else the peer's address.
- ``app`` and ``pid`` from APP-NAME/PROCID or the ``tag[pid]:`` of RFC 3164. A
  word after a hostname is the tag even without a colon, as rsyslog reads it and
  forwards RFC 5424 input (``host app msg``); a first word ending in ``:`` or
  ``[pid]`` is a tag with no hostname before it (local senders, journald).
- ``fields``: ``peer`` (the sender's address), ``msgid``, ``procid`` (as
  written), ``sd`` (structured data: ``{"id@n": {"name": "value"}}``, a repeated
  name gives a list), and ``syslog``: ``format`` (``rfc5424``, ``rfc3164``,
  ``cisco`` or ``raw``), ``parsed``, ``pri``, and flags for what went wrong
  (``truncated``, ``ts_invalid``, ``sd_invalid``, ``raw_b64`` when the bytes
  were not UTF-8).
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from typing import Any

from logbus.ingest._sd import read_sd
from logbus.ingest.framing import Truncated
from logbus.record import LogRecord, Severity

__all__ = ["FACILITY_NAMES", "parse", "parse_record", "peer_host"]

FACILITY_NAMES: tuple[str, ...] = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news",  # 0-7
    "uucp", "cron", "authpriv", "ftp", "ntp", "security", "console", "clock",  # 8-15
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",  # 16-23
)  # fmt: skip
"""The facility word of each syslog code, 0..23 (15 is ``clock``, see above)."""

_SEVERITIES = tuple(Severity)
_DEFAULT_PRI = 13  # user.notice, what RFC 3164 gives a message without PRI
_ONE_DAY = timedelta(days=1)

_PRI = re.compile(r"<([0-9]{1,3})>")
_V5424 = re.compile(r"([1-9][0-9]{0,2}) (?=-|[0-9]{4}-[0-9][0-9]-[0-9][0-9][Tt])")
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):?([0-9]{2}))?"
)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {name: number for number, name in enumerate(_MONTH_NAMES, 1)}
# Mmm dd hh:mm:ss, the day padded with a space or a zero (or neither), a year before
# the time as Cisco's "datetime year" writes it, and a fraction as network gear adds.
_BSD_TS = re.compile(
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}([0-9]{1,2})"
    r"(?: ([0-9]{4}))? ([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
)
_CISCO = re.compile(r"([0-9]{1,10}): |[*.](?=[A-Z][a-z][a-z] )")
_TAG = re.compile(r"([^\s\[\]:]{1,128})(?:\[([^\]\s]{0,128})\]:?|:)(?: |$)")
# After a hostname a tag needs no colon: rsyslog forwards RFC 5424 input as "host app msg".
_BARE_TAG = re.compile(r"([^\s\[\]:]{1,48}) (?=[\s\S])")
_WORD = re.compile(r"(\S+)(?: |$)")
_PID = re.compile(r"[0-9]{1,10}")
# The common RFC 3164 line whole, as the general reading would take it apart (PRI, a BSD
# time with no year or fraction or an RFC 3339 one as loggen and rsyslog write, a
# hostname, TAG[PID]: or TAG:): one match instead of five, and the same result
# (tests/unit/test_ingest_syslog.py compares the two).
_COMMON_3164 = re.compile(
    r"<([0-9]{1,3})>(?:(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}([0-9]{1,2})"
    r" ([0-9]{2}):([0-9]{2}):([0-9]{2})|([0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}"
    r":[0-9]{2}(?:[.,][0-9]{1,9})?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)) ([^\s\[\]:]+) "
    r"([^\s\[\]:]{1,128})(?:\[([^\]\s]{0,128})\]:?|:)(?: |$)"
)


def parse(
    data: bytes,
    peer: str | None = None,
    *,
    host: str | None = None,
    received: datetime | None = None,
    zone: tzinfo = UTC,
) -> dict[str, Any]:
    """Read one syslog message into the keyword arguments of a :class:`LogRecord`.

    ``peer`` is the sender's address (``"10.0.0.1:514"``), kept in ``fields`` and
    the host of last resort; ``host`` is the host to use when the message names
    none (a local socket's caller passes this machine's name); ``received`` is
    the arrival time (now by default); ``zone`` reads times that carry no zone.
    A :class:`~logbus.ingest.framing.Truncated` message is flagged as cut short.
    Never raises: whatever the bytes, the result builds a valid record.
    """
    arrived = received if received is not None else datetime.now(UTC)
    default_host = host if host is not None else peer_host(peer) if peer else ""
    try:
        result = _parse(data, default_host, arrived, zone)
    except Exception as exc:  # a parser bug must not lose the line; fuzzing looks for this flag
        result = _raw(_text(data, {}), default_host, arrived, {"format": "raw", "parsed": False})
        result["fields"]["syslog"]["error"] = f"{type(exc).__name__}: {exc}"
    fields = result["fields"]
    if peer is not None:
        fields["peer"] = peer
    if isinstance(data, Truncated):
        fields["syslog"]["truncated"] = True
    return result


def parse_record(data: bytes, peer: str | None = None, **options: Any) -> LogRecord:
    """:func:`parse` then build the record: what a listener publishes.

    Built with :meth:`LogRecord.from_parsed` (no per-field checks: :func:`parse`'s
    values are valid by construction, and checking them was half the parse time);
    a time not in UTC (it never should be) takes the checked path, which converts it.
    """
    kw = parse(data, peer, **options)
    return LogRecord.from_parsed(kw) if kw["ts"].tzinfo is UTC else LogRecord(**kw)


@lru_cache(maxsize=4096)  # asked for every line of a connection
def peer_host(peer: str) -> str:
    """The host part of ``"10.0.0.1:514"``, ``"[::1]:514"`` or a bare address."""
    if peer.startswith("["):
        end = peer.find("]")
        return peer[1:end] if end > 0 else peer
    if peer.count(":") == 1:
        return peer.rpartition(":")[0]
    return peer


def _text(data: bytes, syslog: dict[str, Any]) -> str:
    """The message as text, trailing line ends and NULs removed; invalid UTF-8 is
    replaced for reading and the exact bytes kept in ``raw_b64``."""
    try:
        text = str(data, "utf-8")
    except UnicodeDecodeError:
        text = str(data, "utf-8", "replace")
        syslog["raw_b64"] = base64.b64encode(data).decode("ascii")
    return text.rstrip("\r\n\x00")


def _parse(data: bytes, default_host: str, received: datetime, zone: tzinfo) -> dict[str, Any]:
    """The whole reading, in the order a line is tried: PRI, RFC 5424, Cisco, RFC 3164."""
    syslog: dict[str, Any] = {"format": "raw", "parsed": False}
    text = _text(bytes(data), syslog)
    common = _COMMON_3164.match(text)
    if common is not None and int(common[1]) <= 191:
        return _common_3164(common, text, received, zone, syslog)
    match = _PRI.match(text)
    if match is None or int(match[1]) > 191:
        syslog["pri"] = None
        return _raw(text, default_host, received, syslog)
    pri = int(match[1])
    syslog["pri"] = pri
    rest = text[match.end() :]
    if _V5424.match(rest):
        result = _rfc5424(rest, default_host, received, zone, syslog)
    else:
        cisco = _CISCO.match(rest)
        if cisco is not None:
            syslog["format"] = "cisco"
            syslog["parsed"] = True
            if cisco[1] is not None:
                syslog["seq"] = int(cisco[1])
            result = _raw(rest.removeprefix("\ufeff"), default_host, received, syslog)
        else:
            result = _rfc3164(rest, default_host, received, zone, syslog)
    result["facility"] = FACILITY_NAMES[pri >> 3]
    result["severity"] = _SEVERITIES[pri & 7]
    return result


def _common_3164(
    match: re.Match[str], text: str, received: datetime, zone: tzinfo, syslog: dict[str, Any]
) -> dict[str, Any]:
    """What :func:`_rfc3164` reads from a line :data:`_COMMON_3164` matched."""
    pri, month, day, hh, mm, ss, iso, host, app, procid = match.groups()
    pri_code = int(pri)
    syslog.update(format="rfc3164", parsed=True, pri=pri_code)
    fields: dict[str, Any] = {"syslog": syslog}
    if iso is None:
        parts = (_MONTHS[month], int(day), int(hh), int(mm), int(ss), 0)
        ts = _bsd_time(parts, None, received, zone)
        stamp = text[len(pri) + 2 : match.end(6)]
    else:
        ts = _rfc3339(iso, zone)
        stamp = iso
    if ts is None:
        ts = _invalid_ts(stamp, received, syslog)
    pid = None
    if procid is not None:
        fields["procid"] = procid
        pid = _pid(procid)
    return {
        "ts": ts,
        "host": host,
        "app": app,
        "pid": pid,
        "message": text[match.end() :].removeprefix("\ufeff"),
        "fields": fields,
        "facility": FACILITY_NAMES[pri_code >> 3],
        "severity": _SEVERITIES[pri_code & 7],
    }


def _raw(text: str, host: str, received: datetime, syslog: dict[str, Any]) -> dict[str, Any]:
    """The line kept whole as the message, under RFC 3164's default PRI."""
    return {
        "facility": FACILITY_NAMES[_DEFAULT_PRI >> 3],
        "severity": _SEVERITIES[_DEFAULT_PRI & 7],
        "ts": received,
        "host": host,
        "app": "",
        "pid": None,
        "message": text,
        "fields": {"syslog": syslog},
    }


def _rfc5424(
    rest: str, default_host: str, received: datetime, zone: tzinfo, syslog: dict[str, Any]
) -> dict[str, Any]:
    """``VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]``; a line cut short
    has its missing fields as NILVALUE."""
    parts = rest.split(" ", 6)
    parts += [""] * (7 - len(parts))
    version, stamp, hostname, app, procid, msgid, tail = parts
    syslog.update(format="rfc5424", parsed=True, version=int(version))
    fields: dict[str, Any] = {"syslog": syslog}
    ts = received
    if stamp != "-":
        ts = _rfc3339(stamp, zone) or _invalid_ts(stamp, received, syslog)
    pid = None
    if procid not in ("-", ""):
        fields["procid"] = procid
        pid = _pid(procid)
    if msgid not in ("-", ""):
        fields["msgid"] = msgid
    message = tail
    if tail.startswith("["):
        sd, end, problem = read_sd(tail)
        if problem is None:
            if sd:
                fields["sd"] = sd
            message = tail[end + 1 :] if tail[end : end + 1] == " " else tail[end:]
        else:
            syslog["sd_invalid"] = problem
    elif tail == "-" or tail.startswith("- "):
        message = tail[2:]
    return {
        "ts": ts,
        "host": hostname if hostname not in ("-", "") else default_host,
        "app": app if app != "-" else "",
        "pid": pid,
        "message": message.removeprefix("\ufeff"),
        "fields": fields,
    }


def _rfc3164(
    rest: str, default_host: str, received: datetime, zone: tzinfo, syslog: dict[str, Any]
) -> dict[str, Any]:
    """``TIMESTAMP HOSTNAME TAG[PID]: MSG`` and what senders make of it: an ISO time
    in place of the BSD one, no hostname (local senders), no tag, no header."""
    fields: dict[str, Any] = {"syslog": syslog}
    ts, after = _bsd_or_iso(rest, zone, received, syslog)
    host = default_host
    app = ""
    pid = None
    if after is None:  # no timestamp: a tag alone is still a header (SysLogHandler's ident)
        after = rest
        if _TAG.match(rest) is None:
            return _raw(rest.removeprefix("\ufeff"), default_host, received, syslog)
    elif after.startswith(":"):  # "Mar  1 00:01:23.456: %LINK-3-UPDOWN: ..."
        after = after[1:].removeprefix(" ")
        syslog.update(format="rfc3164", parsed=True)
        return {"ts": ts, "host": host, "app": app, "pid": pid, "message": after, "fields": fields}
    else:
        after = after.removeprefix(" ")
    syslog.update(format="rfc3164", parsed=True)
    tag = _TAG.match(after)
    if tag is None:
        word = _WORD.match(after)
        if word is not None:
            host = word[1]
            after = after[word.end() :]
            tag = _TAG.match(after) or _BARE_TAG.match(after)
    if tag is not None:
        app = tag[1]
        if tag.lastindex == 2 and tag[2] is not None:
            fields["procid"] = tag[2]
            pid = _pid(tag[2])
        after = after[tag.end() :]
    return {
        "ts": ts,
        "host": host,
        "app": app,
        "pid": pid,
        "message": after.removeprefix("\ufeff"),
        "fields": fields,
    }


def _bsd_or_iso(
    rest: str, zone: tzinfo, received: datetime, syslog: dict[str, Any]
) -> tuple[datetime, str | None]:
    """The timestamp at the start of ``rest`` and what follows it (None: there is none)."""
    match = _BSD_TS.match(rest)
    if match is not None:
        month, day, year, hh, mm, ss, frac = match.groups()
        ts = _bsd_time(
            (_MONTHS[month], int(day), int(hh), int(mm), int(ss), _micros(frac)),
            int(year) if year else None,
            received,
            zone,
        )
        return ts or _invalid_ts(match[0], received, syslog), rest[match.end() :]
    match = _RFC3339.match(rest)
    if match is not None:
        end = match.end()
        if end == len(rest) or rest[end] in " :":
            ts = _rfc3339(match[0], zone)
            return ts or _invalid_ts(match[0], received, syslog), rest[end:]
    return received, None


def _bsd_time(
    parts: tuple[int, int, int, int, int, int], year: int | None, received: datetime, zone: tzinfo
) -> datetime | None:
    """A BSD time in UTC; with no year, the latest of next, this and last year that is
    not more than a day ahead of ``received`` (so New Year's Eve skew reads right)."""
    if year is not None:
        return _local_utc(parts, year, zone)
    limit = received + _ONE_DAY
    for ts in _bsd_candidates(parts, received.astimezone(zone).year, zone):
        if ts is not None and ts <= limit:
            return ts
    return None


@lru_cache(maxsize=1024)  # a stream's lines share their stamps
def _bsd_candidates(
    parts: tuple[int, int, int, int, int, int], now: int, zone: tzinfo
) -> tuple[datetime | None, ...]:
    """The time of ``parts`` next year, this year and last year (None: not a time then)."""
    return tuple(_local_utc(parts, year, zone) for year in (now + 1, now, now - 1))


def _local_utc(
    parts: tuple[int, int, int, int, int, int], year: int, zone: tzinfo
) -> datetime | None:
    month, day, hh, mm, ss, micros = parts
    try:
        local = datetime(year, month, day, hh, mm, min(ss, 59), micros, tzinfo=zone)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


@lru_cache(maxsize=1024)
def _rfc3339(stamp: str, zone: tzinfo) -> datetime | None:
    """An RFC 3339 time in UTC (no zone: ``zone``), or None when it is not one.

    Kept for the last stamps read: a stream's lines share their (whole-second) stamps,
    and the same time object for them lets :func:`~logbus.record.format_ts` reuse
    its text too.
    """
    match = _RFC3339.fullmatch(stamp)
    if match is None:
        return None
    year, month, day, hh, mm, ss, frac, utc, sign, zh, zm = match.groups()
    try:
        tz: tzinfo = zone
        if utc:
            tz = UTC
        elif sign:
            offset = timedelta(hours=int(zh), minutes=int(zm))
            tz = timezone(-offset if sign == "-" else offset)
        # A leap second (:60) reads as :59; datetime has no room for it.
        local = datetime(
            int(year), int(month), int(day), int(hh), int(mm), min(int(ss), 59), _micros(frac), tz
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _micros(frac: str | None) -> int:
    """A fraction of a second's digits as microseconds (digits past six are cut)."""
    return int((frac + "00000")[:6]) if frac else 0


def _invalid_ts(text: str, received: datetime, syslog: dict[str, Any]) -> datetime:
    """Keep a timestamp that is no time (``Feb 30``, month 13) and use the arrival time."""
    syslog["ts_invalid"] = text
    return received


def _pid(procid: str) -> int | None:
    """A numeric PROCID as the record's pid; anything else stays only in ``procid``."""
    return int(procid) if _PID.fullmatch(procid) else None
