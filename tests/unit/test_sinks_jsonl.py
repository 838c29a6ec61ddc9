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


def test_a_template_whose_fixed_directory_is_missing_gets_it_created_at_open(tmp_path):
    """The directory before the first placeholder is created (0750) on first run."""
    sink = JsonlSink(tmp_path / "missing" / "deeper" / "{facility}.jsonl")
    sink.open()
    sink.close()
    assert oct((tmp_path / "missing" / "deeper").stat().st_mode & 0o777) == "0o750"


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


# -- de-duplication of redeliveries -----------------------------------------------------


def ids(path: Path) -> list[str]:
    """The ids of the records in a jsonl file, skipping lines that are not records."""
    found = []
    for line in path.read_bytes().splitlines():
        try:
            found.append(json.loads(line)["id"])
        except ValueError:
            continue
    return found


def batch_of(count: int, key: str = "kern.info") -> list[LogRecord]:
    """``count`` records under ``key``, messages numbered from 0."""
    return [record(key, str(i)) for i in range(count)]


def test_a_redelivered_batch_found_at_the_end_of_the_file_is_skipped(tmp_path):
    """A restarted sink skips the records it finds in the file's tail, and reports them stored."""
    target = tmp_path / "all.jsonl"
    written = batch_of(5)
    first = opened(JsonlSink(target))
    first.write(written)  # then the worker dies before its acks reach the broker
    later = batch_of(2)
    second = opened(JsonlSink(target))
    assert second.write(written[3:] + later) == [None] * 4
    second.close()
    assert ids(target) == [r.id for r in written + later]


def test_the_tail_read_at_open_covers_only_the_window(tmp_path):
    """With dedupe_window=3, the last three lines are known and older ones are written again."""
    target = tmp_path / "all.jsonl"
    written = batch_of(10)
    opened(JsonlSink(target)).write(written)
    sink = opened(JsonlSink(target, dedupe_window=3))
    assert sink.write([written[0], *written[7:]]) == [None] * 4
    sink.close()
    assert ids(target) == [r.id for r in [*written, written[0]]]


def test_the_window_forgets_the_oldest_records_it_wrote(tmp_path):
    """After dedupe_window more records, a record written earlier is no longer recognised."""
    target = tmp_path / "all.jsonl"
    sink = opened(JsonlSink(target, dedupe_window=2))
    early, *rest = batch_of(3)
    sink.write([early])
    sink.write([early])
    sink.write(rest)
    sink.write([early])
    sink.close()
    assert ids(target) == [r.id for r in [early, *rest, early]]


def test_dedupe_false_writes_a_redelivered_batch_again(tmp_path):
    """dedupe=false (from the spec) appends whatever it is given, as before."""
    target = tmp_path / "all.jsonl"
    written = batch_of(3)
    opened(load_sink(f"jsonl:{target}")).write(written)
    sink = opened(load_sink(f"jsonl:{target}?dedupe=false"))
    sink.write(written)
    sink.close()
    assert ids(target) == [r.id for r in written + written]


def test_the_window_defaults_to_sixteen_batches_and_at_least_2000_lines(tmp_path):
    """dedupe_window defaults to max(16 x max_batch, 2000); a spec may set it."""
    assert load_sink(f"jsonl:{tmp_path / 'a'}").dedupe_window == 2000
    assert load_sink(f"jsonl:{tmp_path / 'a'}?max_batch=500").dedupe_window == 8000
    assert load_sink(f"jsonl:{tmp_path / 'a'}?dedupe_window=50").dedupe_window == 50


def test_a_record_twice_in_one_batch_is_written_once(tmp_path):
    """Two records with the same id in one batch make one line; both count as stored."""
    target = tmp_path / "all.jsonl"
    one = record()
    sink = opened(JsonlSink(target))
    assert sink.write([one, one]) == [None, None]
    sink.close()
    assert ids(target) == [one.id]


def test_lines_another_writer_appended_are_known_before_writing(tmp_path):
    """A batch that another process wrote to the shared file, redelivered here, is skipped."""
    target = tmp_path / "all.jsonl"
    here, there = opened(JsonlSink(target)), opened(JsonlSink(target))
    mine, written = record("kern.info", "mine"), batch_of(4)
    here.write([mine])
    there.write(written)  # the other worker dies before acking; the broker gives them to us
    assert here.write(written) == [None] * 4
    here.close()
    there.close()
    assert ids(target) == [r.id for r in [mine, *written]]


def test_a_torn_last_line_gets_its_end_and_does_not_count_as_stored(tmp_path):
    """A line cut short by a kill is ended; its record, redelivered, is written whole after it."""
    target = tmp_path / "all.jsonl"
    whole, torn = record("kern.info", "whole"), record("kern.info", "torn")
    target.write_bytes(whole.to_bytes() + b"\n" + torn.to_bytes()[:40])
    sink = opened(JsonlSink(target))
    assert sink.write([whole, torn]) == [None, None]
    sink.close()
    raw = target.read_bytes().splitlines()
    assert raw[1] == torn.to_bytes()[:40]
    assert [json.loads(line)["id"] for line in (raw[0], raw[2])] == [whole.id, torn.id]
    assert len(raw) == 3


