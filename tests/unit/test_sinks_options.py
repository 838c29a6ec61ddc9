"""Sink options: NAME:ARG?KEY=VALUE specs, [sink] tables, batch hints and their errors."""

from __future__ import annotations

import importlib
from importlib.metadata import EntryPoint

import pytest

import logbus.sinks as sinks
from logbus.errors import ConfigError
from logbus.sinks import BUILTIN_SINKS, Sink, load_sink, load_sink_table, parse_spec
from logbus.sinks.console import ConsoleSink
from logbus.sinks.jsonl import JsonlSink
from logbus.sinks.postgres import PostgresSink
from logbus.sinks.sqlite import SqliteSink
from logbus.sinks.webhook import WebhookSink


def test_parse_spec_keeps_options_that_follow_a_name_without_argument():
    """'console?max_batch=5' is the console sink with the options still attached."""
    assert parse_spec("console?max_batch=5") == ("console", "?max_batch=5")
    assert parse_spec("jsonl:/x.jsonl?fsync=always") == ("jsonl", "/x.jsonl?fsync=always")


def test_spec_options_set_the_batch_hints():
    """max_batch and max_wait in the query string become the sink's attributes."""
    sink = load_sink("sqlite:/tmp/archive.db?max_batch=250&max_wait=0.5")
    assert (sink.max_batch, sink.max_wait) == (250, 0.5)


def test_every_builtin_sink_carries_batch_hints():
    """Each built-in has max_batch and max_wait, the names the worker reads."""
    specs = {
        "console": "console",
        "jsonl": "jsonl:/tmp/x.jsonl",
        "sqlite": "sqlite:/tmp/x.db",
        "postgres": "postgres:postgresql://127.0.0.1/test",
        "webhook": "webhook:http://127.0.0.1:9/hook",
    }
    assert set(specs) == set(BUILTIN_SINKS)
    for name, spec in specs.items():
        sink = load_sink(spec)
        assert isinstance(sink.max_batch, int) and sink.max_batch >= 1, name
        assert isinstance(sink.max_wait, float) and sink.max_wait >= 0, name
        assert isinstance(sink, Sink), name


def test_console_takes_options_but_no_argument():
    """'console?max_batch=10' is fine; 'console:x' still says console takes no argument."""
    assert load_sink("console?max_batch=10").max_batch == 10
    with pytest.raises(ConfigError, match="takes no argument"):
        load_sink("console:x?max_batch=10")


def test_an_unknown_spec_option_names_it_and_lists_the_sinks_options():
    """A typo in an option gets 'did you mean' and the sink's option list."""
    with pytest.raises(ConfigError) as caught:
        load_sink("jsonl:/tmp/x.jsonl?fsnyc=always")
    message = str(caught.value)
    assert "sink jsonl has no option 'fsnyc'" in message
    assert "did you mean 'fsync'?" in message
    assert message.endswith(
        "its options: path, max_bytes, rotate, fsync, dedupe, dedupe_window, max_batch, max_wait"
    )


def test_a_bad_option_value_names_the_option_and_the_value():
    """fsync=sometimes is one ConfigError naming fsync and what it got."""
    with pytest.raises(ConfigError, match=r"option 'fsync'.*'sometimes'"):
        load_sink("jsonl:/tmp/x.jsonl?fsync=sometimes")


def test_an_option_without_a_value_is_a_config_error():
    """'?fsync' alone asks for fsync=VALUE."""
    with pytest.raises(ConfigError, match="fsync=VALUE"):
        load_sink("jsonl:/tmp/x.jsonl?fsync")


def test_an_option_given_twice_is_a_config_error():
    """The same key twice in a spec is refused rather than one silently winning."""
    with pytest.raises(ConfigError, match="given twice"):
        load_sink("sqlite:/tmp/x.db?table=a&table=b")


def test_spec_option_values_are_url_decoded():
    """%-escapes in a value are decoded, so a value can hold '&'."""
    sink = load_sink("sqlite:/tmp/x.db?table=a%5Fb")
    assert isinstance(sink, SqliteSink)
    assert sink.table == "a_b"


def test_max_bytes_takes_binary_units():
    """max_bytes=100M is 100 MiB; 64k is 64 KiB."""
    assert load_sink("jsonl:/tmp/x.jsonl?max_bytes=100M").max_bytes == 100 * 1024**2
    assert load_sink("jsonl:/tmp/x.jsonl?max_bytes=64k").max_bytes == 64 * 1024


def test_max_bytes_that_is_not_a_size_is_a_config_error():
    """max_bytes=lots says how to write a size."""
    with pytest.raises(ConfigError, match="64k, 100M, 1G"):
        load_sink("jsonl:/tmp/x.jsonl?max_bytes=lots")


def test_a_url_argument_keeps_query_keys_that_are_not_the_sinks_options():
    """postgres:URL?sslmode=disable&table=t takes table and leaves sslmode in the URL."""
    sink = load_sink("postgres:postgresql://127.0.0.1/test?sslmode=disable&table=t&max_batch=9")
    assert isinstance(sink, PostgresSink)
    assert sink.url == "postgresql://127.0.0.1/test?sslmode=disable"
    assert (sink.table, sink.max_batch) == ("t", 9)


def test_a_postgres_url_with_an_unknown_libpq_key_is_a_config_error():
    """A key that is neither a sink option nor libpq's fails at load, not at connect."""
    with pytest.raises(ConfigError, match="option 'url'"):
        load_sink("postgres:postgresql://127.0.0.1/test?tabel=x")


