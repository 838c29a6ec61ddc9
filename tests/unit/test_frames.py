"""logbus's framing for the process broker: lossless round trips, garbage refused cleanly.

Batch frames (many publishes or deliveries to a frame) are held to the same rules."""

from __future__ import annotations

import contextlib
import math
import struct
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logbus.broker.queues import Delivered
from logbus.errors import DecodeError, InputError
from logbus.message import Message, Properties
from logbus.wire.batch import (
    decode_deliveries,
    decode_publishes,
    encode_deliveries,
    encode_publishes,
)
from logbus.wire.frames import (
    Frame,
    decode_many,
    encode,
    encode_many,
    message_args,
    message_from,
)

offsets = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60, 23 * 60)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.datetimes()
    | st.datetimes(timezones=offsets)
)
#: Keys, with the ones that look like the encoding's own tags well represented.
keys = st.text() | st.sampled_from(["$bytes", "$map", "$datetime", "$", "$x"])
#: Every value an AMQP field table can hold (tuples aside: they come back as lists).
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
tables = st.dictionaries(keys, values, max_size=6)
_STRING_ID = b'{"op":"x","id":"1","args":{}}'


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (True is not 1, Decimal is not float)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


@given(tables)
def test_any_table_survives_the_round_trip(table):
    """A table of AMQP field values decodes to an equal table with the same types."""
    assert same(_through_json(table), table)


@given(st.text(min_size=1), st.integers(0, 2**53), tables, st.binary())
def test_a_frame_survives_the_round_trip(op, ident, args, body):
    """op, id, args and body come back as they were sent."""
    (frame,) = decode_many(encode(Frame(op, ident, args, body)))
    assert (frame.op, frame.id, frame.body) == (op, ident, body)
    assert same(dict(frame.args), args)


@given(st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=64)), min_size=1, max_size=8))
def test_frames_packed_together_come_apart_in_order(items):
    """Several frames in one packet decode to the same frames, in order."""
    frames = [Frame(op or "x", i, {"n": i}, body) for i, (op, body) in enumerate(items)]
    assert decode_many(encode_many(frames)) == frames


@given(
    st.builds(
        Properties,
        content_type=st.none() | st.text(),
        delivery_mode=st.none() | st.sampled_from([1, 2]),
        priority=st.none() | st.integers(0, 9),
        message_id=st.none() | st.text(),
        timestamp=st.none() | st.integers(0, 2**40),
        expiration=st.none() | st.integers(0, 10**6).map(str),
        headers=tables,
    ),
    st.binary(),
    st.text(),
    st.text(),
)
def test_a_message_survives_the_round_trip(properties, body, exchange, key):
    """Body, exchange, routing key and every property come back equal."""
    sent = Message(body, properties, exchange, key)
    (frame,) = decode_many(encode(Frame("publish", 1, message_args(sent), body)))
    got = message_from(frame.args, frame.body)
    assert (got.body, got.exchange, got.routing_key) == (body, exchange, key)
    assert same(dict(got.properties.headers), dict(properties.headers))
    assert got.properties == properties


def test_x_death_with_its_aware_timestamp_comes_back_equal():
    """A dead letter's x-death list (table, datetime, list of keys) crosses intact."""
    death = {"count": 1, "time": datetime.now(UTC), "routing-keys": ["kern.critical"]}
    assert same(_through_json({"x-death": [death]}), {"x-death": [death]})


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinite_floats_cross_tagged(value):
    """Infinities, which JSON lacks, come back as the same float."""
    assert _through_json({"f": value}) == {"f": value}


def test_nan_crosses_tagged():
    """NaN, which JSON lacks, comes back as NaN."""
    assert math.isnan(_through_json({"f": math.nan})["f"])


def test_a_table_with_one_dollar_key_is_not_mistaken_for_a_tag():
    """{"$bytes": "x"} as data comes back as that table, not as bytes."""
    table = {"h": {"$bytes": "not base64!"}}
    assert _through_json(table) == table


