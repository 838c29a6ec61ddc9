"""logbus.ingest.framing: RFC 6587 streams into messages, the same however they are split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.ingest import Framer, Truncated

# What the installed senders were seen to write on a TCP connection.
LOGGEN_OCTETS = (
    b"150 <38>1 2026-12-07T00:11:55+00:00 localhost prg00000 1234 - - \xef\xbb\xbfseq: 0000000000, "
    b"thread: 0000, runid: 1796602315, stamp: 2026-12-07T00:11:55 PADDPADDP\n"
    b"150 <38>1 2026-12-07T00:11:55+00:00 localhost prg00000 1234 - - \xef\xbb\xbfseq: 0000000001, "
    b"thread: 0000, runid: 1796602315, stamp: 2026-12-07T00:11:55 PADDPADDP\n"
)
LOGGER_OCTETS = (
    b'97 <13>1 2026-12-07T00:10:45.979983+00:00 vm root - - [timeQuality tzKnown="1" '
    b'isSynced="0"] tcp one'
)
OMFWD_LINES = (
    b"<13>Dec  7 00:10:54 vm app[19448]: msg one\n"
    b"<13>Dec  7 00:10:54 vm app[19450]: msg two\n"
    b"<13>Dec  7 00:10:54 vm app[19451]: msg three\n"
)


def run(stream: bytes, cuts: list[int] | None = None, **options) -> tuple[list[bytes], Framer]:
    """Feed ``stream`` cut at ``cuts`` (offsets), then flush; the messages and the framer."""
    framer = Framer(**options)
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts or []), len(stream)]:
        out += framer.feed(stream[start:cut])
        start = max(start, cut)
        assert framer.buffered <= framer.max_size + 16
    return out + framer.flush(), framer


def test_loggen_octet_counted_frames_are_read_whole():
    """loggen -P counts 150 octets, the trailing LF included."""
    messages, framer = run(LOGGEN_OCTETS)
    assert framer.mode == "octet-counting"
    assert len(messages) == 2
    assert all(len(m) == 150 and m.startswith(b"<38>1 ") and m.endswith(b"P\n") for m in messages)


def test_logger_octet_count_frame_without_a_trailing_line_end():
    """logger --octet-count writes ``97 <13>1 ...`` with nothing after the message."""
    messages, framer = run(LOGGER_OCTETS)
    assert messages == [LOGGER_OCTETS[3:]]
    assert framer.framing_errors == 0


def test_line_feed_framing_from_omfwd():
    """rsyslog's omfwd ends each message with LF; the LF is not part of the message."""
    messages, framer = run(OMFWD_LINES)
    assert framer.mode == "non-transparent"
    assert messages == OMFWD_LINES.rstrip(b"\n").split(b"\n")


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"<13>a\r\n<13>b\r\n", [b"<13>a", b"<13>b"]),
        (b"<14>python\x00<14>again\x00", [b"<14>python", b"<14>again"]),
        (b"<13>a\n\n\n<13>b", [b"<13>a", b"<13>b"]),
        (b"<13>mixed\r\n<13>ends\x00<13>here\n", [b"<13>mixed", b"<13>ends", b"<13>here"]),
        (b"<13>a\rb\n", [b"<13>a\rb"]),
    ],
)
def test_line_ends_lf_crlf_and_nul(stream, expected):
    """LF, CRLF and NUL end a message; empty lines are none; a lone CR inside is kept."""
    assert run(stream)[0] == expected


def test_the_mode_is_chosen_once_per_connection():
    """A line-framed connection whose message starts with digits stays line framed."""
    messages, framer = run(b"<13>x\n2024 is a year, not a count\n")
    assert framer.mode == "non-transparent"
    assert messages == [b"<13>x", b"2024 is a year, not a count"]


def test_a_lost_octet_count_reads_one_line_and_counts_it():
    """A frame not starting with ``LEN SP`` is read to the next line end, then counting resumes."""
    messages, framer = run(b"5 hello<13>oops\n5 world")
    assert messages == [b"hello", b"<13>oops", b"world"]
    assert framer.framing_errors == 1


def test_line_ends_between_counted_frames_are_skipped():
    """Some senders add LF (or CRLF) after an octet-counted frame; it is not an error."""
    messages, framer = run(b"5 hello\r\n5 world\n")
    assert (messages, framer.framing_errors) == ([b"hello", b"world"], 0)


def test_an_oversize_counted_frame_is_truncated_flagged_and_counted():
    """A frame over max_size is cut to max_size, marked Truncated, and the next frame is whole."""
    messages, framer = run(b"12 abcdefghijkl3 xyz", max_size=5)
    assert messages == [b"abcde", b"xyz"]
    assert isinstance(messages[0], Truncated) and not isinstance(messages[1], Truncated)
    assert framer.truncated == 1


def test_an_oversize_line_is_truncated_and_its_rest_discarded():
    """A line over max_size yields its first max_size bytes once; the next line is whole."""
    messages, framer = run(b"<13>" + b"x" * 100 + b"\n<13>short\n", cuts=[10, 30, 60], max_size=20)
    assert messages == [b"<13>" + b"x" * 16, b"<13>short"]
    assert isinstance(messages[0], Truncated)
    assert framer.truncated == 1