def test_the_webhook_keeps_its_endpoints_own_query():
    """webhook:URL?token=abc&body=array keeps token in the URL and takes body."""
    sink = load_sink("webhook:https://hooks.example.com/in?token=abc&body=array")
    assert isinstance(sink, WebhookSink)
    assert sink.url == "https://hooks.example.com/in?token=abc"
    assert sink.body == "array"


def test_a_webhook_url_that_is_not_http_is_a_config_error():
    """webhook:ftp://x is refused at load, naming the url option."""
    with pytest.raises(ConfigError, match=r"option 'url'.*http"):
        load_sink("webhook:ftp://files.example.com/in")


def test_a_table_builds_the_same_sink_as_the_spec():
    """{type = "sqlite", path, max_batch} equals 'sqlite:PATH?max_batch=N'."""
    sink = load_sink_table({"type": "sqlite", "path": "/tmp/a.db", "max_batch": 42})
    spec = load_sink("sqlite:/tmp/a.db?max_batch=42")
    assert isinstance(sink, SqliteSink) and isinstance(spec, SqliteSink)
    assert (sink.path, sink.table, sink.max_batch) == (spec.path, spec.table, spec.max_batch)


def test_a_table_passes_typed_values_through():
    """TOML values keep their types: headers as a table, numbers as numbers."""
    sink = load_sink_table(
        {
            "type": "webhook",
            "url": "https://hooks.example.com/in",
            "headers": {"Authorization": "Bearer t0k3n"},
            "timeout": 2.5,
        }
    )
    assert isinstance(sink, WebhookSink)
    assert sink.timeout == 2.5
    assert sink._headers["Authorization"] == "Bearer t0k3n"


def test_a_table_with_an_unknown_option_names_it_and_the_known_ones():
    """An unknown key in [sink] is a ConfigError listing the sink's options."""
    with pytest.raises(ConfigError) as caught:
        load_sink_table({"type": "sqlite", "path": "/tmp/a.db", "tabel": "x"})
    message = str(caught.value)
    assert "sink sqlite has no option 'tabel' (did you mean 'table'?)" in message
    assert "its options: " in message and "table" in message and "timeout" in message


def test_a_table_without_type_is_a_config_error():
    """A [sink] table must say type = NAME."""
    with pytest.raises(ConfigError, match="needs type = NAME"):
        load_sink_table({"path": "/tmp/a.db"})


def test_a_table_with_an_unknown_type_suggests_the_closest(monkeypatch):
    """type = "sqlit" gets the same 'did you mean' as a spec."""
    monkeypatch.setattr(sinks, "entry_points", lambda group: [])
    with pytest.raises(ConfigError, match="did you mean 'sqlite'"):
        load_sink_table({"type": "sqlit", "path": "/tmp/a.db"})


def test_a_table_missing_the_main_option_says_which():
    """{type = "jsonl"} without path names 'path'."""
    with pytest.raises(ConfigError, match="needs 'path'"):
        load_sink_table({"type": "jsonl"})


def test_a_table_for_a_plain_factory_plugin_takes_arg_only(monkeypatch):
    """A plugin that is a plain factory gets 'arg'; any other key is refused."""
    plugin = EntryPoint(
        name="memo", value="tests.unit.test_sinks_options:memo_factory", group="logbus.sinks"
    )
    monkeypatch.setattr(sinks, "entry_points", lambda group: [plugin])
    sink = load_sink_table({"type": "memo", "arg": "hello"})
    assert isinstance(sink, ConsoleSink)
    assert seen == ["hello"]
    with pytest.raises(ConfigError, match="only option is 'arg'"):
        load_sink_table({"type": "memo", "colour": "red"})


seen: list[str | None] = []


def memo_factory(arg: str | None) -> ConsoleSink:
    """A plain-factory plugin for the table test: remembers its argument."""
    seen.append(arg)
    return ConsoleSink()


def test_a_jsonl_template_with_an_unknown_placeholder_is_a_config_error():
    """Only {facility} and {severity} may appear in a path template."""
    with pytest.raises(ConfigError, match=r"\{host\}"):
        load_sink("jsonl:/var/log/{host}.jsonl")


def test_jsonl_loaded_from_a_spec_has_its_options():
    """rotate, fsync and max_bytes from the spec reach the sink."""
    sink = load_sink("jsonl:/tmp/x.jsonl?rotate=hourly&fsync=batch&max_bytes=1G")
    assert isinstance(sink, JsonlSink)
    assert (sink.rotate, sink.fsync, sink.max_bytes) == ("hourly", "batch", 1024**3)


def test_a_table_name_that_is_not_an_identifier_is_a_config_error():
    """table=logs;drop is refused: table names are identifiers only."""
    with pytest.raises(ConfigError, match="not a name"):
        load_sink("sqlite:/tmp/a.db?table=logs%3Bdrop")


@pytest.mark.parametrize(
    "module",
    [
        "logbus.sinks",
        "logbus.sinks.console",
        "logbus.sinks.jsonl",
        "logbus.sinks.sqlite",
        "logbus.sinks.postgres",
        "logbus.sinks.webhook",
        "logbus.archive",
    ],
)
def test_public_names_exist(module):
    """Every name in a sink module's __all__ exists."""
    imported = importlib.import_module(module)
    for name in imported.__all__:
        assert hasattr(imported, name), f"{module}.{name}"
