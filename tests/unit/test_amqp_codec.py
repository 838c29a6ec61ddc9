"""The one-shot publisher's frames (logbus.transports._amqp_codec) are pika's, byte for byte."""

from __future__ import annotations

from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame as pika_frame
from pika import spec

from logbus.message import Message, Properties
from logbus.transports import _amqp_codec as codec
from logbus.transports._oneshot import Outgoing, _declaration, _Item
from logbus.transports._pika_convert import to_pika

SHORT = st.text(max_size=12)
VALUE = st.recursive(
    st.one_of(
        SHORT, st.booleans(), st.integers(-(2**63), 2**63 - 1), st.none(), st.binary(max_size=4)
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SHORT, inner, max_size=3),
    max_leaves=6,
)


def pika_bytes(channel: int, method: Any) -> bytes:
    return pika_frame.Method(channel, method).marshal()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(SHORT, VALUE, max_size=5))
def test_tables_encode_as_pika_encodes_them(table: dict[str, Any]) -> None:
    """Strings, bytes, booleans, 32- and 64-bit ints, None, lists and tables: pika's bytes."""
    pieces: list[bytes] = []
    pika.data.encode_table(pieces, table)
    assert codec.encode_table(table) == b"".join(pieces)


def test_a_short_string_over_255_bytes_is_refused() -> None:
    """As pika does, a name or key over 255 bytes cannot be sent."""
    with pytest.raises(ValueError):
        codec.short_string("é" * 128)


@settings(max_examples=200, deadline=None)
@given(
    name=SHORT,
    kind=st.sampled_from(["topic", "fanout", "direct", "headers"]),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    arguments=st.dictionaries(SHORT, st.one_of(SHORT, st.integers(0, 10**6)), max_size=2),
    key=SHORT,
    other=SHORT,
)
def test_declarations_are_pikas_methods(
    name: str, kind: str, flags: tuple[bool, bool, bool], arguments: Any, key: str, other: str
) -> None:
    """exchange.declare, queue.declare, exchange.bind and queue.bind as pika sends them."""
    durable, auto_delete, third = flags
    exchange = {"name": name, "type": kind, "durable": durable, "auto_delete": auto_delete,
                "internal": third, "arguments": arguments}  # fmt: skip
    assert _declaration(1, "exchange", exchange)[0] == pika_bytes(
        1,
        spec.Exchange.Declare(0, name, kind, False, durable, auto_delete, third, False, arguments),
    )
    queue = {"name": name, "durable": durable, "exclusive": third, "auto_delete": auto_delete,
             "arguments": arguments}  # fmt: skip
    assert _declaration(1, "queue", queue)[0] == pika_bytes(
        1, spec.Queue.Declare(0, name, False, durable, third, auto_delete, False, arguments)
    )
    binding = {"source": other, "destination": name, "routing_key": key, "arguments": arguments}
    assert _declaration(1, "bind_exchange", binding)[0] == pika_bytes(
        1, spec.Exchange.Bind(0, name, other, key, False, arguments)
    )
    assert _declaration(1, "bind_queue", binding)[0] == pika_bytes(
        1, spec.Queue.Bind(0, name, other, key, False, arguments)
    )


def test_connection_and_channel_methods_are_pikas() -> None:
    """start-ok, tune-ok, open, close, channel.open and confirm.select as pika sends them."""
    props = codec.client_properties("logbus-x", "0.1.0")
    assert codec.method(
        0,
        10,
        11,
        codec.encode_table(props),
        codec.short_string("PLAIN"),
        codec.long_string(b"\0guest\0guest"),
        codec.short_string("en_US"),
    ) == pika_bytes(0, spec.Connection.StartOk(props, "PLAIN", b"\0guest\0guest", "en_US"))
    assert codec.method(0, 10, 31, codec.u16(2047), codec.u32(131072), codec.u16(30)) == pika_bytes(
        0, spec.Connection.TuneOk(2047, 131072, 30)
    )
    assert codec.method(
        0, 10, 40, codec.short_string("/"), codec.short_string(""), codec.bits(True)
    ) == pika_bytes(0, spec.Connection.Open("/", "", True))
    assert codec.method(
        0, 10, 50, codec.u16(200), codec.short_string("Normal shutdown"), codec.u16(0), codec.u16(0)
    ) == pika_bytes(0, spec.Connection.Close(200, "Normal shutdown", 0, 0))
    assert codec.method(3, 20, 10, codec.short_string("")) == pika_bytes(3, spec.Channel.Open())
    assert codec.method(1, 85, 10, codec.bits(False)) == pika_bytes(1, spec.Confirm.Select())


@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=20_000),
    frame_max=st.sampled_from([4096, 8192, 131072]),
    exchange=SHORT,
    key=SHORT,
    headers=st.dictionaries(SHORT, SHORT, max_size=4),
)
def test_a_publish_is_pikas_method_header_and_body_frames(
    body: bytes, frame_max: int, exchange: str, key: str, headers: dict[str, str]
) -> None:
    """basic.publish (mandatory), its content header and body frames split at frame_max - 8."""
    properties = Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id="abc",
        timestamp=1_700_000_000,
        app_id="logbus",
        headers=headers,
    )
    ours = _Item(Outgoing(exchange, key, body, properties)).frames(1, frame_max)
    props = to_pika(Message(body, properties, exchange, key))
    theirs = pika_bytes(1, spec.Basic.Publish(0, exchange, key, True, False))
    theirs += pika_frame.Header(1, len(body), props).marshal()
    step = frame_max - 8
    for start in range(0, len(body), step):
        theirs += pika_frame.Body(1, body[start : start + step]).marshal()
    assert ours == theirs


def test_frames_are_split_off_a_stream_as_they_complete() -> None:
    """split_frames yields whole frames and leaves a partial one in the buffer."""
    one = codec.method(0, 10, 41, codec.short_string(""))
    buffer = bytearray(one + codec.HEARTBEAT + one[:5])
    frames = list(codec.split_frames(buffer))
    assert [(kind, channel) for kind, channel, _payload in frames] == [(1, 0), (8, 0)]
    assert bytes(buffer) == one[:5]
    with pytest.raises(ValueError):
        list(codec.split_frames(bytearray(one[:-1] + b"\x00")))
