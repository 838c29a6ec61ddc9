"""The jsonl sink's path templates, rotation by size and time, and fsync policy."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import logbus.sinks.jsonl as jsonl
from logbus.errors import ConfigError
from logbus.record import LogRecord
from logbus.sinks import load_sink
from logbus.sinks.jsonl import JsonlSink


def record(key: str = "kern.critical", message: str = "disk failed") -> LogRecord:
    """A record under ``key``."""
    return LogRecord.from_key(key, message, host="web1", app="kernel", pid=1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def lines(path: Path) -> list[dict[str, object]]:
    """The JSON objects of a jsonl file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def opened(sink: JsonlSink) -> JsonlSink:
    """``sink``, opened."""
    sink.open()
    return sink


def test_a_template_sends_each_record_to_its_facility_and_severity_file(tmp_path):
    """{facility}/{severity}.jsonl puts kern.critical and auth.info in their own files."""
    sink = opened(load_sink(f"jsonl:{tmp_path}/{{facility}}/{{severity}}.jsonl"))
    batch = [record("kern.critical", "a"), record("auth.info", "b"), record("kern.crit", "c")]
    assert sink.write(batch) == [None, None, None]
    sink.close()
    assert [r["message"] for r in lines(tmp_path / "kern" / "critical.jsonl")] == ["a", "c"]
    assert [r["message"] for r in lines(tmp_path / "auth" / "info.jsonl")] == ["b"]


def test_a_template_whose_fixed_directory_is_missing_fails_at_open(tmp_path):
    """The directory before the first placeholder must exist; open says which."""
    sink = JsonlSink(tmp_path / "missing" / "{facility}.jsonl")
    with pytest.raises(ConfigError, match="missing"):
        sink.open()


def test_a_template_writes_with_a_bounded_number_of_open_files(tmp_path, monkeypatch):
    """More facilities than MAX_OPEN_FILES close the least recently used, losing nothing."""
    monkeypatch.setattr(jsonl, "MAX_OPEN_FILES", 2)
    sink = opened(JsonlSink(tmp_path / "{facility}.jsonl"))
    for facility in ("kern", "auth", "mail", "kern", "cron"):
        assert sink.write([record(f"{facility}.info", facility)]) == [None]
        assert len(sink._files) <= 2
    sink.close()
    assert len(lines(tmp_path / "kern.jsonl")) == 2
    assert {p.name for p in tmp_path.iterdir()} == {
        "kern.jsonl",
        "auth.jsonl",
        "mail.jsonl",
        "cron.jsonl",
    }


def test_size_rotation_moves_the_file_aside_before_it_would_grow_past_max_bytes(tmp_path):
    """With max_bytes, a batch that would not fit starts a new file; no line is lost."""
    one = len(record().to_bytes()) + 1
    sink = opened(JsonlSink(tmp_path / "all.jsonl", max_bytes=one * 2))
    for _ in range(5):
        assert sink.write([record()]) == [None]
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3
    assert all(f.stat().st_size <= one * 2 for f in files)
    assert sum(len(lines(f)) for f in files) == 5
    assert (tmp_path / "all.jsonl").stat().st_size == one


