"""The ``logbus`` command's own options: --version, --debug and --log-level."""

from __future__ import annotations

from typing import Any

from logbus import __version__


def test_version_prints_the_version(logbus: Any) -> None:
    """`logbus --version` prints `logbus X.Y.Z` and exits 0."""
    proc = logbus("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"logbus {__version__}\n"


def test_help_documents_debug_and_log_level(logbus: Any) -> None:
    """`logbus --help` lists --debug, --log-level and its trace level."""
    proc = logbus("--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    for text in ("--version", "--debug", "--log-level", "trace"):
        assert text in proc.stdout, text


def test_debug_shows_logbus_events_but_not_the_drivers(logbus: Any, scratch: Any) -> None:
    """`--debug` on one emit shows logbus's events, not hundreds of pika lines."""
    proc = logbus("emit", "user.info", "hello", "--host", "h", "--debug", env=scratch.env)
    assert proc.returncode == 0, proc.stderr
    assert "amqp.connected" in proc.stderr
    assert "pika" not in proc.stderr


def test_log_level_trace_adds_the_drivers_debug(logbus: Any, scratch: Any) -> None:
    """`--log-level trace` is the explicit choice that shows the AMQP driver's debug output."""
    proc = logbus("emit", "user.info", "hello", "--log-level", "trace", env=scratch.env)
    assert proc.returncode == 0, proc.stderr
    assert "pika" in proc.stderr and "amqp.connected" in proc.stderr


def test_log_level_from_the_environment_reaches_the_one_record_emit(
    logbus: Any, scratch: Any
) -> None:
    """LOGBUS_LOG_LEVEL=info shows logbus's info events on a plain one-record emit too."""
    env = {**scratch.env, "LOGBUS_LOG_LEVEL": "info"}
    proc = logbus("emit", "user.info", "hello", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "amqp.connected" in proc.stderr and "pika" not in proc.stderr


def test_warning_level_is_quiet_on_success(logbus: Any, scratch: Any) -> None:
    """At the default level a successful emit prints nothing on stderr."""
    proc = logbus("emit", "user.info", "hello", "--log-level=warning", env=scratch.env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_an_unknown_log_level_is_a_usage_error(logbus: Any) -> None:
    """A level that is not one is exit 2 with one line naming the levels."""
    proc = logbus("status", "--log-level", "loud")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "trace, debug, info, warning, error" in proc.stderr


def test_a_bad_option_value_is_one_line_and_exit_2(logbus: Any) -> None:
    """A malformed option value (not a number, out of range, unknown) is one line, exit 2."""
    for args in (
        ("worker", "--concurrency", "0"),
        ("subscribe", "--timeout", "soon", "kern.*"),
        ("status", "--no-such-option"),
    ):
        proc = logbus(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, (args, proc.stderr)
        assert lines[0].startswith(f"logbus {args[0]}: error: ")
        assert f"see 'logbus {args[0]} --help'" in lines[0]
        assert "Traceback" not in proc.stderr
