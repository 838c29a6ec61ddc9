"""The properties a publish sends: pika's own bytes, with the per-shape parts encoded once."""

from __future__ import annotations

import pika
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.transports.amqp.pika_convert import encode_properties

_short = st.none() | st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)
_header_value = (
    st.text(max_size=10) | st.integers(-(2**40), 2**40) | st.booleans() | st.binary(max_size=5)
)
_names = st.text(min_size=1, max_size=8)
_properties = st.builds(
    pika.BasicProperties,
    content_type=_short,
    content_encoding=_short,
    headers=st.none()
    | st.dictionaries(_names, _header_value, max_size=4)
    | st.dictionaries(_names, st.text(max_size=8), max_size=4),
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    priority=st.none() | st.integers(0, 255),
    correlation_id=_short,
    reply_to=_short,
    expiration=st.none() | st.from_regex(r"\A[0-9]{1,8}\Z"),
    message_id=_short,
    timestamp=st.none() | st.integers(0, 2**64 - 1),
    type=_short,
    user_id=_short,
    app_id=_short,
    cluster_id=_short,
)


@settings(max_examples=500, deadline=None)
@given(_properties)
def test_the_bytes_are_pikas_own_cold_and_cached(props: pika.BasicProperties) -> None:
    expected = b"".join(pika.BasicProperties.encode(props))
    assert b"".join(encode_properties(props)) == expected
    assert b"".join(encode_properties(props)) == expected  # the shape is cached now


def test_headers_that_compare_equal_but_encode_differently_are_not_confused() -> None:
    one = pika.BasicProperties(headers={"a": 1}, message_id="m")
    true = pika.BasicProperties(headers={"a": True}, message_id="m")
    assert b"".join(encode_properties(one)) == b"".join(pika.BasicProperties.encode(one))
    assert b"".join(encode_properties(true)) == b"".join(pika.BasicProperties.encode(true))
    assert b"".join(encode_properties(one)) != b"".join(encode_properties(true))


def test_empty_headers_and_no_headers_keep_their_difference() -> None:
    for headers in ({}, None):
        props = pika.BasicProperties(headers=headers, timestamp=5)
        assert b"".join(encode_properties(props)) == b"".join(pika.BasicProperties.encode(props))
