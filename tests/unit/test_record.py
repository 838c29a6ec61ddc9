"""Unit tests for logbus.record: severities, facilities, routing keys, records, wire format."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import logbus.record
from logbus.errors import (
    FacilityError,
    RecordError,
    RoutingKeyError,
    SeverityError,
)
from logbus.message import PERSISTENT, Properties
from logbus.record import (
    SYSLOG_FACILITIES,
    LogRecord,
    Severity,
    decode,
    format_routing_key,
    parse_routing_key,
    validate_facility,
)

WORDS = ["emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"]
WIRE_KEYS = ["id", "ts", "facility", "severity", "host", "app", "pid", "message", "fields", "v"]
TS = datetime(2024, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)


def make(**kw: Any) -> LogRecord:
    """A valid record with the given fields overridden."""
    base: dict[str, Any] = {"facility": "kern", "severity": "critical", "message": "disk failed"}
    return LogRecord(**(base | kw))


# --- Severity -------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "word"), list(enumerate(WORDS)))
def test_severity_codes_follow_rfc5424_order(code: int, word: str) -> None:
    """Each severity's integer value is its RFC 5424 code."""
    assert Severity[word.upper()] == code


@pytest.mark.parametrize("word", WORDS)
def test_severity_parses_canonical_words(word: str) -> None:
    """Every canonical word parses to the member of that name."""
    assert Severity.parse(word) is Severity[word.upper()]


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("emerg", Severity.EMERGENCY),
        ("panic", Severity.EMERGENCY),
        ("crit", Severity.CRITICAL),
        ("err", Severity.ERROR),
        ("warn", Severity.WARNING),
    ],
)
def test_severity_parses_aliases(alias: str, expected: Severity) -> None:
    """The syslog aliases parse to their canonical severity."""
    assert Severity.parse(alias) is expected


@pytest.mark.parametrize("text", ["CRITICAL", "Crit", "wArN", "INFO"])
def test_severity_parse_is_case_insensitive(text: str) -> None:
    """Words and aliases parse whatever their case."""
    assert Severity.parse(text) is Severity.parse(text.lower())


@pytest.mark.parametrize("code", range(8))
def test_severity_parses_integer_codes_and_digit_strings(code: int) -> None:
    """Codes 0-7 parse as integers and as digit strings."""
    assert Severity.parse(code) is Severity(code)
    assert Severity.parse(str(code)) is Severity(code)


def test_severity_parse_returns_a_severity_unchanged() -> None:
    """A Severity passed to parse comes back as is."""
    assert Severity.parse(Severity.NOTICE) is Severity.NOTICE


def test_severity_str_and_word_are_the_lowercase_word() -> None:
    """str() and .word give the canonical word, not the number."""
    assert str(Severity.CRITICAL) == "critical"
    assert Severity.CRITICAL.word == "critical"


def test_severity_formats_as_its_word_in_fstrings() -> None:
    """f-strings render the word, so keys built with them are canonical."""
    assert f"kern.{Severity.ERROR}" == "kern.error"


@pytest.mark.parametrize("bad", ["bogus", "", "critical ", "8", 8, -1, True, None, 2.0])
def test_severity_parse_rejects_anything_else(bad: Any) -> None:
    """Unknown words, out-of-range codes, bools and other types raise SeverityError."""
    with pytest.raises(SeverityError):
        Severity.parse(bad)


def test_severity_error_names_the_value_and_lists_valid_words() -> None:
    """The error message quotes the bad value and lists every canonical word."""
    with pytest.raises(SeverityError) as info:
        Severity.parse("loud")
    assert "'loud'" in str(info.value)
    assert all(word in str(info.value) for word in WORDS)


# --- Facility -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "kern", "my-app", "svc_2", "x" * 32, "a0-_z"])
def test_validate_facility_accepts_tokens(name: str) -> None:
    """Any token matching [a-z][a-z0-9_-]{0,31} is returned unchanged."""
    assert validate_facility(name) == name


