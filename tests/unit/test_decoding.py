"""Every body is a record, losslessly, and the routing key travels with it (issue 13)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.errors import DecodeError
from logbus.message import Properties
from logbus.record import BODY_BASE64, LogRecord, Severity, decode

#: The plain bodies of issue 13, "Found 1", and the message each must give.
FOUND_1 = [
    (b"{worker-3} crashed", "{worker-3} crashed"),
    (b"42", "42"),
    (b"true", "true"),
    (b'"a quoted string"', '"a quoted string"'),
    (b"[1, 2]", "[1, 2]"),
    (b"caf\xe9", "caf\\xe9"),
    (b'{"msg": "pino says hi", "level": 30}', "pino says hi"),
]


@pytest.mark.parametrize(("body", "message"), FOUND_1)
def test_found_1_bodies_are_records_with_their_text(body: bytes, message: str) -> None:
    """Each plain body of issue 13 decodes to a record whose message is its text."""
    record = decode(body, Properties(), "kern.critical")
    assert record.message == message
    assert (record.facility, record.key) == ("kern", "kern.critical")


def test_latin1_body_keeps_its_exact_bytes_in_base64() -> None:
    """Bytes that are not UTF-8 are kept exactly under fields['body_base64']."""
    record = decode(b"caf\xe9\r\n", Properties(), "x")
    assert base64.b64decode(record.fields[BODY_BASE64]) == b"caf\xe9\r\n"
    assert record.message == "caf\\xe9"


def test_pino_object_reads_its_level_and_keeps_the_rest() -> None:
    """A pino line's numeric level is its severity; unknown keys stay under fields."""
    record = decode(b'{"msg":"m","level":50,"reqId":7}', Properties(), "app.info")
    assert (record.message, record.severity, record.fields) == ("m", Severity.ERROR, {"reqId": 7})


def test_object_without_a_message_key_has_the_body_text_as_message() -> None:
    """A JSON object with no message key: the message is the text, the keys under fields."""
    record = decode(b'{"user": "bob", "n": 1}\n')
    assert record.message == '{"user": "bob", "n": 1}'
    assert record.fields == {"user": "bob", "n": 1}


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "x", "pid": "abc"}',
        b'{"message": "x", "ts": "yesterday", "severity": "loud"}',
        b'{"message": "x", "fields": [1], "extra": 1}',
    ],
)
def test_object_whose_values_do_not_fit_keeps_them_under_fields(body: bytes) -> None:
    """Values that are not a record's are kept under fields; the message is still read."""
    record = decode(body)
    assert record.message == "x"
    data = json.loads(body)
    for name, value in data.items():
        if name != "message":
            assert record.fields.get(name, record.fields.get("fields")) in (value, {name: value})


@pytest.mark.parametrize(
    "body", [b'{"message": "x", "n": 1e400}', b'{"message": "x", "n": NaN}', b'{"message": "x"']
)
def test_object_that_cannot_be_json_data_is_text(body: bytes) -> None:
    """Infinite numbers, NaN or broken JSON: the whole body is the message."""
    assert decode(body).message == body.decode()


def test_deeply_nested_json_is_text() -> None:
    """JSON nested deeper than a record's fields may go is the message, whole."""
    body = b'{"message": "x", "a": ' + b"[" * 300 + b"]" * 300 + b"}"
    assert decode(body).message == body.decode()


@pytest.mark.parametrize(("body", "message"), [(b"", ""), (b" \t\r\n", " \t"), (b"\n", "")])
def test_empty_and_blank_bodies_are_records(body: bytes, message: str) -> None:
    """An empty or blank body is a record with an empty (or blank) message, not an error."""
    assert decode(body).message == message


def test_decode_error_only_for_what_is_not_bytes() -> None:
    """DecodeError is left for a caller's bug: a body that is not bytes."""
    with pytest.raises(DecodeError, match="not bytes"):
        decode("text")  # type: ignore[arg-type]


# -- the routing key (issue 13, "Found 2") ---------------------------------------------


@pytest.mark.parametrize(
    ("key", "facility", "severity"),
    [
        ("kern.critical", "kern", Severity.CRITICAL),
        ("Kern.Critical", "kern", Severity.CRITICAL),
        ("MAIL.WARN", "mail", Severity.WARNING),
        ("error", "user", Severity.ERROR),
        ("warning", "user", Severity.WARNING),
        ("crit", "user", Severity.CRITICAL),
        ("kern.error.extra", "user", Severity.INFO),
        ("foo", "user", Severity.INFO),
        ("kern.loud", "user", Severity.INFO),
        ("3", "user", Severity.INFO),
        ("", "user", Severity.INFO),
    ],
)
def test_routing_key_gives_what_it_says_and_is_kept(
    key: str, facility: str, severity: Severity
) -> None:
    """facility.severity in any case gives both, a severity word the severity, else defaults."""
    record = decode(b"hello", Properties(), key)
    assert (record.facility, record.severity, record.key) == (facility, severity, key)


