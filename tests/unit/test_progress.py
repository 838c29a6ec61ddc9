"""Progress for long commands: on stderr only when it is a terminal, and fed by the library."""

from __future__ import annotations

import io
import os
import pty
from collections.abc import Iterator

import pytest

from logbus.cli._progress import progress, shows_progress
from logbus.message import Message
from logbus.record import LogRecord
from logbus.transports import connect
from logbus.worker import dlq
from logbus.worker.retry import dead_queue


@pytest.fixture
def terminal() -> Iterator[io.TextIOWrapper]:
    """The follower side of a pseudo-terminal, as a text stream (a real TTY)."""
    leader, follower = pty.openpty()
    stream = open(follower, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    yield stream
    stream.close()
    os.close(leader)


def test_progress_is_shown_on_a_terminal(terminal: io.TextIOWrapper) -> None:
    """A terminal is where progress goes."""
    assert shows_progress(terminal)


def test_progress_is_not_shown_when_piped() -> None:
    """A pipe or file gets nothing: stderr stays for errors only."""
    piped = io.StringIO()
    assert not shows_progress(piped)
    with progress("replaying", stream=piped) as update:
        update(5, 10)
    assert piped.getvalue() == ""


def test_progress_writes_to_a_terminal() -> None:
    """On a terminal the bar, with its description, is drawn."""
    leader, follower = pty.openpty()
    with open(follower, "w", encoding="utf-8") as stream:
        with progress("replaying q.dead", stream=stream) as update:
            update(5, 10)
        stream.flush()
        screen = os.read(leader, 65536).decode(errors="replace")
    os.close(leader)
    assert "replaying q.dead" in screen


def test_replay_reports_its_progress_batch_by_batch() -> None:
    """dlq.replay calls progress(moved, total) from 0 up to every record moved."""
    with connect("memory://progress-test") as transport:
        transport.declare_queue("q")
        transport.declare_queue(dead_queue("q"))
        records = [LogRecord.from_key("user.error", f"r{i}") for i in range(250)]
        transport.publish_many(
            Message(r.to_bytes(), r.to_properties(), "", dead_queue("q")) for r in records
        )
        seen: list[tuple[int, int]] = []
        done = dlq.replay(transport, "q", progress=lambda moved, total: seen.append((moved, total)))
    assert done.replayed == 250
    assert seen[0] == (0, 250) and seen[-1] == (250, 250)
    assert [moved for moved, _ in seen] == sorted(moved for moved, _ in seen)
