"""logbus.ingest.syslog: real senders' lines read into records, and nothing escapes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.ingest import FACILITY_NAMES, Truncated, parse, parse_record, peer_host
from logbus.record import SYSLOG_FACILITIES, LogRecord, Severity, format_ts

CORPUS = Path(__file__).resolve().parents[1] / "data" / "syslog"
RECEIVED = datetime(2026, 12, 7, 0, 30, tzinfo=UTC)


def corpus_cases() -> list[Any]:
    """Every case of every corpus file, with the file's defaults filled in."""
    cases = []
    for path in sorted(CORPUS.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for index, case in enumerate(document["cases"]):
            merged = {key: document.get(key) for key in ("peer", "host", "received")} | case
            cases.append(pytest.param(merged, id=f"{path.stem}-{index}"))
    return cases


def readable(result: dict[str, Any]) -> dict[str, Any]:
    """A parse result as the corpus writes it: ts as RFC 3339 text, severity as its word."""
    return result | {"ts": format_ts(result["ts"]), "severity": str(result["severity"])}


@pytest.mark.parametrize("case", corpus_cases())
def test_each_corpus_line_reads_as_expected(case):
    """Each line of tests/data/syslog parses to exactly the record its file expects."""
    data = base64.b64decode(case["line_b64"]) if "line_b64" in case else case["line"].encode()
    received = datetime.fromisoformat(case["received"])
    result = parse(data, case["peer"], host=case["host"], received=received)
    assert readable(result) == case["expect"]
    same_as_checked(result)


def same_as_checked(result: dict[str, Any]) -> LogRecord:
    """LogRecord.from_parsed (no checks) builds what the checked constructor builds."""
    fast = LogRecord.from_parsed(dict(result))
    checked = LogRecord(**result, id=fast.id)
    assert fast == checked
    assert fast.to_bytes() == checked.to_bytes()
    assert type(fast.severity) is Severity and fast.ts.tzinfo is UTC
    return fast


def test_parse_record_builds_what_the_checked_constructor_builds():
    """A listener's record (parse_record) equals LogRecord(**parse(...)) but for the new id."""
    line = b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
    line += b'[exampleSDID@32473 iut="3" eventSource="Application"] An application event'
    record = parse_record(line, "10.0.0.1:514", received=RECEIVED)
    assert record == LogRecord(**parse(line, "10.0.0.1:514", received=RECEIVED), id=record.id)
    assert record.to_dict()["fields"]["sd"] == {
        "exampleSDID@32473": {"iut": "3", "eventSource": "Application"}
    }


def test_the_corpus_covers_every_kind_of_sender():
    """The corpus holds lines of each sender the issue names, and enough of them."""
    names = {path.stem for path in CORPUS.glob("*.json")}
    assert {"logger", "rsyslog", "syslog-ng", "network", "systemd", "python", "rfc"} <= names
    assert len(corpus_cases()) >= 50


def test_facility_codes_follow_logbus_names_with_clock_for_15():
    """Codes 0-23 give logbus's syslog facility words in order, 15 being ``clock``."""
    assert len(FACILITY_NAMES) == 24
    assert FACILITY_NAMES[15] == "clock"
    assert FACILITY_NAMES[:15] + FACILITY_NAMES[16:] == SYSLOG_FACILITIES


@pytest.mark.parametrize("pri", range(192))
def test_every_pri_gives_its_facility_severity_and_routing_key(pri):
    """PRI = facility * 8 + severity, for every valid PRI, and the key is facility.severity."""
    record = parse_record(b"<%d>Dec  7 00:00:00 host app: x" % pri, received=RECEIVED)
    assert record.facility == FACILITY_NAMES[pri // 8]
    assert record.severity == Severity(pri % 8)
    assert record.routing_key == f"{FACILITY_NAMES[pri // 8]}.{Severity(pri % 8).word}"


def test_a_pri_with_leading_zeros_is_read():
    """``<013>`` is not what RFC 5424 allows but is what some senders write: it reads as 13."""
    assert parse(b"<013>just text", received=RECEIVED)["fields"]["syslog"]["pri"] == 13


def test_a_time_without_zone_is_read_in_the_zone_given():
    """A BSD time carries no zone; the caller's zone places it."""
    plus_two = timezone(timedelta(hours=2))
    result = parse(b"<13>Dec  7 02:10:00 host app: x", received=RECEIVED, zone=plus_two)
    assert result["ts"] == datetime(2026, 12, 7, 0, 10, tzinfo=UTC)


def test_a_message_cut_by_the_framer_is_flagged():
    """A Truncated message is still read, and says it was cut."""
    result = parse(Truncated(b"<13>Dec  7 00:00:00 host app: the start of a lo"), received=RECEIVED)
    assert result["fields"]["syslog"]["truncated"] is True
    assert result["message"] == "the start of a lo"


def test_the_arrival_time_defaults_to_now():
    """Without ``received``, a line with no timestamp is stamped with the current time."""
    before = datetime.now(UTC)
    ts = parse(b"<13>no time here")["ts"]
    assert before <= ts <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("10.0.0.1:514", "10.0.0.1"),
        ("[2001:db8::1]:514", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("gw.example.net", "gw.example.net"),
        ("/run/logbus/dev-log", "/run/logbus/dev-log"),
    ],
)
def test_peer_host_takes_the_address_without_the_port(peer, host):
    """IPv4 with a port, IPv6 in brackets or bare, a name, a socket path."""
    assert peer_host(peer) == host


def test_an_explicit_host_wins_over_the_peer():
    """A unix socket's listener names this machine; the peer is still kept."""
    result = parse(b"<13>Dec  7 00:00:00 app: x", "unix", host="vm", received=RECEIVED)
    assert (result["host"], result["fields"]["peer"]) == ("vm", "unix")


def check_builds(result: dict[str, Any]) -> None:
    """The safety net never fired, and the result is a record that encodes."""
    assert "error" not in result["fields"]["syslog"]
    record = same_as_checked(result)
    json.loads(record.to_bytes())


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_always_give_a_record(data):
    """Whatever the bytes, parse returns a valid record's keywords without raising."""
    check_builds(parse(data, "10.0.0.1:514", received=RECEIVED))


_PIECES = st.sampled_from(
    [
        "<13>", "<191>", "<0>", "<192>", "<", ">", "1 ", "12 ", "123: ", "*", ".", "-", " ", "  ",
        "Dec  7 ", "Feb 29 ", "Jan 31 2026 ", "00:00:00", "23:59:60", ".123456789",
        "2026-12-07T00:00:00Z", "2026-12-07T00:00:00.5+14:00", "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+01:00", "host ", "app", "app[12]", "app[x]", "[", "]", ":", ": ",
        '[id a="1"]', '[id a="\\"\\]\\\\"]', '[id a="1" a="2"][id b="3"]', '[id a=1]', '[x', '"',
        "\\", "=", "\ufeff", "\x00", "\n", "\r\n", "\xff", "é", "\udcff",
    ]
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(_PIECES, max_size=14))
def test_lines_made_of_syslog_pieces_always_give_a_record(pieces):
    """Near-syslog lines (headers, times, structured data out of order) never break parse."""
    data = "".join(pieces).encode("utf-8", "surrogateescape")
    check_builds(parse(data, "[::1]:514", received=RECEIVED))


# Each part of a header, valid or broken, so the fuzzer reaches every branch behind a good PRI.
_SYSLOG_LINES = st.tuples(
    st.sampled_from(["<13>", "<191>", "<0>", "<192>", "<1", "", "<013>"]),
    st.sampled_from(["1 ", "12 ", "123: ", "", "*", "."]),
    st.sampled_from(
        [
            "2026-12-07T00:00:00Z", "2026-12-07T00:00:00.5+14:00", "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+01:00", "2026-02-30T00:00:00", "2026-12-07 00:00:00,1z", "-",
            "Dec  7 00:00:00", "Feb 29 23:59:60.999", "Jan 31 2026 00:00:00", "Dec 7 00:00:00:", "",
        ]
    ),
    st.sampled_from([" host", " -", "", " app:", "  ", " [::1]"]),
    st.sampled_from([" app", " app[12]:", " app[x]", " -", " tag:", "", " postfix/smtpd[1]"]),
    st.sampled_from([" 123", " -", " worker-7", "", " 99999999999"]),
    st.sampled_from([" ID47", " -", ""]),
    st.sampled_from(
        [
            " -", ' [id a="1"]', ' [id a="\\"\\]\\\\" b="x\\y"]', ' [id a="1" a="2"][id b="3"]',
            " [id a=1]", " [x", " [a@1]", " [", ' [a b="c"] ', "",
        ]
    ),
    st.sampled_from([" msg", " \ufeffmsg", "", " \udcff", "\n", "\x00", " [not sd]", "\r\n"]),
).map("".join)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(_SYSLOG_LINES)
def test_syslog_headers_valid_or_broken_always_give_a_record(line):
    """Headers assembled from valid and broken parts never break parse."""
    check_builds(parse(line.encode("utf-8", "surrogateescape"), "10.0.0.1:9", received=RECEIVED))


_SD_NAME = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='=]" '),
    min_size=1,
    max_size=32,
)
_VALUE = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def escape(value: str) -> str:
    """A PARAM-VALUE as RFC 5424 writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(_SD_NAME, st.dictionaries(_SD_NAME, _VALUE, max_size=4), max_size=3),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\x00"), max_size=60),
)
def test_structured_data_written_by_the_rfc_reads_back(sd, message):
    """Any structured data, escaped as RFC 5424 says, reads back to its values."""
    elements = "".join(
        f"[{sd_id}" + "".join(f' {k}="{escape(v)}"' for k, v in params.items()) + "]"
        for sd_id, params in sd.items()
    )
    line = f"<165>1 2026-12-07T00:00:00Z host app 1 ID - {message}"
    if elements:
        line = f"<165>1 2026-12-07T00:00:00Z host app 1 ID {elements} {message}"
    result = parse(line.encode(), received=RECEIVED)
    assert result["fields"].get("sd", {}) == sd
    assert result["message"] == message.removeprefix("\ufeff")


# The common RFC 3164 shape and its near misses, for the one-match fast path.
_COMMON_LINES = st.tuples(
    st.sampled_from(["<13>", "<191>", "<192>", "<0>", "<013>", "<1000>"]),
    st.sampled_from(
        ["Dec  7 ", "Dec 7 ", "Dec 07 ", "Feb 30 ", "Feb 29 ", "Jan 31 2026 ", "Jun  1  ",
         "2026-12-07T", "2026-02-30T", "2026-12-07 ", "2026-12-07t", "9999-12-31T", "202-1-1T"]
    ),
    st.sampled_from(
        ["00:00:00", "23:59:60", "12:00:00.5", "24:00:00", "9:00:00", "00:00:00Z",
         "00:00:00.123456789+14:00", "00:00:00,1z", "00:00:00-2359", "00:00:00+01:0",
         "23:59:59-23:59", "00:00:00:", "00:00:00.x"]
    ),
    st.sampled_from([" host", " h.example.com", " [::1]", " 10.0.0.1:514", " h]x", "", "  host"]),
    st.sampled_from(
        [" app", " app:", " app[12]:", " app[x]", " app[]:", " a:b:", " postfix/smtpd[1]:"]
    ),
    st.sampled_from([" msg", "", " \ufeffmsg", "  two", " [x] y", ":", " \udcff"]),
).map("".join)  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(_COMMON_LINES)
def test_the_common_rfc3164_fast_path_reads_as_the_general_reading(line):
    """A line the one-match fast path takes reads exactly as the step-by-step reading does."""
    import re

    from logbus.ingest import syslog

    data = line.encode("utf-8", "surrogateescape")
    for received in (RECEIVED, datetime(2026, 1, 1, 0, 5, tzinfo=UTC)):
        fast = parse(data, "10.0.0.1:9", received=received)
        saved, syslog._COMMON_3164 = syslog._COMMON_3164, re.compile(r"(?!)")
        try:
            general = parse(data, "10.0.0.1:9", received=received)
        finally:
            syslog._COMMON_3164 = saved
        assert fast == general
        assert json.dumps(fast, default=str) == json.dumps(general, default=str)  # key order too


def test_the_fast_path_takes_loggens_lines():
    """loggen's (and most senders') RFC 3164 lines are the fast path's shape."""
    from logbus.ingest import syslog

    for stamp in ("Dec  7 03:50:00", "2026-12-07T03:50:00"):  # loggen writes the second
        line = f"<38>{stamp} localhost prg00000[1234]: seq: 0000000001, thread: 0000"
        assert syslog._COMMON_3164.match(line) is not None
        result = parse(line.encode(), "10.0.0.1:9", received=RECEIVED)
        assert (result["host"], result["app"], result["pid"]) == ("localhost", "prg00000", 1234)
        assert result["message"] == "seq: 0000000001, thread: 0000"
        assert format_ts(result["ts"]) == "2026-12-07T03:50:00.000000Z"