def test_validate_facility_accepts_every_syslog_name() -> None:
    """All syslog facility names, local0..local7 included, are valid."""
    assert len(SYSLOG_FACILITIES) == 23
    assert {"kern", "authpriv", "local0", "local7"} <= set(SYSLOG_FACILITIES)
    assert [validate_facility(name) for name in SYSLOG_FACILITIES] == list(SYSLOG_FACILITIES)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("Kern", "uppercase"),
        ("kern.sub", "'.'"),
        ("0kern", "start with a lowercase letter"),
        ("_kern", "start with a lowercase letter"),
        ("my app", "' '"),
        ("kérn", "'é'"),
        ("x" * 33, "33 characters"),
    ],
)
def test_validate_facility_names_the_broken_rule(bad: str, reason: str) -> None:
    """Each kind of bad facility raises FacilityError saying what is wrong and the rule."""
    with pytest.raises(FacilityError) as info:
        validate_facility(bad)
    assert reason in str(info.value)
    assert "[a-z][a-z0-9_-]{0,31}" in str(info.value)


def test_validate_facility_shows_length_not_whole_long_value() -> None:
    """A 300-character facility is reported by its length, its text cut short."""
    with pytest.raises(FacilityError) as info:
        validate_facility("k" * 300)
    message = str(info.value)
    assert "300" in message
    assert "k" * 41 not in message
    assert "..." in message


# --- Routing keys ---------------------------------------------------------------------


def test_parse_routing_key_splits_facility_and_canonical_severity() -> None:
    """'kern.crit' gives the facility and the parsed severity."""
    assert parse_routing_key("kern.crit") == ("kern", Severity.CRITICAL)


@pytest.mark.parametrize("key", ["kern..critical", "kern", "", ".critical", "kern.bogus", "a.b.c"])
def test_parse_routing_key_rejects_bad_keys_naming_key_and_shape(key: str) -> None:
    """A key that is not <facility>.<severity> raises RoutingKeyError naming it and the shape."""
    with pytest.raises(RoutingKeyError) as info:
        parse_routing_key(key)
    assert repr(key) in str(info.value)
    assert "<facility>.<severity>" in str(info.value)


def test_parse_routing_key_error_includes_the_inner_reason() -> None:
    """A bad severity word inside a key is explained in the key's error."""
    with pytest.raises(RoutingKeyError, match="unknown severity 'bogus'"):
        parse_routing_key("kern.bogus")


def test_format_routing_key_uses_the_canonical_word() -> None:
    """Aliases and codes become the canonical word in the key."""
    assert format_routing_key("kern", "crit") == "kern.critical"
    assert format_routing_key("mail", 4) == "mail.warning"


def test_format_routing_key_rejects_a_bad_facility() -> None:
    """A facility that would break the key shape raises FacilityError."""
    with pytest.raises(FacilityError):
        format_routing_key("a.b", "info")


# --- LogRecord ------------------------------------------------------------------------


def test_record_defaults() -> None:
    """id, ts, host, app, pid, fields and v get their documented defaults."""
    before = datetime.now(UTC)
    record = LogRecord(facility="kern", severity="info", message="hi")
    assert len(record.id) == 32
    assert set(record.id) <= set(string.hexdigits)
    assert record.ts.tzinfo is UTC
    assert before <= record.ts <= datetime.now(UTC)
    assert record.host == socket.gethostname()
    assert (record.app, record.pid, record.fields, record.v) == ("logbus", os.getpid(), {}, 1)


def test_record_ids_are_unique() -> None:
    """Two records built alike get different ids."""
    assert make().id != make().id


def test_record_takes_naive_ts_as_utc() -> None:
    """A naive datetime is read as UTC, not local time."""
    record = make(ts=datetime(2024, 1, 2, 3, 4, 5))
    assert record.ts == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert record.ts.tzinfo is UTC


def test_record_converts_aware_ts_to_utc() -> None:
    """An aware datetime in another zone is converted to the same instant in UTC."""
    record = make(ts=datetime(2024, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2))))
    assert (record.ts.hour, record.ts.tzinfo) == (3, UTC)


@pytest.mark.parametrize("given_severity", ["crit", "CRITICAL", 2, "2", Severity.CRITICAL])
def test_record_severity_accepts_words_aliases_and_codes(given_severity: Any) -> None:
    """The severity field accepts whatever Severity.parse does."""
    assert make(severity=given_severity).severity is Severity.CRITICAL


def test_record_is_frozen() -> None:
    """Assigning to a field of a built record fails and leaves it unchanged."""
    record = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.message = "changed"  # type: ignore[misc]
    assert record.message == "disk failed"