def test_a_torn_line_left_by_another_writer_is_ended_before_appending(tmp_path):
    """A writer that died mid-line while this sink had the file open: the next line starts anew."""
    target = tmp_path / "all.jsonl"
    sink = opened(JsonlSink(target))
    with open(target, "ab") as dying:
        dying.write(record().to_bytes()[:30])
    after = record("kern.info", "after")
    sink.write([after])
    sink.close()
    assert target.read_bytes().endswith(b"\n" + after.to_bytes() + b"\n")


def test_a_write_that_failed_halfway_is_completed_by_the_retry(tmp_path, monkeypatch):
    """A full disk halfway through a batch: the retry writes, on new lines, what is not whole."""
    target = tmp_path / "all.jsonl"
    sink = opened(JsonlSink(target))
    real = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        real(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    written = batch_of(3)
    monkeypatch.setattr(jsonl.os, "write", half_then_full)
    assert all(isinstance(result, OSError) for result in sink.write(written))
    monkeypatch.setattr(jsonl.os, "write", real)
    assert sink.write(written) == [None] * 3  # the worker's retry
    sink.close()
    assert len(target.read_bytes().splitlines()) == 4  # 0, half of 1 (ended), 1, 2
    assert ids(target) == [r.id for r in written]


def test_a_template_reads_the_tail_of_each_file_when_first_opened(tmp_path):
    """Per facility files: a record in kern.jsonl's tail is skipped, a new one appended."""
    old_kern, old_auth = record("kern.info", "old"), record("auth.info", "old")
    (tmp_path / "kern.jsonl").write_bytes(old_kern.to_bytes() + b"\n")
    (tmp_path / "auth.jsonl").write_bytes(old_auth.to_bytes() + b"\n")
    new = record("kern.info", "new")
    sink = opened(JsonlSink(tmp_path / "{facility}.jsonl"))
    assert sink.write([old_kern, new, old_auth]) == [None] * 3
    sink.close()
    assert ids(tmp_path / "kern.jsonl") == [old_kern.id, new.id]
    assert ids(tmp_path / "auth.jsonl") == [old_auth.id]


def test_a_file_closed_for_room_forgets_its_ids_and_reads_them_again(tmp_path, monkeypatch):
    """Beyond MAX_OPEN_FILES a file and its ids are dropped; reopened, its tail is read again."""
    monkeypatch.setattr(jsonl, "MAX_OPEN_FILES", 1)
    sink = opened(JsonlSink(tmp_path / "{facility}.jsonl"))
    kern = record("kern.info")
    sink.write([kern])
    sink.write([record("auth.info")])  # kern.jsonl is closed and forgotten
    assert list(sink._windows) == [tmp_path / "auth.jsonl"]
    sink.write([kern])
    sink.close()
    assert ids(tmp_path / "kern.jsonl") == [kern.id]


def test_rotation_keeps_what_the_window_knows(tmp_path):
    """Records moved to a rotated file by size are still recognised when redelivered."""
    target = tmp_path / "all.jsonl"
    first, second = record("kern.info", "1"), record("kern.info", "2")
    sink = opened(JsonlSink(target, max_bytes=len(first.to_bytes()) + 1))
    sink.write([first])
    sink.write([second])  # rotates: first is in all.<time>.jsonl now
    assert sink.write([first, second]) == [None, None]
    sink.close()
    assert ids(target) == [second.id]
    assert sum(len(ids(f)) for f in tmp_path.iterdir()) == 2


def test_a_restart_just_after_a_rotation_reads_the_rotated_file_too(tmp_path):
    """The new file holds fewer lines than the window: the last rotated file's tail counts."""
    clock = Clock(datetime(2025, 1, 2, 3, 59, tzinfo=UTC))
    target = tmp_path / "all.jsonl"
    before, after = record("kern.info", "at three"), record("kern.info", "at four")
    sink = opened(JsonlSink(target, rotate="hourly", clock=clock))
    sink.write([before])
    clock.now += timedelta(minutes=2)
    sink.write([after])  # the worker dies; neither was acked
    os.utime(target, (clock.now.timestamp(), clock.now.timestamp()))  # as the clock says
    restarted = opened(JsonlSink(target, rotate="hourly", clock=clock))
    assert restarted.write([before, after]) == [None, None]
    restarted.close()
    assert ids(tmp_path / "all.2025-01-02T03.jsonl") == [before.id]
    assert ids(target) == [after.id]


def test_only_files_named_as_rotations_of_the_path_are_read(tmp_path):
    """all.errors.jsonl is another file, not a rotation of all.jsonl: its ids do not count."""
    elsewhere = record()
    other = tmp_path / "all.errors.jsonl"
    other.write_bytes(elsewhere.to_bytes() + b"\n")
    later = datetime.now(UTC).timestamp() + 3600  # the newest file there
    os.utime(other, (later, later))
    sink = opened(JsonlSink(tmp_path / "all.jsonl"))
    sink.write([elsewhere])
    sink.close()
    assert ids(tmp_path / "all.jsonl") == [elsewhere.id]
