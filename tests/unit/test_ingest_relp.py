"""logbus.ingest.relp: RELP frames as rsyslog's omrelp sends them, and the server's answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.ingest.relp import (
    RelpDecoder,
    RelpFrame,
    accept_offers,
    format_offers,
    parse_offers,
    parse_response,
    response,
    serverclose,
)

# A session as rsyslog 8.2302's omrelp (librelp 1.11.0) was seen to open it, send
# three lines and close it.
OMRELP_SESSION = (
    b"1 open 86 relp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\n"
    b"commands=syslog\n"
    b"2 syslog 52 <13>2026-12-07T00:10:54+00:00 vm app[19448]: msg one\n"
    b"3 syslog 52 <13>2026-12-07T00:10:54+00:00 vm app[19450]: msg two\n"
    b"4 syslog 54 <13>2026-12-07T00:10:54+00:00 vm app[19451]: msg three\n"
    b"5 close 0\n"
)


def decode_all(
    stream: bytes, cuts: list[int] | None = None, **options
) -> tuple[list[RelpFrame], RelpDecoder]:
    """The frames of ``stream`` fed in chunks cut at ``cuts``, and the decoder."""
    decoder = RelpDecoder(**options)
    frames: list[RelpFrame] = []
    start = 0
    for cut in [*sorted(cuts or []), len(stream)]:
        frames += decoder.feed(stream[start:cut])
        start = max(start, cut)
        assert decoder.buffered <= decoder.max_data + 64
    return frames, decoder


def test_an_omrelp_session_decodes_frame_by_frame():
    """open, three syslog commands and close, with their transaction numbers and data."""
    frames, decoder = decode_all(OMRELP_SESSION)
    assert [(f.txnr, f.command) for f in frames] == [
        (1, "open"),
        (2, "syslog"),
        (3, "syslog"),
        (4, "syslog"),
        (5, "close"),
    ]
    assert frames[1].data == b"<13>2026-12-07T00:10:54+00:00 vm app[19448]: msg one"
    assert frames[4].data == b""
    assert decoder.error is None and decoder.buffered == 0


def test_the_open_offers_are_read():
    """librelp offers its version, software (three values) and commands, one a line."""
    open_frame = decode_all(OMRELP_SESSION)[0][0]
    assert parse_offers(open_frame.data) == {
        "relp_version": ["0"],
        "relp_software": ["librelp", "1.11.0", "http://librelp.adiscon.com"],
        "commands": ["syslog"],
    }


def test_the_server_accepts_the_clients_version_and_common_commands():
    """The answer echoes relp_version 0, keeps only the commands both know, names logbus."""
    offers = {"relp_version": ["0"], "commands": ["syslog", "eventlog"]}
    assert accept_offers(offers) == {
        "relp_version": ["0"],
        "relp_software": ["logbus"],
        "commands": ["syslog"],
    }
    assert accept_offers({"relp_version": ["7"]}) == {
        "relp_version": ["0"],
        "relp_software": ["logbus"],
        "commands": [],
    }


def test_an_open_without_relp_version_is_refused():
    """The specification makes relp_version mandatory in an open."""
    assert accept_offers({"commands": ["syslog"]}) is None
    assert accept_offers(parse_offers(b"")) is None


def test_the_open_answer_on_the_wire():
    """``1 rsp N 200 OK`` then one accepted offer a line, as librelp reads it."""
    body = format_offers(
        {"relp_version": ["0"], "relp_software": ["logbus"], "commands": ["syslog"]}
    )
    wire = response(1, body=body)
    data = b"200 OK\nrelp_version=0\nrelp_software=logbus\ncommands=syslog"
    assert wire == b"1 rsp %d %s\n" % (len(data), data)
    parsed = parse_response(decode_all(wire)[0][0].data)
    assert parsed is not None
    code, text, rest = parsed
    assert (code, text, parse_offers(rest)["commands"]) == (200, "OK", ["syslog"])


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (response(2), b"2 rsp 6 200 OK\n"),
        (response(3, 500, "broker unavailable"), b"3 rsp 22 500 broker unavailable\n"),
        (response(4, 500, "two\nlines"), b"4 rsp 13 500 two lines\n"),
        (serverclose(), b"0 serverclose 0\n"),
    ],
)
def test_the_servers_frames_on_the_wire(wire, expected):
    """An acknowledgement, a refusal (one line of text) and the serverclose hint."""
    assert wire == expected


def test_a_frame_encodes_to_what_decodes_it():
    """RelpFrame.encode writes DATALEN and the space only when there is data."""
    assert RelpFrame(9, "close").encode() == b"9 close 0\n"
    assert RelpFrame(10, "syslog", b"x y\n").encode() == b"10 syslog 4 x y\n\n"


def test_a_space_before_the_lf_of_an_empty_frame_is_tolerated():
    """``5 close 0 \\n`` reads as ``5 close 0\\n``."""
    frames, _ = decode_all(b"5 close 0 \n6 close 0\n")
    assert [f.txnr for f in frames] == [5, 6]


def test_a_response_that_is_none():
    """parse_response refuses data without a three-digit status."""
    assert parse_response(b"OK") is None
    assert parse_response(b"200") == (200, "", b"")


@pytest.mark.parametrize(
    ("stream", "problem"),
    [
        (b"x open 0\n", "bad frame header"),
        (b"1 open\n", "bad frame header"),
        (b"1234567890 syslog 1 x\n", "bad frame header"),
        (b"1 sys-log 1 x\n", "bad frame header"),
        (b"1 syslog 3 abcd\n", "not followed by LF"),
        (b"1 syslog 3\nabc\n", "no space before its data"),
        (b"1 close 0x", "no line feed after DATALEN 0"),
        (b"1 syslog 200000 ", "over the limit"),
    ],
)
def test_bad_framing_stops_the_decoder_and_says_why(stream, problem):
    """The first framing error is kept in ``error``; later bytes give no frames."""
    decoder = RelpDecoder()
    assert decoder.feed(b"7 syslog 1 a\n" + stream) == [RelpFrame(7, "syslog", b"a")]
    assert decoder.error is not None and problem in decoder.error
    assert decoder.feed(b"8 syslog 1 b\n") == []
    assert decoder.buffered == 0


def test_a_header_that_may_still_grow_waits():
    """Partial headers wait for more bytes instead of failing."""
    decoder = RelpDecoder()
    for part in (b"1", b"2", b" sys", b"log", b" 1", b"0", b" 0123456789", b"\n"):
        assert decoder.error is None
        frames = decoder.feed(part)
    assert frames == [RelpFrame(12, "syslog", b"0123456789")]


_COMMANDS = st.sampled_from(["open", "syslog", "close", "rsp", "serverclose", "starttls"])


@settings(max_examples=600, deadline=None)
@given(
    st.lists(st.builds(RelpFrame, st.integers(0, 999_999_999), _COMMANDS, st.binary(max_size=50))),
    st.lists(st.integers(0, 2000), max_size=8),
)
def test_frames_survive_any_split(frames, cuts):
    """Encoded frames, cut into any chunks, decode to the same frames."""
    stream = b"".join(frame.encode() for frame in frames)
    decoded, decoder = decode_all(stream, cuts=[c % (len(stream) + 1) for c in cuts])
    assert decoded == frames
    assert decoder.error is None


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8))
def test_arbitrary_bytes_never_raise_and_split_the_same(stream, cuts):
    """Any bytes: no exception, the same frames and error however they are cut."""
    whole, one = decode_all(stream, max_data=64)
    split, other = decode_all(stream, cuts=[c % (len(stream) + 1) for c in cuts], max_data=64)
    assert split == whole
    assert (other.error is None) == (one.error is None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_offer_parsing_never_raises(data):
    """Whatever an open carries, its offers read as a dict of lists of text."""
    offers = parse_offers(data)
    assert all(isinstance(values, list) for values in offers.values())
    accept_offers(offers)