@pytest.mark.parametrize(
    ("kw", "error", "names"),
    [
        ({"facility": "Kern"}, FacilityError, "facility"),
        ({"severity": "loud"}, SeverityError, "severity"),
        ({"message": 3}, RecordError, "message"),
        ({"pid": "12"}, RecordError, "pid"),
        ({"id": ""}, RecordError, "id"),
        ({"fields": {"a": {1, 2}}}, RecordError, "fields"),
        ({"fields": {"a": [float("nan")]}}, RecordError, "fields"),
        ({"fields": {"a": {1: "x"}}}, RecordError, "fields"),
        ({"colour": "red"}, RecordError, "colour"),
    ],
)
def test_record_bad_construction_raises_record_error_naming_the_field(
    kw: dict[str, Any], error: type[RecordError], names: str
) -> None:
    """Invalid fields raise the RecordError family on one line."""
    with pytest.raises(error) as info:
        make(**kw)
    assert names in str(info.value)
    assert "\n" not in str(info.value)


def test_record_missing_message_is_named() -> None:
    """Leaving out a required field says which one."""
    with pytest.raises(RecordError, match="'message' is required"):
        LogRecord(facility="kern", severity="info")


def test_record_replace_validates_the_copy() -> None:
    """replace() returns a changed copy checked as a new record is; the original stays."""
    record = make()
    copy = record.replace(message="other", severity="crit")
    assert (copy.message, copy.severity, copy.id) == ("other", Severity.CRITICAL, record.id)
    assert record.message == "disk failed"
    with pytest.raises(FacilityError):
        record.replace(facility="Bad")


def test_record_to_dict_is_what_the_wire_carries() -> None:
    """to_dict() is the JSON data of to_bytes(), keys in FIELDS order."""
    record = make(fields={"n": [1, 2.5]})
    assert list(record.to_dict()) == list(logbus.record.FIELDS) == WIRE_KEYS
    assert record.to_dict() == json.loads(record.to_bytes())


