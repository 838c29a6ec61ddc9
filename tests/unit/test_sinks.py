"""Sinks: loading by NAME[:ARG], the console and jsonl built-ins, the recoverable rule."""

from __future__ import annotations

import io
import json
import threading
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import logbus.sinks as sinks
from logbus.errors import BrokerUnavailable, ConfigError, DecodeError
from logbus.record import LogRecord, decode
from logbus.sinks import Sink, is_recoverable, load_sink, parse_spec
from logbus.sinks.console import ConsoleSink, format_line
from logbus.sinks.jsonl import JsonlSink


def record(message: str = "disk /dev/sda1 failed", **kw: object) -> LogRecord:
    """A record with fixed host, app and pid, so formatted output is predictable."""
    base: dict[str, object] = {"host": "web1", "app": "kernel", "pid": 42}
    return LogRecord.from_key("kern.critical", message, **{**base, **kw})


def test_parse_spec_splits_name_and_argument_at_the_first_colon():
    """'jsonl:/tmp/a:b' is the jsonl sink with the path '/tmp/a:b'; no colon means no argument."""
    assert parse_spec("jsonl:/tmp/a:b.jsonl") == ("jsonl", "/tmp/a:b.jsonl")
    assert parse_spec("console") == ("console", None)
    assert parse_spec(" Console ") == ("console", None)
    assert parse_spec("jsonl:") == ("jsonl", "")


def test_parse_spec_refuses_a_spec_without_a_name():
    """':/tmp/x' names no sink: a ConfigError saying how to write one."""
    with pytest.raises(ConfigError, match="NAME"):
        parse_spec(":/tmp/x")


def test_load_sink_resolves_jsonl_with_its_path(tmp_path):
    """'jsonl:PATH' gives a JsonlSink appending to PATH."""
    target = tmp_path / "out.jsonl"
    sink = load_sink(f"jsonl:{target}")
    assert isinstance(sink, JsonlSink)
    assert sink.path == target


def test_load_sink_resolves_console():
    """'console' gives a ConsoleSink, which satisfies the Sink Protocol."""
    sink = load_sink("console")
    assert isinstance(sink, ConsoleSink)
    assert isinstance(sink, Sink)


def test_jsonl_without_a_path_is_a_config_error():
    """'jsonl' alone says a path is needed."""
    with pytest.raises(ConfigError, match="jsonl:PATH"):
        load_sink("jsonl")


def test_console_with_an_argument_is_a_config_error():
    """'console:x' says console takes no argument."""
    with pytest.raises(ConfigError, match="no argument"):
        load_sink("console:x")


def test_unknown_sink_suggests_the_closest_and_lists_the_known(monkeypatch):
    """A typo gets 'did you mean' and the list of known sinks."""
    monkeypatch.setattr(sinks, "entry_points", lambda group: [])
    with pytest.raises(ConfigError) as caught:
        load_sink("jsnol:/tmp/x")
    message = str(caught.value)
    assert "unknown sink 'jsnol'" in message
    assert "did you mean 'jsonl'?" in message
    assert "console, jsonl" in message


def test_unknown_sink_without_a_close_match_makes_no_suggestion(monkeypatch):
    """A name like no other lists the known sinks without a guess."""
    monkeypatch.setattr(sinks, "entry_points", lambda group: [])
    with pytest.raises(ConfigError) as caught:
        load_sink("elasticsearch")
    assert "did you mean" not in str(caught.value)
    assert "known sinks: console, jsonl, postgres, sqlite, webhook" in str(caught.value)


def test_an_entry_point_plugin_is_loaded_by_name_with_its_argument(monkeypatch):
    """A 'logbus.sinks' entry point is called with the argument and its sink returned."""
    plugin = EntryPoint(name="memo", value="tests.unit.test_sinks:MemoSink", group="logbus.sinks")
    seen: list[str] = []

    def fake(group: str) -> list[EntryPoint]:
        seen.append(group)
        return [plugin]

    monkeypatch.setattr(sinks, "entry_points", fake)
    sink = load_sink("memo:hello")
    assert isinstance(sink, MemoSink)
    assert sink.arg == "hello"
    assert seen == ["logbus.sinks"]
    assert "memo" in sinks.known_sinks()


def test_a_plugin_that_fails_to_import_is_a_config_error(monkeypatch):
    """A broken plugin is one ConfigError naming it, not an ImportError."""
    broken = EntryPoint(name="broken", value="no_such_module_xyz:Sink", group="logbus.sinks")
    monkeypatch.setattr(sinks, "entry_points", lambda group: [broken])
    with pytest.raises(ConfigError, match="sink plugin 'broken'"):
        load_sink("broken")


class MemoSink:
    """A plugin sink for the entry-point test: remembers its argument."""

    def __init__(self, arg: str | None) -> None:
        self.arg = arg

    def open(self) -> None:
        """Nothing to open."""

    def write(self, batch):
        """Store nothing, succeed."""
        return [None] * len(batch)

    def close(self) -> None:
        """Nothing to close."""