def test_a_value_with_no_amqp_type_is_refused_on_encoding():
    """A set cannot cross; the error names its type."""
    with pytest.raises(InputError, match="set"):
        encode(Frame("publish", 1, {"headers": {"s": {1, 2}}}))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_decode_error(data):
    """Whatever bytes arrive, decoding yields frames or a DecodeError, nothing else."""
    try:
        frames = decode_many(data)
    except DecodeError:
        return
    assert all(isinstance(frame, Frame) for frame in frames)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_the_lengths_decode_or_raise_decode_error(junk):
    """A well-formed length prefix around junk still fails only with DecodeError."""
    data = struct.pack(">II", len(junk), 0) + junk
    with contextlib.suppress(DecodeError):
        decode_many(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x00", "stray"),
        (struct.pack(">II", 50, 0) + b"{}", "run past"),
        (struct.pack(">II", 2, 0) + b"[]", "not a JSON object"),
        (struct.pack(">II", 9, 0) + b"{not json", "not valid JSON"),
        (struct.pack(">II", 2, 0) + b"\xff\xfe", "not valid JSON"),
        (struct.pack(">II", len(_STRING_ID), 0) + _STRING_ID, "needs op"),
    ],
)
def test_malformed_packets_raise_decode_error_naming_the_problem(data, reason):
    """Each kind of malformed packet is a DecodeError that says what is wrong."""
    with pytest.raises(DecodeError, match=reason):
        decode_many(data)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (b'{"a":{"$bytes":"!!"}}', "bad \\$bytes"),
        (b'{"a":{"$datetime":"yesterday"}}', "bad \\$datetime"),
        (b'{"a":{"$decimal":"1.2.3"}}', "bad \\$decimal"),
        (b'{"a":{"$float":"1.5"}}', "unknown tag"),
        (b'{"a":{"$pickle":"gASVAAAA"}}', "unknown tag"),
        (b'{"a":{"$map":[1]}}', "\\$map"),
        (b'{"a":NaN}', "NaN"),
    ],
)
def test_bad_tags_raise_decode_error(args, reason):
    """A malformed or unknown tag is a DecodeError, never a crash or a guess."""
    header = b'{"op":"x","id":1,"args":' + args + b"}"
    with pytest.raises(DecodeError, match=reason):
        decode_many(struct.pack(">II", len(header), 0) + header)


def test_deeply_nested_json_raises_decode_error():
    """A header nested deeper than the parser allows is a DecodeError."""
    header = b'{"op":"x","id":1,"args":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(DecodeError):
        decode_many(struct.pack(">II", len(header), 0) + header)


def test_an_unknown_message_property_is_refused():
    """Properties must be AMQP's: an unknown name is a DecodeError."""
    with pytest.raises(DecodeError, match="colour"):
        message_from({"exchange": "", "routing_key": "k", "props": {"colour": "red"}}, b"")


def test_a_mistyped_message_property_is_refused():
    """delivery_mode must be an integer."""
    with pytest.raises(DecodeError, match="delivery_mode"):
        message_from({"exchange": "", "routing_key": "k", "props": {"delivery_mode": "2"}}, b"")


def _through_json(table: dict[str, Any]) -> Any:
    """The table as it comes out of a frame: encoded, serialised, parsed, decoded args."""
    (frame,) = decode_many(encode(Frame("t", 1, table)))
    return dict(frame.args)


# -- batches: many publishes or deliveries to a frame ------------------------------------

names = st.text(max_size=12)
messages = st.builds(
    Message,
    st.binary(max_size=64),
    st.builds(
        Properties,
        content_type=st.none() | st.sampled_from(["application/json", "text/plain"]),
        delivery_mode=st.none() | st.sampled_from([1, 2]),
        message_id=st.none() | st.text(max_size=8),
        headers=st.dictionaries(st.text(max_size=6), values, max_size=3),
    ),
    names,
    names,
)


def _batch_frame(data: bytes) -> Frame:
    (frame,) = decode_many(data)
    return frame


