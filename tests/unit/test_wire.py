"""The light record encoder (logbus._wire) writes exactly what LogRecord writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from logbus._keys import SYSLOG_FACILITIES, Severity
from logbus._wire import WireRecord, new_id, plain_json
from logbus.record import LogRecord

# Plain JSON without floats: what the fast path lets through.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
TEXT = st.text(max_size=30)  # any code point, lone surrogates and controls included


@settings(max_examples=300, deadline=None)
@given(
    facility=st.sampled_from(SYSLOG_FACILITIES),
    severity=st.sampled_from(Severity),
    message=TEXT,
    host=TEXT,
    app=TEXT,
    pid=st.none() | st.integers(0, 2**40),
    fields=st.dictionaries(st.text(max_size=5), JSON, max_size=4),
    ts=st.datetimes(timezones=st.just(UTC)),
)
def test_body_and_properties_equal_log_records(**kw: Any) -> None:
    """Any record the fast path builds encodes to LogRecord's bytes and properties."""
    wire = WireRecord(**kw)
    record = LogRecord(**wire.values())
    assert wire.body() == record.to_bytes()
    assert wire.properties() == record.to_properties()
    assert wire.routing_key == record.routing_key


def test_defaults_are_log_records_defaults() -> None:
    """host, app, pid, fields and v default as LogRecord's do; id and ts are fresh."""
    wire = WireRecord("kern", Severity.INFO, "m")
    record = LogRecord(facility="kern", severity="info", message="m")
    assert (wire.host, wire.app, wire.pid, dict(wire.fields), wire.v) == (
        record.host,
        record.app,
        record.pid,
        record.fields,
        record.v,
    )
    assert wire.ts.tzinfo is UTC and abs((wire.ts - datetime.now(UTC)).total_seconds()) < 5


def test_new_ids_are_random_uuid4_hex() -> None:
    """An id is 32 hex digits of a version-4, RFC 4122 UUID, different each time."""
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)


def test_plain_json_refuses_floats_and_odd_types() -> None:
    """Floats (written differently by pydantic and json), tuples and big ints are not plain."""
    assert plain_json({"a": [1, "x", None, True, {"b": []}]})
    for value in ({"f": 1.5}, {"t": (1,)}, {"big": 2**63}, {1: "int key"}, {"s": {1, 2}}):
        assert not plain_json(value)
