"""The fast content-header encoder produces exactly pika's bytes."""

from __future__ import annotations

import datetime as dt

import pika
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.transports._properties import FastProperties

short = st.text(max_size=20)
FIELDS = {
    "content_type": short,
    "content_encoding": short,
    "delivery_mode": st.sampled_from([1, 2]),
    "priority": st.integers(0, 255),
    "correlation_id": short,
    "reply_to": short,
    "expiration": st.integers(0, 10**6).map(str),
    "message_id": short,
    "timestamp": st.integers(0, 2**40),
    "type": short,
    "user_id": short,
    "app_id": short,
    "cluster_id": short,
    "headers": st.one_of(
        st.dictionaries(short, short, max_size=5),
        st.dictionaries(short, st.one_of(st.integers(-(2**31), 2**31), st.booleans()), max_size=3),
    ),
}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional=FIELDS))
def test_encoding_is_byte_identical_to_pikas(fields):
    """Any mix of properties encodes to the same bytes as pika.BasicProperties."""
    assert b"".join(FastProperties(**fields).encode()) == b"".join(
        pika.BasicProperties(**fields).encode()
    )


def test_a_record_header_table_is_identical_when_cached():
    """The second encode of the same headers (from the cache) equals pika's."""
    fields = {
        "headers": {"facility": "kern", "severity": "critical", "host": "web1", "app": "x"},
        "timestamp": int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()),
        "message_id": "abc",
    }
    expected = b"".join(pika.BasicProperties(**fields).encode())
    assert b"".join(FastProperties(**fields).encode()) == expected
    assert b"".join(FastProperties(**fields).encode()) == expected


PAMQP_NAMES = {"type": "message_type"}


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            **{k: v for k, v in FIELDS.items() if k != "cluster_id"},
            "timestamp": st.integers(0, 2**34),  # datetime stops at year 9999
        },
    )
)
def test_pamqp_encoding_is_byte_identical_to_pamqps(fields):
    """Any mix of properties marshals to the same bytes as pamqp's Basic.Properties."""
    from pamqp.commands import Basic

    from logbus.transports._properties import FastPamqpProperties

    renamed = {PAMQP_NAMES.get(k, k): v for k, v in fields.items()}
    if "timestamp" in renamed:
        renamed["timestamp"] = dt.datetime.fromtimestamp(renamed["timestamp"], dt.UTC)
    assert FastPamqpProperties(**renamed).marshal() == Basic.Properties(**renamed).marshal()