def test_jsonl_writes_one_valid_json_line_per_record(tmp_path):
    """Each record is one line holding exactly its wire JSON."""
    target = tmp_path / "out.jsonl"
    records = [record("one"), record("two\nlines", fields={"disk": "sda1"})]
    sink = JsonlSink(target)
    sink.open()
    assert sink.write(records[:1]) == [None]
    assert sink.write(records[1:]) == [None]
    sink.close()
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == [json.loads(r.to_bytes()) for r in records]
    assert [decode(line.encode()) for line in lines] == records


def test_jsonl_appends_to_what_the_file_already_holds(tmp_path):
    """Opening again keeps earlier lines: a restarted worker never truncates."""
    target = tmp_path / "out.jsonl"
    target.write_text('{"earlier": true}\n', encoding="utf-8")
    sink = JsonlSink(target)
    sink.open()
    sink.write([record()])
    sink.close()
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"earlier": true}'
    assert json.loads(lines[1])["message"] == "disk /dev/sda1 failed"


def test_jsonl_line_is_on_disk_before_write_returns(tmp_path):
    """A line is readable by another reader as soon as write returned (no buffering)."""
    target = tmp_path / "out.jsonl"
    sink = JsonlSink(target)
    sink.open()
    sink.write([record()])
    assert target.read_text(encoding="utf-8").count("\n") == 1
    sink.close()


def test_jsonl_lines_stay_whole_under_concurrent_writers(tmp_path):
    """Eight threads writing at once still produce only complete, valid lines."""
    target = tmp_path / "out.jsonl"
    sink = JsonlSink(target)
    sink.open()
    barrier = threading.Barrier(8)

    def write_many(n: int) -> None:
        barrier.wait()
        for i in range(50):
            sink.write([record(f"thread {n} record {i} " + "x" * 500)])

    threads = [threading.Thread(target=write_many, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.close()
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 400
    assert len({json.loads(line)["id"] for line in lines}) == 400


def test_jsonl_open_in_a_missing_directory_creates_it(tmp_path):
    """A path whose directory does not exist gets it (0750) at open, then the file."""
    sink = JsonlSink(tmp_path / "missing" / "out.jsonl")
    sink.open()
    sink.close()
    assert oct((tmp_path / "missing").stat().st_mode & 0o777) == "0o750"
    assert (tmp_path / "missing" / "out.jsonl").exists()


def test_jsonl_write_error_is_returned_per_record_not_raised():
    """An OSError while writing (a full disk: /dev/full) is each record's recoverable result."""
    sink = JsonlSink("/dev/full")
    sink.open()
    results = sink.write([record("a"), record("b")])
    sink.close()
    assert [type(r) for r in results] == [OSError, OSError]
    assert is_recoverable(results[0])


def test_console_prints_one_flushed_line_per_record():
    """The console sink writes one readable line per record and flushes it."""

    class Recorder(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    out = Recorder()
    sink = ConsoleSink(out)
    sink.open()
    batch = [record("disk failed"), record("again", fields={"disk": "sda1"})]
    assert sink.write(batch) == [None, None]
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" web1 kernel[42] kern.critical: disk failed")
    assert lines[1].endswith('kern.critical: again {"disk":"sda1"}')
    assert out.flushes >= 1
    sink.close()


def test_console_writes_to_stdout_by_default(capsys):
    """Without a stream the console sink prints to standard output."""
    sink = load_sink("console")
    sink.open()
    sink.write([record("to stdout")])
    sink.close()
    assert capsys.readouterr().out.endswith("kern.critical: to stdout\n")


def test_console_line_escapes_line_breaks_so_a_record_stays_one_line():
    """A message with newlines is printed on one line, with the breaks escaped."""
    line = format_line(record("first\nsecond\rthird\x1b[31m"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line
    assert line.endswith("first\\nsecond\\rthird\\x1b[31m")


def test_console_line_starts_with_the_rfc3339_timestamp():
    """The line begins with the record's UTC timestamp as on the wire."""
    r = record()
    assert format_line(r).startswith(json.loads(r.to_bytes())["ts"] + " ")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BrokerUnavailable("down"), True),
        (DecodeError("bad"), False),
        (ConnectionRefusedError("refused"), True),
        (TimeoutError("slow"), True),
        (ValueError("bug"), False),
    ],
)
def test_is_recoverable_follows_logbus_flags_and_os_errors(error, expected):
    """LogbusErrors carry their own flag; OS errors retry; other exceptions do not."""
    assert is_recoverable(error) is expected


def test_is_recoverable_honours_a_plugins_own_flag():
    """An exception with recoverable = True is retried without importing logbus."""

    class Throttled(Exception):
        recoverable = True

    assert is_recoverable(Throttled())


def test_builtin_sinks_do_not_need_an_entry_point_scan(monkeypatch):
    """Built-ins resolve without scanning installed packages (fast start-up)."""

    def boom(group: str) -> list[EntryPoint]:
        raise AssertionError("entry points scanned for a built-in sink")

    monkeypatch.setattr(sinks, "entry_points", boom)
    assert isinstance(load_sink(f"jsonl:{Path('x.jsonl')}"), JsonlSink)