def test_records_hash_and_compare_by_value() -> None:
    """Equal records are equal and hash alike (fields left out of the hash), and repr
    names every field."""
    record = make(fields={"a": 1})
    twin = LogRecord(**{name: getattr(record, name) for name in logbus.record.FIELDS})
    assert twin == record
    assert hash(twin) == hash(record)
    assert twin != record.replace(message="x")
    assert repr(record).startswith(f"LogRecord(id={record.id!r}, ts=datetime.datetime(")
    assert "fields={'a': 1}, v=1, key=None)" in repr(record)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02t03:04:05.1234567z", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
        ("2024-01-02 05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
        (1700000000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1700000000123, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
        ("1700000000", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (b"2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
    ],
)
def test_record_reads_ts_in_its_common_forms(ts: Any, expected: datetime) -> None:
    """ts may be RFC 3339 text and its relatives, a date alone, or a unix time."""
    assert make(ts=ts).ts == expected


@pytest.mark.parametrize("ts", ["yesterday", "2024-13-01T00:00:00Z", True, float("inf"), [1]])
def test_record_rejects_what_is_no_time(ts: Any) -> None:
    """Anything else is a RecordError naming ts."""
    with pytest.raises(RecordError, match="'ts'"):
        make(ts=ts)


def test_record_lists_every_problem_count() -> None:
    """Several problems: the first is named, the rest counted."""
    with pytest.raises(RecordError, match=r"'pid'.*\(and 2 more problems\)"):
        make(pid="1", v=0, colour="red")


def test_record_fields_tuples_become_lists() -> None:
    """Tuples in fields are stored as lists, so the record equals its decoded copy."""
    record = make(fields={"pair": (1, (2, 3))})
    assert record.fields == {"pair": [1, [2, 3]]}
    assert decode(record.to_bytes()) == record


def test_from_key_builds_a_record_from_a_routing_key() -> None:
    """from_key reads facility and severity from the key and passes other fields on."""
    record = LogRecord.from_key("kern.crit", "disk failed", app="smartd")
    assert (record.facility, record.severity, record.app) == ("kern", Severity.CRITICAL, "smartd")


def test_from_key_rejects_a_bad_key() -> None:
    """A malformed key raises RoutingKeyError before any record is built."""
    with pytest.raises(RoutingKeyError):
        LogRecord.from_key("kern..critical", "x")


def test_record_routing_key_is_canonical() -> None:
    """The routing_key property uses the canonical severity word."""
    assert make(severity="warn", facility="local3").routing_key == "local3.warning"


# --- Wire: encoding -------------------------------------------------------------------


def test_to_bytes_is_compact_json_with_the_wire_keys_in_order() -> None:
    """The body is compact UTF-8 JSON with exactly the wire keys, in order."""
    body = make(message="é", fields={"n": 1}).to_bytes()
    assert b" " not in body.replace(b"disk failed", b"")
    assert list(json.loads(body)) == WIRE_KEYS
    assert "é".encode() in body


def test_to_bytes_writes_ts_as_rfc3339_utc_with_microseconds_and_z() -> None:
    """ts is written with six fractional digits and a Z suffix, even when they are zero."""
    assert json.loads(make(ts=TS).to_bytes())["ts"] == "2024-05-17T08:30:15.123456Z"
    assert json.loads(make(ts=TS.replace(microsecond=0)).to_bytes())["ts"].endswith(".000000Z")


def test_to_bytes_writes_severity_as_its_word() -> None:
    """The severity goes on the wire as the canonical word."""
    assert json.loads(make(severity=3).to_bytes())["severity"] == "error"


def test_to_bytes_carries_lone_surrogates_losslessly() -> None:
    """Text that is not valid UTF-8 still encodes, and decodes back equal."""
    record = make(message="a\ud800b")
    body = record.to_bytes()
    assert b"\\ud800" in body
    assert decode(body) == record


def test_decode_of_to_bytes_gives_an_equal_record() -> None:
    """A record survives to_bytes/decode unchanged."""
    record = make(ts=TS, pid=None, fields={"a": [1, 2.5, None, True], "b": {"c": "d"}})
    assert decode(record.to_bytes(), record.to_properties(), record.routing_key) == record.replace(
        key=record.routing_key
    )


def test_to_properties_are_persistent_json_with_ids() -> None:
    """Properties carry content type, persistence, message id, timestamp and app id."""
    record = make(ts=TS)
    props = record.to_properties()
    assert props.content_type == "application/json"
    assert props.delivery_mode == PERSISTENT
    assert props.message_id == record.id
    assert props.timestamp == int(TS.timestamp())
    assert props.app_id == "logbus"


def test_to_properties_headers_allow_headers_exchange_filtering() -> None:
    """Headers hold facility, severity word, host and app."""
    props = make(host="web1", app="nginx").to_properties()
    assert dict(props.headers) == {
        "facility": "kern",
        "severity": "critical",
        "host": "web1",
        "app": "nginx",
    }


# --- Wire: lenient decoding -----------------------------------------------------------


def test_decode_plain_text_takes_facility_and_severity_from_the_key() -> None:
    """A plain-text body becomes the message; a key of the right shape gives the rest."""
    record = decode(b"Hello World!", routing_key="mail.err")
    assert (record.message, record.facility, record.severity) == (
        "Hello World!",
        "mail",
        Severity.ERROR,
    )
    assert record.pid is None


def test_decode_plain_text_without_key_shape_uses_defaults() -> None:
    """With no usable key or headers, plain text gets facility user and severity info."""
    record = decode(b"Hello", routing_key="hello")
    assert (record.facility, record.severity) == ("user", Severity.INFO)


def test_decode_plain_text_falls_back_to_headers() -> None:
    """When the key says nothing, valid facility/severity/host/app headers are used."""
    props = Properties(
        headers={"facility": "cron", "severity": "emerg", "host": "db1", "app": "backup"}
    )
    record = decode(b"x", props, routing_key="task_queue")
    assert (record.facility, record.severity) == ("cron", Severity.EMERGENCY)
    assert (record.host, record.app) == ("db1", "backup")


def test_decode_severity_word_key_wins_over_the_severity_header() -> None:
    """A key that is one severity word gives the severity; the facility header still counts."""
    props = Properties(headers={"facility": "cron", "severity": "emerg"})
    record = decode(b"x", props, routing_key="critical")
    assert (record.facility, record.severity) == ("cron", Severity.CRITICAL)


def test_decode_plain_text_uses_message_id_timestamp_and_app_id() -> None:
    """message_id becomes id, timestamp becomes ts, app_id becomes app."""
    props = Properties(message_id="m-1", timestamp=1_700_000_000, app_id="tutorial")
    record = decode(b"x", props)
    assert record.id == "m-1"
    assert record.ts == datetime.fromtimestamp(1_700_000_000, UTC)
    assert record.app == "tutorial"


def test_decode_plain_text_without_properties_generates_id_and_uses_arrival_time() -> None:
    """Without message_id or timestamp, the id is new and ts is the time of decoding."""
    before = datetime.now(UTC)
    record = decode(b"x")
    assert len(record.id) == 32
    assert before <= record.ts <= datetime.now(UTC)


def test_decode_plain_text_drops_trailing_line_breaks_only() -> None:
    """Trailing newlines (as echo adds) are removed; other whitespace is kept."""
    assert decode(b"  indented\r\n").message == "  indented"


def test_decode_bracketed_log_line_is_plain_text() -> None:
    """A line starting with '[' that is not JSON is text, not an error."""
    assert decode(b"[INFO] started").message == "[INFO] started"


def test_decode_json_keeps_unknown_keys_under_fields() -> None:
    """Unknown top-level keys end up in fields alongside the existing ones."""
    record = decode(b'{"message":"x","user":"bob","fields":{"a":1}}')
    assert record.fields == {"user": "bob", "a": 1}


def test_decode_json_existing_fields_win_over_unknown_keys() -> None:
    """When a key is both top-level and in fields, the value in fields is kept."""
    record = decode(b'{"message":"x","a":"top","fields":{"a":"inner"}}')
    assert record.fields == {"a": "inner"}


def test_decode_json_fills_missing_values_from_key_and_properties() -> None:
    """A minimal JSON record takes facility, severity, id and ts from the delivery."""
    props = Properties(message_id="m-2", timestamp=1_700_000_000)
    record = decode(b'{"message":"x"}', props, routing_key="auth.warn")
    assert (record.facility, record.severity, record.id) == ("auth", Severity.WARNING, "m-2")
    assert record.ts == datetime.fromtimestamp(1_700_000_000, UTC)


def test_decode_json_accepts_severity_aliases_and_codes() -> None:
    """A JSON record's severity may be an alias or a code."""
    assert decode(b'{"message":"x","severity":"crit"}').severity is Severity.CRITICAL
    assert decode(b'{"message":"x","severity":7}').severity is Severity.DEBUG


def test_decode_out_of_range_timestamp_falls_back_to_arrival_time() -> None:
    """A timestamp property no datetime can hold is ignored rather than crashing."""
    record = decode(b"x", Properties(timestamp=10**20))
    assert abs(record.ts - datetime.now(UTC)) < timedelta(minutes=1)


# --- Properties -----------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
FACILITIES = st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)
KEY_WORDS = st.sampled_from([*WIRE_KEYS, "extra", "crit", "kern", "", "0", "7"]) | st.text(
    max_size=8
)
JSON_OBJECTS = st.dictionaries(KEY_WORDS, JSON_VALUES, max_size=6).map(
    lambda obj: json.dumps(obj).encode()
)
PROPERTIES = st.builds(
    Properties,
    message_id=st.none() | st.text(max_size=10),
    timestamp=st.none() | st.integers(min_value=-(2**70), max_value=2**70),
    app_id=st.none() | st.text(max_size=10),
    headers=st.dictionaries(
        st.sampled_from(["facility", "severity", "host", "app", "x"]),
        st.text(max_size=10) | st.integers() | st.binary(max_size=5),
        max_size=4,
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200) | JSON_OBJECTS | st.text(max_size=50).map(str.encode),
    properties=st.none() | PROPERTIES,
    routing_key=st.text(max_size=20) | st.sampled_from(["kern.crit", "a.b", "user.7", "x..y"]),
)
def test_decode_of_any_bytes_returns_a_record_keeping_the_key(
    body: bytes, properties: Properties | None, routing_key: str
) -> None:
    """Whatever arrives, decode builds a LogRecord, and it carries the routing key."""
    record = decode(body, properties, routing_key)
    assert isinstance(record, LogRecord)
    assert record.key == routing_key


@settings(max_examples=150, deadline=None)
@given(
    facility=FACILITIES,
    severity=st.sampled_from(Severity),
    message=st.text(),
    fields=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4),
    ts=st.datetimes(timezones=st.just(UTC)),
    pid=st.none() | st.integers(min_value=0, max_value=2**31),
    host=st.text(max_size=20),
)
def test_round_trip_of_valid_records_is_lossless(
    facility: str,
    severity: Severity,
    message: str,
    fields: dict[str, Any],
    ts: datetime,
    pid: int | None,
    host: str,
) -> None:
    """decode(record.to_bytes()) equals the record for any valid record."""
    record = LogRecord(
        facility=facility,
        severity=severity,
        message=message,
        fields=fields,
        ts=ts,
        pid=pid,
        host=host,
    )
    assert decode(record.to_bytes(), record.to_properties(), record.routing_key) == record.replace(
        key=record.routing_key
    )
    assert decode(record.to_bytes()) == record