@pytest.mark.parametrize(
    ("stream", "expected"), [(b"9 too long!1 x", [b"x"]), (b"<13>far too long\n<1>x\n", [b"<1>x"])]
)
def test_oversize_messages_can_be_skipped_instead(stream, expected):
    """With oversize='skip' the long message is dropped but counted; the rest goes on."""
    messages, framer = run(stream, max_size=5, oversize="skip")
    assert messages == expected
    assert (framer.skipped, framer.truncated) == (1, 0)


def test_a_line_of_exactly_max_size_with_crlf_is_whole():
    """The CR of a CRLF does not count against max_size, however the line arrives."""
    line = b"<13>" + b"y" * 6
    for cuts in ([], [len(line)], [len(line) + 1]):
        assert run(line + b"\r\n", cuts=cuts, max_size=10)[0] == [line]


def test_the_last_line_without_its_end_is_delivered_at_close():
    """flush() hands on a final line the peer closed without ending."""
    assert run(b"<13>one\n<13>two")[0] == [b"<13>one", b"<13>two"]


def test_a_counted_frame_cut_by_the_close_is_delivered_truncated():
    """A frame whose octets never all came is still a message, flagged Truncated."""
    messages, framer = run(b"20 only this")
    assert messages == [b"only this"] and isinstance(messages[0], Truncated)
    assert framer.truncated == 1


def test_digits_left_at_close_are_a_message_too():
    """Never lost: a count with no frame after it reaches the parser as text."""
    messages, framer = run(b"3 abc12")
    assert messages == [b"abc", b"12"]
    assert framer.framing_errors == 1


def test_a_huge_declared_count_is_not_buffered():
    """A sender announcing 999,999,999 octets costs max_size of memory, not a gigabyte."""
    framer = Framer(max_size=100)
    out = framer.feed(b"999999999 ")
    for _ in range(50):
        out += framer.feed(b"z" * 1000)
        assert framer.buffered <= 100
    assert out == []


def test_bad_settings_are_refused():
    """A max_size under 1 or an unknown oversize policy is a ValueError."""
    with pytest.raises(ValueError, match="max_size"):
        Framer(max_size=0)
    with pytest.raises(ValueError, match="oversize"):
        Framer(oversize="drop")  # type: ignore[arg-type]


def _streams() -> st.SearchStrategy[bytes]:
    """Octet-counted, line-framed and garbage streams, and mixtures of them."""
    message = st.binary(min_size=0, max_size=40)
    counted = message.map(lambda m: b"%d %s" % (len(m), m) if m else b"")
    lined = message.map(lambda m: m.replace(b"\n", b"").replace(b"\x00", b"") + b"\n")
    piece = st.one_of(
        counted, lined, st.binary(max_size=12), st.sampled_from([b"\r\n", b"0 ", b"9"])
    )
    return st.lists(piece, max_size=12).map(b"".join)


@settings(max_examples=800, deadline=None)
@given(
    _streams(),
    st.lists(st.integers(min_value=0, max_value=600), max_size=8),
    st.integers(min_value=1, max_value=48),
    st.sampled_from(["truncate", "skip"]),
)
def test_any_split_gives_the_same_messages_and_counts(stream, cuts, max_size, oversize):
    """However a stream is cut into recv() chunks, the messages and counters are the same."""
    whole, one = run(stream, max_size=max_size, oversize=oversize)
    offsets = [c % (len(stream) + 1) for c in cuts]
    split, other = run(stream, cuts=offsets, max_size=max_size, oversize=oversize)
    assert split == whole
    assert [type(m) for m in split] == [type(m) for m in whole]
    counts = (one.truncated, one.skipped, one.framing_errors)
    assert (other.truncated, other.skipped, other.framing_errors) == counts
    assert all(len(m) <= max_size for m in whole)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=60), max_size=10),
    st.lists(st.integers(0, 900), max_size=6),
)
def test_counted_frames_come_back_exactly(messages, cuts):
    """Any messages, octet-counted and split anywhere, come back byte for byte."""
    stream = b"".join(b"%d %s" % (len(m), m) for m in messages)
    assert run(stream, cuts=[c % (len(stream) + 1) for c in cuts])[0] == messages


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_arbitrary_bytes_never_raise(stream, cuts):
    """Any bytes, in any chunks: no exception, bounded memory."""
    run(stream, cuts=[c % (len(stream) + 1) for c in cuts], max_size=32)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.binary(max_size=50).map(lambda m: m.replace(b"\n", b"").replace(b"\x00", b""))
        | st.sampled_from([b"", b"\r", b"x\r", b"\r\r"]),
        max_size=12,
    ),
    st.lists(st.sampled_from([b"\n", b"\x00", b"\r\n"]), min_size=12, max_size=12),
    st.integers(min_value=1, max_value=48),
)
def test_a_buffer_of_lines_is_framed_as_line_by_line(lines, ends, max_size):
    """A recv() holding many lines (split at once) gives what one line per recv() gives."""
    stream = b"x" + b"".join(line + end for line, end in zip(lines, ends, strict=False))
    whole, one = run(stream, max_size=max_size)
    by_line, other = run(stream, cuts=list(range(len(stream) + 1)), max_size=max_size)
    assert whole == by_line
    assert [type(m) for m in whole] == [type(m) for m in by_line]
    assert (one.truncated, one.skipped) == (other.truncated, other.skipped)
