"""Deliveries read off the wire by the pika transport equal what pika would hand over."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import logging
import struct
from typing import Any

import pika
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pika import frame as pika_frame
from pika import spec

from logbus.message import Properties
from logbus.transports.amqp import pika_inbound as inbound
from logbus.transports.amqp.pika_convert import properties_from_pika
from logbus.transports.amqp.pika_inbound import InboundConnection, decode_properties

short = st.text(max_size=20)
values = st.one_of(
    short,
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.none(),
    st.binary(max_size=5),
    st.decimals(places=2, min_value=-1000, max_value=1000),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 2),
        max_value=dt.datetime(2100, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda d: d.replace(microsecond=0)),
    st.lists(short, max_size=2),
    st.dictionaries(short, short, max_size=2),
)
FIELDS = {
    "content_type": short,
    "content_encoding": short,
    "delivery_mode": st.sampled_from([1, 2]),
    "priority": st.integers(0, 255),
    "correlation_id": short,
    "reply_to": short,
    "expiration": st.integers(0, 10**6).map(str),
    "message_id": short,
    "timestamp": st.integers(0, 2**64 - 1),
    "type": short,
    "user_id": short,
    "app_id": short,
    "cluster_id": short,
    "headers": st.one_of(
        st.dictionaries(short, short, max_size=5),
        st.dictionaries(short, values, max_size=4),
    ),
}


def pikas(encoded: bytes) -> Properties:
    """What the pika path makes of encoded properties."""
    return properties_from_pika(pika.BasicProperties().decode(encoded))


@settings(max_examples=500, deadline=None)
@given(st.fixed_dictionaries({}, optional=FIELDS))
def test_properties_decode_as_pika_decodes_them(fields: dict[str, Any]) -> None:
    """Any properties pika encodes decode to the same values and types both ways."""
    encoded = b"".join(pika.BasicProperties(**fields).encode())
    ours, theirs = decode_properties(encoded, 0), pikas(encoded)
    assert ours == theirs
    assert [type(getattr(ours, n)) for n in ours.__slots__] == [
        type(getattr(theirs, n)) for n in theirs.__slots__
    ]
    for key, value in theirs.headers.items():
        assert type(ours.headers[key]) is type(value)
    # The second decode of the same headers (kept from the first) is as good.
    assert decode_properties(encoded, 0) == theirs


def test_strings_that_are_not_utf8_stay_bytes_as_in_pika() -> None:
    """A short string or header value that is not UTF-8 comes back as bytes, as pika has it."""
    encoded = (
        struct.pack(">H", 0x8000 | 0x2000)
        + b"\x02\xff\xfe"
        + struct.pack(">I", 8)
        + b"\x01kS"
        + struct.pack(">I", 1)
        + b"\xff"
    )
    assert decode_properties(encoded, 0) == pikas(encoded)
    assert decode_properties(encoded, 0).content_type == b"\xff\xfe"


def test_a_decimal_header_decodes_as_in_pika() -> None:
    """Tables beyond plain strings go through pika's decoder: same values."""
    props = pika.BasicProperties(headers={"d": decimal.Decimal("1.25"), "a": [1, "x"]})
    encoded = b"".join(props.encode())
    assert decode_properties(encoded, 0) == pikas(encoded)


# -- the connection's reading ---------------------------------------------------


class FakeChannel:
    """Just what InboundConnection reads of a pika channel."""

    def __init__(self, tags: set[str]) -> None:
        self.is_open = True
        self._consumers = dict.fromkeys(tags)
        self._cancelled: set[str] = set()
        self._content_assembler = type("A", (), {"_method_frame": None})()


class FakeConsumer:
    """Records what the fast path hands over."""

    def __init__(self, channel: FakeChannel, got: list[Any]) -> None:
        self.channel = channel
        self._got = got

    def io_deliver(self, *args: Any) -> None:
        self._got.append(("fast", *args[1:]))


def connection(got: list[Any]) -> InboundConnection:
    """An InboundConnection with no socket: pika's frame handling is recorded."""
    conn = object.__new__(InboundConnection)
    conn._logbus_fast = True
    ours = FakeChannel({"ours"})
    conn._logbus_consumers = {"ours": FakeConsumer(ours, got)}  # type: ignore[dict-item]
    conn._channels = {1: ours, 2: FakeChannel({"theirs"})}
    conn._frame_buffer = b""
    conn.bytes_received = 0
    conn.frames_received = 0

    def process(value: Any) -> None:
        conn.frames_received += 1
        got.append(("pika", value.channel_number, type(value).__name__))

    conn._process_frame = process  # type: ignore[method-assign]
    return conn


def delivery(channel: int, tag: str, number: int, body: bytes, frame_max: int) -> bytes:
    method = pika_frame.Method(channel, spec.Basic.Deliver(tag, number, True, "ex", "a.b"))
    props = pika.BasicProperties(message_id=f"m{number}", headers={"h": "v"}, delivery_mode=2)
    out = method.marshal() + pika_frame.Header(channel, len(body), props).marshal()
    for i in range(0, len(body), frame_max):
        out += pika_frame.Body(channel, body[i : i + frame_max]).marshal()
    return out