@settings(max_examples=200, deadline=None)
@given(facility=FACILITIES, severity=st.sampled_from(Severity))
def test_parse_routing_key_inverts_format_routing_key(facility: str, severity: Severity) -> None:
    """Formatting a key and parsing it back gives the same facility and severity."""
    assert parse_routing_key(format_routing_key(facility, severity)) == (facility, severity)


@settings(max_examples=300, deadline=None)
@given(key=st.text(max_size=40))
def test_parse_routing_key_of_any_text_returns_or_raises_routing_key_error(key: str) -> None:
    """Any text either parses to a valid pair or raises RoutingKeyError, nothing else."""
    try:
        facility, severity = parse_routing_key(key)
    except RoutingKeyError:
        return
    assert validate_facility(facility) == facility
    assert isinstance(severity, Severity)


def test_all_lists_only_existing_public_names() -> None:
    """Every name in __all__ exists and is public."""
    for name in logbus.record.__all__:
        assert not name.startswith("_")
        assert hasattr(logbus.record, name)


def test_new_ids_are_random_uuid4_hex() -> None:
    """An id is 32 hex digits of a version-4, RFC 4122 UUID, different each time."""
    import uuid

    ids = {logbus.record.new_id() for _ in range(100)}
    assert len(ids) == 100
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


