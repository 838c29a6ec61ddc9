"""A burst of publishes framed by logbus (pika_publish._Wire): byte for byte what pika's
own ``basic_publish`` would write, in one write per burst."""

from __future__ import annotations

from typing import Any

import pika
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame, spec

from logbus.message import Message, Properties
from logbus.transports.amqp.pika_convert import to_pika
from logbus.transports.amqp.pika_publish import Outgoing, PublishBatch, _Wire

_BODY_MAX = 64  # a small frame_max, so bodies are split as pika splits them


class _Connection:
    def __init__(self) -> None:
        self._body_max_length = _BODY_MAX
        self._transport = object()
        self.bytes_sent = 0
        self.frames_sent = 0
        self.writes: list[bytes] = []

    def _adapter_emit_data(self, data: bytes) -> None:
        self.writes.append(data)


class _Channel:
    def __init__(self, number: int) -> None:
        self.channel_number = number
        self.connection = _Connection()


def _pikas_own(number: int, item: Outgoing) -> list[bytes]:
    """The frames pika's Connection._send_message marshals for one publish."""
    method = spec.Basic.Publish(
        exchange=item.exchange, routing_key=item.routing_key, mandatory=item.mandatory
    )
    out = [
        frame.Method(number, method).marshal(),
        frame.Header(number, len(item.body), item.properties).marshal(),
    ]
    for start in range(0, len(item.body), _BODY_MAX):
        out.append(frame.Body(number, item.body[start : start + _BODY_MAX]).marshal())
    return out


_items = st.lists(
    st.tuples(
        st.text(max_size=30),
        st.text(max_size=40),
        st.binary(max_size=300),
        st.booleans(),
        st.sampled_from(["encoded", "pika", "none"]),
    ),
    min_size=1,
    max_size=8,
)


def _properties(kind: str, n: int) -> Any:
    if kind == "none":
        return None
    props = Properties(
        content_type="application/json", delivery_mode=2, message_id=f"id-{n}", timestamp=n,
        headers={"facility": "kern", "severity": "info"},
    )  # fmt: skip
    if kind == "encoded":
        return to_pika(Message(b"", props, "x", "k"))
    return pika.BasicProperties(content_type="text/plain", delivery_mode=1, message_id=f"{n}")


@settings(max_examples=60, deadline=None)
@given(_items, st.integers(1, 65535))
def test_a_burst_is_pikas_frames_in_one_write(specs: list[Any], number: int) -> None:
    channel = _Channel(number)
    wire = _Wire.of(channel)
    assert wire is not None
    expected: list[bytes] = []
    batch = PublishBatch()
    for n, (exchange, key, body, mandatory, kind) in enumerate(specs):
        item = Outgoing(batch, exchange, key, body, _properties(kind, n), mandatory)
        taken = wire.add(item)
        fits = len(exchange.encode()) <= 255 and len(key.encode()) <= 255
        assert taken is fits
        if taken:
            props = item.properties if item.properties is not None else spec.BasicProperties()
            expected += _pikas_own(number, Outgoing(batch, exchange, key, body, props, mandatory))
    wire.flush()
    connection = channel.connection
    assert connection.writes == ([b"".join(expected)] if expected else [])
    assert connection.bytes_sent == len(b"".join(expected))
    assert connection.frames_sent == len(expected)


def test_names_too_long_are_left_to_pika() -> None:
    wire = _Wire.of(_Channel(1))
    assert wire is not None
    item = Outgoing(PublishBatch(), "e" * 256, "k", b"x", None, False)
    assert not wire.add(item)
    wire.flush()
    assert wire.connection.writes == []


def test_a_pika_without_the_hooks_publishes_through_basic_publish() -> None:
    channel = _Channel(1)
    del channel.connection._body_max_length
    assert _Wire.of(channel) is None