def stream() -> bytes:
    return b"".join(
        [
            delivery(1, "ours", 1, b"one", 100),
            pika_frame.Heartbeat().marshal(),
            delivery(2, "theirs", 1, b"x" * 10, 100),
            delivery(1, "ours", 2, b"", 100),
            delivery(1, "unknown", 3, b"y", 100),
            delivery(1, "ours", 4, bytes(range(250)), 64),
        ]
    )


def expected() -> list[Any]:
    def props(n: int) -> Properties:
        return Properties(delivery_mode=2, message_id=f"m{n}", headers={"h": "v"})

    return [
        ("fast", 1, True, "ex", "a.b", props(1), b"one"),
        ("pika", 0, "Heartbeat"),
        ("pika", 2, "Method"),
        ("pika", 2, "Header"),
        ("pika", 2, "Body"),
        ("fast", 2, True, "ex", "a.b", props(2), b""),
        ("pika", 1, "Method"),
        ("pika", 1, "Header"),
        ("pika", 1, "Body"),
        ("fast", 4, True, "ex", "a.b", props(4), bytes(range(250))),
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 600), max_size=6))
def test_frames_are_handled_in_order_however_the_reads_split(cuts: list[int]) -> None:
    """Ours go the fast way, the rest to pika, in stream order, counters as pika keeps them."""
    data = stream()
    points = sorted({0, len(data), *(c % len(data) for c in cuts)})
    got: list[Any] = []
    conn = connection(got)
    for start, end in itertools.pairwise(points):
        conn._on_data_available(data[start:end])
    assert got == expected()
    assert conn._frame_buffer == b""
    assert conn.bytes_received == len(data)
    assert conn.frames_received == 3 + 1 + 3 + 2 + 3 + 6


def test_a_cancelled_consumer_s_deliveries_go_to_pika() -> None:
    """Once pika has the consumer cancelled, pika's path (which rejects them) handles it."""
    got: list[Any] = []
    conn = connection(got)
    conn._channels[1]._cancelled.add("ours")
    conn._on_data_available(delivery(1, "ours", 1, b"one", 100))
    assert [g[0] for g in got] == ["pika", "pika", "pika"]


# -- the start-up check and the switch ------------------------------------------------


class Opened:
    """Stands in for a connection class: records which one was opened."""

    def __init__(self, kind: str, opened: list[str]) -> None:
        self._kind, self._opened = kind, opened

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        self._opened.append(self._kind)
        return self._kind


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which connection class open_connection chose, without opening a socket."""
    chosen: list[str] = []
    monkeypatch.setattr(inbound, "SelectConnection", Opened("pika", chosen))
    monkeypatch.setattr(inbound, "InboundConnection", Opened("fast", chosen))
    inbound.missing_internals.cache_clear()
    monkeypatch.setattr(inbound, "_warned", set())
    yield chosen
    inbound.missing_internals.cache_clear()


def test_the_installed_pika_has_every_internal_the_path_reads() -> None:
    """The start-up check finds nothing missing in the pika this project installs."""
    inbound.missing_internals.cache_clear()
    assert inbound.missing_internals() == ()


def test_the_path_is_on_by_default(opened: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without LOGBUS_AMQP_FAST_INBOUND, connections read deliveries the fast way."""
    monkeypatch.delenv(inbound.ENV, raising=False)
    inbound.open_connection("params", consumers={})
    assert opened == ["fast"]


@pytest.mark.parametrize("value", ["0", "false", "off", "No"])
def test_the_environment_turns_the_path_off(
    opened: list[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """LOGBUS_AMQP_FAST_INBOUND=0 (or false, off, no) opens pika's own connection."""
    monkeypatch.setenv(inbound.ENV, value)
    inbound.open_connection("params", consumers={})
    assert opened == ["pika"]


def test_a_pika_without_an_internal_falls_back_with_a_warning(
    opened: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pika release that drops a function the path calls gets pika's path and a warning."""
    monkeypatch.delenv(inbound.ENV, raising=False)
    monkeypatch.delattr(pika_frame, "decode_frame")
    with caplog.at_level(logging.WARNING):
        inbound.open_connection("params", consumers={})
    assert opened == ["pika"]
    assert "amqp.fast_inbound_unavailable" in caplog.text
    assert "pika.frame.decode_frame" in caplog.text


def test_a_pika_whose_channels_changed_falls_back(
    opened: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A channel without the consumer state the path reads means pika's path."""
    monkeypatch.delenv(inbound.ENV, raising=False)
    original = pika.channel.Channel.__init__

    def changed(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        del self._cancelled

    monkeypatch.setattr(pika.channel.Channel, "__init__", changed)
    inbound.open_connection("params", consumers={})
    assert opened == ["pika"]
    assert inbound.missing_internals() == ("Channel._cancelled",)


def test_a_connection_without_the_state_it_reads_leaves_frames_to_pika(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection whose pika keeps its read state elsewhere hands every read to pika."""
    got: list[Any] = []
    conn = connection(got)
    conn._logbus_fast = False
    handed: list[bytes] = []
    monkeypatch.setattr(
        inbound.SelectConnection, "_on_data_available", lambda _self, data: handed.append(data)
    )
    conn._on_data_available(delivery(1, "ours", 1, b"one", 100))
    assert got == []
    assert handed == [delivery(1, "ours", 1, b"one", 100)]
