"""The summariser of repeated events (logbus._log.Repeats): a flood becomes a few lines."""

from __future__ import annotations

import logging

import pytest

from logbus._log import Repeats, get_logger


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def repeats(caplog: pytest.LogCaptureFixture) -> tuple[Repeats, Clock]:
    """A Repeats over a test logger with a 10 s window and a hand-moved clock."""
    caplog.set_level(logging.INFO, logger="logbus.test_log")
    clock = Clock()
    return Repeats(get_logger("logbus.test_log"), 10.0, clock=clock), clock


def test_the_first_event_of_a_kind_is_logged_whole_and_the_rest_counted(repeats, caplog):
    """1,000 alike in a window: one line now; flush adds one line saying 999 more."""
    summariser, _clock = repeats
    for n in range(1000):
        summariser.warning("sink_failed", key=("q",), record=n)
    assert [r.getMessage() for r in caplog.records] == ["event='sink_failed' record=0"]
    summariser.flush()
    last = caplog.records[-1].getMessage()
    assert len(caplog.records) == 2
    assert "record=999" in last and "more=999" in last
    assert "and 999 more like this in the last" in last


def test_a_new_window_reports_the_old_one_and_logs_its_first_event(repeats, caplog):
    """Past the window, the next event brings the count of the last one, then itself."""
    summariser, clock = repeats
    for _ in range(3):
        summariser.warning("reconnect", key=(), attempt=1)
    clock.now += 10.5
    summariser.warning("reconnect", key=(), attempt=2)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "more=2" in messages[1] and "in the last 10 s" in messages[1]
    assert messages[2] == "event='reconnect' attempt=2"


def test_kinds_are_counted_apart_by_event_and_key(repeats, caplog):
    """Other keys or other events are other kinds: each gets its own first line."""
    summariser, _clock = repeats
    summariser.warning("sink_failed", key=("a",))
    summariser.warning("sink_failed", key=("b",))
    summariser.warning("undecodable", key=("a",))
    summariser.warning("sink_failed", key=("a",))
    assert len(caplog.records) == 3
    summariser.flush()
    assert len(caplog.records) == 4


def test_a_lone_event_gets_no_summary(repeats, caplog):
    """Nothing held back: flush says nothing more."""
    summariser, _clock = repeats
    summariser.info("once")
    summariser.flush()
    assert len(caplog.records) == 1