def test_size_rotation_names_the_moved_file_with_a_tag_before_the_extension(tmp_path):
    """all.jsonl rotates to all.<UTC time>.jsonl, and to .1 when that name is taken."""
    clock = Clock(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    one = len(record().to_bytes()) + 1
    sink = opened(JsonlSink(tmp_path / "all.jsonl", max_bytes=one, clock=clock))
    for _ in range(3):
        sink.write([record()])
    sink.close()
    assert {p.name for p in tmp_path.iterdir()} == {
        "all.jsonl",
        "all.2025-01-02T03-04-05.jsonl",
        "all.2025-01-02T03-04-05.1.jsonl",
    }


def test_a_batch_larger_than_max_bytes_is_written_whole(tmp_path):
    """A batch is never split: one larger than max_bytes makes one larger file."""
    sink = opened(JsonlSink(tmp_path / "all.jsonl", max_bytes=10))
    assert sink.write([record("kern.info", str(i)) for i in range(4)]) == [None] * 4
    sink.close()
    assert len(lines(tmp_path / "all.jsonl")) == 4


def test_hourly_rotation_starts_a_new_file_when_the_hour_changes(tmp_path):
    """Records of 03:xx stay in all.2025-01-02T03.jsonl once 04:00 has come."""
    clock = Clock(datetime(2025, 1, 2, 3, 59, tzinfo=UTC))
    sink = opened(JsonlSink(tmp_path / "all.jsonl", rotate="hourly", clock=clock))
    sink.write([record("kern.info", "at three")])
    clock.now += timedelta(minutes=2)
    sink.write([record("kern.info", "at four")])
    sink.close()
    assert [r["message"] for r in lines(tmp_path / "all.2025-01-02T03.jsonl")] == ["at three"]
    assert [r["message"] for r in lines(tmp_path / "all.jsonl")] == ["at four"]


def test_daily_rotation_keeps_writing_within_the_same_day(tmp_path):
    """Daily rotation does not rotate at an hour's change, only at the day's."""
    clock = Clock(datetime(2025, 1, 2, 3, 0, tzinfo=UTC))
    sink = opened(JsonlSink(tmp_path / "all.jsonl", rotate="daily", clock=clock))
    sink.write([record()])
    clock.now += timedelta(hours=20)
    sink.write([record()])
    clock.now += timedelta(hours=1)
    sink.write([record()])
    sink.close()
    assert len(lines(tmp_path / "all.2025-01-02.jsonl")) == 2
    assert len(lines(tmp_path / "all.jsonl")) == 1


def test_time_rotation_dates_an_existing_file_by_its_last_write(tmp_path):
    """A file left by yesterday's worker is rotated under yesterday's date on the first write."""
    target = tmp_path / "all.jsonl"
    target.write_text('{"old": true}\n', encoding="utf-8")
    yesterday = datetime(2025, 1, 1, 12, tzinfo=UTC).timestamp()
    os.utime(target, (yesterday, yesterday))
    clock = Clock(datetime(2025, 1, 2, 9, tzinfo=UTC))
    sink = opened(JsonlSink(target, rotate="daily", clock=clock))
    sink.write([record()])
    sink.close()
    assert lines(tmp_path / "all.2025-01-01.jsonl") == [{"old": True}]
    assert len(lines(target)) == 1


def test_a_file_moved_away_by_someone_else_is_reopened(tmp_path):
    """After an outside rotation (mv), the next batch goes to a new file at the path."""
    target = tmp_path / "all.jsonl"
    sink = opened(JsonlSink(target))
    sink.write([record("kern.info", "before")])
    target.rename(tmp_path / "moved.jsonl")
    sink.write([record("kern.info", "after")])
    sink.close()
    assert [r["message"] for r in lines(tmp_path / "moved.jsonl")] == ["before"]
    assert [r["message"] for r in lines(target)] == ["after"]


def test_two_sinks_on_one_file_rotate_it_once(tmp_path):
    """Two writers of one file (as two processes are) rotate it once, losing no line."""
    one = len(record().to_bytes()) + 1
    first = opened(JsonlSink(tmp_path / "all.jsonl", max_bytes=one * 2))
    second = opened(JsonlSink(tmp_path / "all.jsonl", max_bytes=one * 2))
    first.write([record("kern.info", "1")])
    second.write([record("kern.info", "2")])
    first.write([record("kern.info", "3")])  # full: first rotates
    second.write([record("kern.info", "4")])  # sees the move, reopens, does not rotate again
    first.close()
    second.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2
    messages = sorted(r["message"] for f in files for r in lines(f))
    assert messages == ["1", "2", "3", "4"]
    assert sorted(r["message"] for r in lines(tmp_path / "all.jsonl")) == ["3", "4"]


@pytest.mark.parametrize(("policy", "expected"), [("always", 3), ("batch", 1), ("never", 0)])
def test_fsync_policy_sets_how_often_the_file_is_synced(tmp_path, monkeypatch, policy, expected):
    """always: once per record; batch: once per batch; never: not at all."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(jsonl.os, "fsync", counting)
    sink = opened(JsonlSink(tmp_path / "all.jsonl", fsync=policy))
    sink.write([record(), record(), record()])
    sink.close()
    assert len(calls) == expected


def test_fsync_batch_syncs_each_file_of_a_template_once(tmp_path, monkeypatch):
    """A batch over two files of a template gets one fsync per file."""
    calls: list[int] = []
    monkeypatch.setattr(jsonl.os, "fsync", calls.append)
    sink = opened(JsonlSink(tmp_path / "{facility}.jsonl", fsync="batch"))
    sink.write([record("kern.info"), record("auth.info"), record("kern.info")])
    sink.close()
    assert len(calls) == 2


def test_a_failing_file_fails_only_the_records_meant_for_it(tmp_path):
    """With a template, a file that cannot be written does not fail the other files' records."""
    (tmp_path / "auth").write_text("a file where a directory should be", encoding="utf-8")
    sink = opened(JsonlSink(tmp_path / "{facility}" / "all.jsonl"))
    results = sink.write([record("kern.info"), record("auth.info")])
    sink.close()
    assert results[0] is None
    assert isinstance(results[1], OSError)
    assert len(lines(tmp_path / "kern" / "all.jsonl")) == 1


def test_writing_before_open_is_a_config_error(tmp_path):
    """A sink must be opened first; the error says so."""
    with pytest.raises(ConfigError, match="before open"):
        JsonlSink(tmp_path / "x.jsonl").write([record()])