def test_body_values_win_over_the_key() -> None:
    """A body that names its severity keeps it, whatever the key says; the key is kept."""
    record = decode(b'{"message": "m", "severity": "debug"}', Properties(), "error")
    assert (record.severity, record.key) == (Severity.DEBUG, "error")


def test_records_of_emitters_have_no_key_and_an_unchanged_body() -> None:
    """A record built by logbus has key None and its body has exactly the ten wire keys."""
    record = LogRecord(facility="kern", severity="crit", message="m")
    assert record.key is None
    assert "key" not in json.loads(record.to_bytes())
    assert "key" not in record.to_dict()


def test_a_record_with_a_key_writes_it_last() -> None:
    """A decoded record carries its key in its body and dict, after v."""
    record = decode(b"x", Properties(), "error")
    assert list(json.loads(record.to_bytes()))[-2:] == ["v", "key"]
    assert record.to_dict()["key"] == "error"


def test_body_key_is_read_only_without_a_delivery_key() -> None:
    """Read back from a file (no routing key) the body's key counts; a delivery's key wins."""
    body = decode(b"x", Properties(), "error").to_bytes()
    assert decode(body).key == "error"
    assert decode(body, None, "kern.info").key == "kern.info"


# -- properties: any bytes, any key, any properties -------------------------------------

KEYS = st.text(max_size=20) | st.sampled_from(["kern.crit", "Kern.Critical", "error", "a.b.c"])
HEADERS = st.dictionaries(
    st.sampled_from(["facility", "severity", "host", "app", "x"]),
    st.text(max_size=10) | st.integers() | st.binary(max_size=5) | st.none(),
    max_size=4,
)
ANY_PROPERTIES = st.builds(
    Properties,
    message_id=st.none() | st.text(max_size=10) | st.integers(),
    timestamp=st.none() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(max_size=3),
    app_id=st.none() | st.text(max_size=10),
    headers=HEADERS,
)
# Properties that say id and ts, so that nothing is generated and decoding is deterministic.
FIXED_PROPERTIES = st.builds(
    Properties,
    message_id=st.text(min_size=1, max_size=10),
    timestamp=st.integers(min_value=0, max_value=2**33),
    app_id=st.none() | st.text(max_size=10),
    headers=HEADERS,
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
SHAPE_KEYS = st.sampled_from(
    ["message", "msg", "level", "severity", "time", "ts", "@timestamp", "host", "pid", "fields",
     "short_message", "levelname", "name", "key", "id", "v", "log.level", "service"]
)  # fmt: skip
OBJECTS = st.dictionaries(SHAPE_KEYS | st.text(max_size=6), JSON, max_size=6).map(
    lambda obj: json.dumps(obj).encode()
)
BODIES = st.binary(max_size=200) | OBJECTS | st.text(max_size=60).map(str.encode)


def _same_but_generated(first: LogRecord, again: LogRecord) -> dict[str, Any]:
    return {**first.to_dict(), "id": 0, "ts": 0} == {**again.to_dict(), "id": 0, "ts": 0}


@settings(max_examples=500, deadline=None)
@given(body=BODIES, properties=st.none() | ANY_PROPERTIES, key=st.none() | KEYS)
def test_any_bytes_decode_to_a_record(
    body: bytes, properties: Properties | None, key: str | None
) -> None:
    """Arbitrary bytes, keys and properties always give a record; publishing the same body
    again gives the same record, but for an id or ts generated on arrival."""
    first = decode(body, properties, key)
    assert isinstance(first, LogRecord)
    assert _same_but_generated(first, decode(body, properties, key))


@settings(max_examples=300, deadline=None)
@given(body=BODIES, properties=FIXED_PROPERTIES, key=KEYS)
def test_republished_body_decodes_to_the_same_record(
    body: bytes, properties: Properties, key: str
) -> None:
    """With id and ts given by the properties, the same delivery decodes to an equal record."""
    assert decode(body, properties, key) == decode(body, properties, key)


@settings(max_examples=300, deadline=None)
@given(body=BODIES, properties=st.none() | ANY_PROPERTIES, key=st.none() | KEYS)
def test_decoded_record_survives_its_own_encoding(
    body: bytes, properties: Properties | None, key: str | None
) -> None:
    """What decode built, written with to_bytes and read back (as a jsonl file is), is equal."""
    record = decode(body, properties, key)
    assert decode(record.to_bytes()) == record


@settings(max_examples=200, deadline=None)
@given(body=st.binary(min_size=1, max_size=100))
def test_bytes_that_are_not_utf8_are_kept_exactly(body: bytes) -> None:
    """Whenever a body is not UTF-8, its exact bytes come back from body_base64."""
    try:
        body.decode("utf-8-sig")
    except UnicodeDecodeError:
        record = decode(body)
        assert base64.b64decode(record.fields[BODY_BASE64]) == body


def test_ts_of_a_shape_is_read() -> None:
    """An ECS @timestamp is the record's ts (a sanity check of the shape path)."""
    record = decode(b'{"@timestamp": "2024-05-17T08:30:15Z", "message": "m"}')
    assert record.ts == datetime(2024, 5, 17, 8, 30, 15, tzinfo=UTC)
