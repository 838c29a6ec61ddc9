"""The properties a publish sends: pika's own bytes, with the per-shape parts encoded once."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.errors import InputError
from logbus.message import Message, Properties
from logbus.transports.amqp.pika_convert import to_pika

_short = st.none() | st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)
_header_value = (
    st.text(max_size=10) | st.integers(-(2**40), 2**40) | st.booleans() | st.binary(max_size=5)
)
_names = st.text(min_size=1, max_size=8)
_properties = st.builds(
    Properties,
    content_type=_short,
    content_encoding=_short,
    headers=st.dictionaries(_names, _header_value, max_size=4)
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
)


def _pikas_own(props: Properties) -> bytes:
    """What pika's BasicProperties encodes for the same values (empty headers as none)."""
    fields: dict[str, Any] = {
        name: getattr(props, name) for name in Properties.__dataclass_fields__
    }
    fields["headers"] = dict(props.headers) or None
    return b"".join(pika.BasicProperties(**fields).encode())


def _sent(props: Properties) -> bytes:
    return b"".join(to_pika(Message(b"body", props, "ex", "key")).encode())


@settings(max_examples=500, deadline=None)
@given(_properties)
def test_the_bytes_are_pikas_own_cold_and_cached(props: Properties) -> None:
    """Whatever the properties, the bytes sent are pika's, the first time and from the cache."""
    expected = _pikas_own(props)
    assert _sent(props) == expected
    assert _sent(props) == expected  # the shape is cached now


def test_headers_that_compare_equal_but_encode_differently_are_not_confused() -> None:
    """``1`` and ``True`` are equal in Python and different on the wire."""
    one = Properties(headers={"a": 1}, message_id="m")
    true = Properties(headers={"a": True}, message_id="m")
    assert _sent(one) == _pikas_own(one)
    assert _sent(true) == _pikas_own(true)
    assert _sent(one) != _sent(true)


def test_records_of_one_shape_differ_only_in_their_id_and_time() -> None:
    """The cached shape carries each message's own message_id and timestamp."""
    first = Properties(content_type="application/json", message_id="a" * 32, timestamp=1)
    second = Properties(content_type="application/json", message_id="b" * 32, timestamp=2)
    assert _sent(first) == _pikas_own(first)
    assert _sent(second) == _pikas_own(second)


@pytest.mark.parametrize(
    ("props", "what"),
    [
        (Properties(headers={"a": 1.5}), "float"),
        (Properties(message_id="x" * 256), "message_id"),
        (Properties(content_type="x" * 256), "content_type"),
        (Properties(timestamp=-1), "timestamp"),
        (Properties(timestamp=1.5), "timestamp"),  # type: ignore[arg-type]
        (Properties(priority=256), "priority"),
        (Properties(delivery_mode=3), "delivery_mode"),
        (Properties(expiration="1s"), "expiration"),
    ],
)
def test_what_amqp_cannot_carry_is_refused_every_time(props: Properties, what: str) -> None:
    """A refusal is not cached away: the same bad properties are refused again."""
    for _ in range(2):
        with pytest.raises(InputError, match=what):
            to_pika(Message(b"", props, "ex", "key"))


def test_a_good_shape_cached_does_not_let_a_bad_id_through() -> None:
    """The per-message fields are checked on every publish, the shape cached or not."""
    to_pika(Message(b"", Properties(app_id="shape", message_id="ok"), "ex", "key"))
    with pytest.raises(InputError, match="message_id"):
        to_pika(Message(b"", Properties(app_id="shape", message_id="y" * 300), "ex", "key"))


def test_unhashable_header_values_are_encoded_whole() -> None:
    """A list or a table among the headers (no shape to key on) encodes as pika does."""
    props = Properties(headers={"a": [1, "x"], "b": {"c": "d"}}, message_id="m", timestamp=5)
    for _ in range(2):
        assert to_pika(Message(b"", props, "x", "k")).data == _pikas_own(props)
