"""JSON log shapes read onto record fields: each library's keys, and nothing lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logbus.record import Severity
from logbus.shapes import read_shape, severity_of

T0 = datetime(2024, 5, 17, 8, 30, 15, 123000, tzinfo=UTC)


def test_pino_and_bunyan_keys_map_onto_the_record():
    got = read_shape(
        {
            "msg": "hi",
            "level": 50,
            "time": 1715934615123,
            "hostname": "h1",
            "pid": 7,
            "name": "api",
            "req": 3,
        }
    )
    assert got == {
        "message": "hi",
        "severity": Severity.ERROR,
        "ts": T0,
        "host": "h1",
        "pid": 7,
        "app": "api",
        "fields": {"req": 3},
    }
    bunyan = read_shape({"msg": "x", "level": 30, "time": "2024-05-17T08:30:15.123Z", "v": 0})
    assert bunyan["ts"] == T0 and bunyan["severity"] is Severity.INFO
    assert bunyan["fields"] == {"v": 0}, "bunyan's v 0 is not logbus's schema version: kept"


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (10, Severity.DEBUG),
        (20, Severity.DEBUG),
        (30, Severity.INFO),
        (40, Severity.WARNING),
        (60, Severity.EMERGENCY),
    ],
)
def test_pino_levels(level, severity):
    assert read_shape({"msg": "m", "level": level})["severity"] is severity


def test_ecs_dotted_and_nested_keys():
    dotted = read_shape(
        {
            "@timestamp": "2024-05-17T08:30:15.123Z",
            "log.level": "warn",
            "message": "m",
            "host.name": "w1",
        }
    )
    assert dotted == {"ts": T0, "severity": Severity.WARNING, "message": "m", "host": "w1"}
    nested = read_shape(
        {
            "message": "m",
            "log": {"level": "error", "logger": "x"},
            "host": {"name": "w2", "ip": ["10.0.0.1"]},
            "service": {"name": "checkout"},
            "process": {"pid": 42},
        }
    )
    assert nested["severity"] is Severity.ERROR
    assert (nested["host"], nested["app"], nested["pid"]) == ("w2", "checkout", 42)
    assert nested["fields"] == {"log": {"logger": "x"}, "host": {"ip": ["10.0.0.1"]}}


def test_gelf_uses_syslog_numbers_and_keeps_the_rest():
    got = read_shape(
        {
            "version": "1.1",
            "host": "gw",
            "short_message": "link down",
            "full_message": "link down\ntrace",
            "timestamp": 1715934615.123,
            "level": 2,
            "_port": 3,
        }
    )
    assert got["message"] == "link down" and got["severity"] is Severity.CRITICAL
    assert got["host"] == "gw" and abs((got["ts"] - T0).total_seconds()) < 0.001
    assert got["fields"] == {"version": "1.1", "full_message": "link down\ntrace", "_port": 3}


def test_python_json_logger():
    got = read_shape(
        {
            "message": "m",
            "levelname": "CRITICAL",
            "asctime": "2024-05-17 08:30:15,123",
            "name": "app.db",
        }
    )
    assert got["severity"] is Severity.CRITICAL and got["app"] == "app.db"
    assert got["ts"] == datetime(2024, 5, 17, 8, 30, 15, 123000).astimezone(UTC)


def test_logstash():
    got = read_shape(
        {"@timestamp": "2024-05-17T10:30:15.123+02:00", "message": "m", "level": "INFO"}
    )
    assert got == {"ts": T0, "message": "m", "severity": Severity.INFO}


def test_logbus_own_record_reads_back_and_fields_win_over_leftovers():
    got = read_shape(
        {
            "id": "abc",
            "ts": "2024-05-17T08:30:15.123000Z",
            "facility": "kern",
            "severity": "critical",
            "host": "h",
            "app": "a",
            "pid": 1,
            "message": "m",
            "fields": {"k": 1, "x": "inner"},
            "v": 1,
            "x": "outer",
        }
    )
    assert got["fields"] == {"k": 1, "x": "inner"}
    assert got["facility"] == "kern" and got["severity"] is Severity.CRITICAL and got["v"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {"message": 42},
        {"level": "loud", "msg": "m"},
        {"time": "yesterday", "msg": "m"},
        {"pid": -1, "msg": "m"},
        {"facility": "Kern", "msg": "m"},
        {"host": {"name": 5}},
    ],
)
def test_a_value_that_does_not_fit_stays_under_its_own_key(body):
    got = read_shape(body)
    for key, value in body.items():
        if key == "msg":
            assert got["message"] == value
        else:
            assert got["fields"][key] == value


def test_severity_words_of_the_libraries():
    assert severity_of("WARNING") is Severity.WARNING
    assert severity_of("fatal") is Severity.EMERGENCY
    assert severity_of("trace") is Severity.DEBUG
    assert severity_of(True) is None
    assert severity_of(3.5) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "msg",
        "message",
        "level",
        "log.level",
        "time",
        "@timestamp",
        "host",
        "hostname",
        "name",
        "pid",
        "fields",
        "v",
    ]
)


@given(st.dictionaries(_keys | st.text(max_size=6), _json, max_size=8))
def test_reading_never_fails_and_loses_no_scalar(data: dict[str, Any]):
    got = read_shape(data)
    dumped = json.dumps(got, default=str)
    inner = data["fields"] if isinstance(data.get("fields"), dict) else {}
    for key, value in data.items():
        if key in ("level", "log.level", "time", "@timestamp"):
            continue  # read as a severity or a time: another spelling of the same value
        if key in inner:
            continue  # the body's own fields object wins over a leftover of its name
        if isinstance(value, str) and value:
            assert json.dumps(value)[1:-1] in dumped