@given(st.lists(messages, max_size=20), st.booleans())
def test_publishes_batched_in_one_frame_come_back_equal_and_in_order(sent, mandatory):
    """Every message of a publish frame decodes to an equal message, in order."""
    frame = _batch_frame(encode_publishes(7, sent, mandatory=mandatory))
    assert (frame.op, frame.id, frame.args["mandatory"]) == ("publish", 7, mandatory)
    got = decode_publishes(frame.args, frame.body)
    assert len(got) == len(sent)
    for one, other in zip(got, sent, strict=True):
        assert (one.body, one.exchange, one.routing_key) == (
            other.body,
            other.exchange,
            other.routing_key,
        )
        assert one.properties == other.properties
        assert same(dict(one.properties.headers), dict(other.properties.headers))


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**64 - 1),
            st.booleans(),
            names,
            names,
            messages,
        ),
        max_size=20,
    )
)
def test_deliveries_batched_in_one_frame_come_back_equal_and_in_order(items):
    """Consumer id, tag, redelivered flag, consumer tag, queue and message all survive."""
    delivered = [
        (cid, Delivered(message, ctag, tag, redelivered, queue))
        for cid, tag, redelivered, ctag, queue, message in items
    ]
    frame = _batch_frame(encode_deliveries(delivered))
    got = decode_deliveries(frame.args, frame.body)
    assert [entry[:5] for entry in got] == [entry[:5] for entry in items]
    for (*_, message), (*_, sent) in zip(got, items, strict=True):
        assert message == sent


def test_messages_sharing_properties_carry_them_once():
    """Properties shared by a batch's messages cross once, in the header, not per message."""
    props = Properties(content_type="application/json", headers={"facility": "kern"})
    sent = [Message(b"%d" % i, props, "logbus.topic", "kern.critical") for i in range(50)]
    frame = _batch_frame(encode_publishes(1, sent, mandatory=True))
    assert len(frame.args["props"]) == 1
    assert frame.args["names"] == ["logbus.topic", "kern.critical"]


_ONE = struct.pack(">IIII", 0, 0, 0, 1) + b"x"
_PUBLISH_ARGS: dict[str, Any] = {"props": [{}], "names": ["", "q"], "mandatory": True}


@pytest.mark.parametrize(
    ("args", "body", "reason"),
    [
        ({**_PUBLISH_ARGS, "props": [{}, {"colour": "red"}]}, _ONE, "colour"),
        ({**_PUBLISH_ARGS, "props": {}}, _ONE, "'props' must be a list"),
        ({**_PUBLISH_ARGS, "names": ["", 1]}, _ONE, "every name must be a string"),
        (_PUBLISH_ARGS, struct.pack(">IIII", 1, 0, 0, 1) + b"x", "malformed publish record"),
        (_PUBLISH_ARGS, struct.pack(">IIII", 0, 0, 5, 1) + b"x", "malformed publish record"),
        (_PUBLISH_ARGS, struct.pack(">IIII", 0, 0, 1, 9) + b"x", "runs past"),
        (_PUBLISH_ARGS, _ONE + b"\x00\x00", "malformed publish record"),
    ],
)
def test_a_malformed_publish_frame_raises_decode_error_naming_the_problem(args, body, reason):
    """Bad indices, lengths and tables in a publish frame are DecodeErrors, never a crash."""
    with pytest.raises(DecodeError, match=reason):
        decode_publishes(args, body)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (struct.pack(">QIIIIIIBI", 1, 1, 0, 0, 1, 1, 1, 2, 0), "redelivered must be 0 or 1"),
        (struct.pack(">QIIIIIIBI", 1, 1, 0, 0, 1, 1, 7, 0, 0), "malformed delivery record"),
        (struct.pack(">QIIIIIIBI", 1, 1, 0, 0, 1, 1, 1, 0, 3) + b"x", "runs past"),
        (b"\x00" * 5, "malformed delivery record"),
    ],
)
def test_a_malformed_deliver_frame_raises_decode_error_naming_the_problem(record, reason):
    """Bad indices, flags and lengths in a deliver frame are DecodeErrors, never a crash."""
    with pytest.raises(DecodeError, match=reason):
        decode_deliveries({"props": [{}], "names": ["", "q"]}, record)


@given(st.binary(max_size=200))
def test_arbitrary_batch_bodies_decode_or_raise_decode_error(body):
    """Whatever bytes a batch frame's body holds, decoding yields messages or a DecodeError."""
    args = {"props": [{}], "names": ["", "q"]}
    for decode in (decode_publishes, decode_deliveries):
        with contextlib.suppress(DecodeError):
            decode(args, body)