# -- the trusted path of decode (validation skipped for values known to pass) -------

_ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.sampled_from(["", "x", "info", "INFO", "crit", "7", "kern", "Kern", "2024-01-02"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_RECORD_VALUES = {
    "id": st.one_of(st.just("abc"), _ANY_VALUE),
    "ts": st.one_of(
        st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()[:-6] + "Z"),
        st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat(timespec="microseconds")),
        st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))])),
        st.sampled_from(["2024-13-01T00:00:00.000000Z", "2024-02-30T00:00:00.000000Z"]),
        _ANY_VALUE,
    ),
    "facility": st.one_of(st.sampled_from(["kern", "local0", "x-y_1"]), _ANY_VALUE),
    "severity": st.one_of(st.sampled_from(list(Severity)), _ANY_VALUE),
    "host": st.one_of(st.just("web1"), _ANY_VALUE),
    "app": st.one_of(st.just("api"), _ANY_VALUE),
    "pid": st.one_of(st.integers(0, 2**40), _ANY_VALUE),
    "message": st.one_of(st.text(max_size=10), _ANY_VALUE),
    "fields": st.one_of(
        st.dictionaries(st.text(max_size=4), _ANY_VALUE, max_size=3),
        st.just({"n": float("inf")}),
        _ANY_VALUE,
    ),
    "v": st.one_of(st.integers(-1, 3), _ANY_VALUE),
    "other": _ANY_VALUE,
}


@settings(max_examples=1000, deadline=None)
@given(st.fixed_dictionaries({}, optional=_RECORD_VALUES))
def test_trusted_records_equal_validated_ones(data: dict[str, Any]) -> None:
    """Whenever decode's trusted path builds a record, validation builds an equal one."""
    trusted = logbus.record._trusted(dict(data))
    if trusted is None:
        return
    validated = LogRecord(**data)
    assert trusted == validated
    assert trusted.ts.tzinfo is validated.ts.tzinfo is UTC
    assert trusted.to_bytes() == validated.to_bytes()


def test_trusted_path_takes_a_record_as_logbus_publishes_it() -> None:
    """A record's own bytes decode through the trusted path, to an equal record."""
    record = LogRecord(facility="kern", severity="crit", message="m", fields={"a": [1, 2.5]})
    assert logbus.record._trusted(json.loads(record.to_bytes())) == record


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional=_RECORD_VALUES))
def test_decode_without_the_trusted_path_gives_the_same_result(data: dict[str, Any]) -> None:
    """decode returns the same record with the trusted path off."""
    body = json.dumps(data, default=str).encode()

    def outcome() -> Any:
        return decode(body, Properties(message_id="m1", timestamp=1), "kern.crit")

    fast = outcome()
    saved = logbus.record._trusted
    logbus.record._trusted = lambda _data: None
    try:
        slow = outcome()
    finally:
        logbus.record._trusted = saved
    # ids and timestamps filled in from "now" differ between two calls
    assert {**fast.to_dict(), "id": 0, "ts": 0} == {**slow.to_dict(), "id": 0, "ts": 0}
