"""What the command line says when the configuration is wrong: one line, the right status.

A topology without ``[[emit]]`` (78, said before connecting), a
malformed URL on every command (78, password hidden), a malformed sink spec
(78) and a refused password (77, not 69: trying later will not help).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.support import one_error_line
from tests.e2e.test_emit import run_emit, with_password

NO_EMIT = '[[exchanges]]\nname = "h3-no-emit"\ntype = "topic"\n'
BAD_URLS = [
    "amqp://guest:s3cret@[::1",
    "amqp://guest:s3cret@localhost:99999/%2F",
    "amqp://guest:s3cret@localhost:port/%2F",
    "amqp://guest:guest@localhost:5672/%2F,amqp://guest:s3cret@[::1",
]
COMMANDS = [
    ["emit", "kern.info", "x"],
    ["subscribe", "--all"],
    ["worker", "--sink", "console"],
    ["topology", "apply"],
    ["topology", "diff"],
    ["status"],
    ["dlq", "list"],
    ["dlq", "replay", "--queue", "x"],
    ["demo", "--json"],
]


def run_logbus(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> Any:
    """``python -m logbus ARGS`` (the console script's main), completed."""
    return subprocess.run(
        [sys.executable, "-m", "logbus", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def no_emit(tmp_path: Path) -> Path:
    """A topology file with an exchange and no [[emit]] table."""
    path = tmp_path / "no-emit.toml"
    path.write_text(NO_EMIT)
    return path


def test_a_topology_without_emit_exits_78_before_connecting(amqp_url, no_emit):
    """One record, no [[emit]]: exit 78 naming the file and the fix, before any connection."""
    proc, imported = run_emit(["kern.info", "x", "--url", amqp_url, "--config", str(no_emit)])
    assert proc.returncode == 78
    error = one_error_line(proc.stderr)
    assert "no [[emit]] table" in error and "--exchange" in error and str(no_emit) in error
    assert "pika" not in imported  # said before connecting


def test_records_from_stdin_without_emit_exit_78(amqp_url, no_emit):
    """Lines on stdin, no [[emit]]: exit 78 too, nothing read as sent."""
    proc = run_logbus("emit", "kern.info", "-", "--url", amqp_url, "--config", str(no_emit),
                  stdin="one\ntwo\n")  # fmt: skip
    assert proc.returncode == 78
    assert "no [[emit]] table" in one_error_line(proc.stderr)


def test_exchange_makes_up_for_a_topology_without_emit(amqp_url, no_emit, admin):
    """--exchange names the target: the same topology then publishes (and is confirmed)."""
    admin.exchange_declare("h3-no-emit", "topic", durable=True)
    queue = admin.queue_declare("", exclusive=True).method.queue
    admin.queue_bind(queue, "h3-no-emit", "#")
    try:
        proc = run_logbus("emit", "kern.info", "x", "--exchange", "h3-no-emit", "--url", amqp_url,
                      "--config", str(no_emit))  # fmt: skip
        assert (proc.returncode, proc.stderr) == (0, "")
        assert admin.queue_declare(queue, passive=True).method.message_count == 1
    finally:
        admin.exchange_delete("h3-no-emit")


@pytest.mark.parametrize("url", BAD_URLS)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:2]))
def test_a_malformed_url_is_one_line_and_78_on_every_command(command, url):
    """--url that does not parse: one line naming it (password hidden), exit 78."""
    proc = run_logbus(*command, "--url", url)
    assert proc.returncode == 78, proc.stderr
    error = one_error_line(proc.stderr)
    assert "malformed URL" in error
    assert "s3cret" not in proc.stderr


def test_a_malformed_logbus_url_is_one_line_and_78():
    """LOGBUS_URL that does not parse: the same, and the line says where to fix it."""
    proc = run_logbus("subscribe", "--all", env={"LOGBUS_URL": BAD_URLS[0]})
    assert proc.returncode == 78
    assert "LOGBUS_URL" in one_error_line(proc.stderr)
    assert "s3cret" not in proc.stderr


@pytest.mark.parametrize(
    "spec",
    [
        "webhook:http://[::1",
        "webhook:http://localhost:99999/hook",
        "postgres:postgresql://logbus:s3cret@[::1/logs",
        "jsonl:/tmp/x.jsonl?rotate=sometimes",
        "sqlite:/tmp/x.db?max_batch=lots",
        "no-such-sink",
        ":nameless",
    ],
)
def test_a_malformed_sink_spec_is_one_line_and_78(spec):
    """--sink that does not parse: one line naming the sink, exit 78, no password."""
    proc = run_logbus("worker", "--sink", spec, "--url", "memory://")
    assert proc.returncode == 78, proc.stderr
    one_error_line(proc.stderr)
    assert "s3cret" not in proc.stderr


def test_a_wrong_password_exits_77_on_emit(amqp_url):
    """A refused login is 'permission denied' (77), not 'try later' (69); password hidden."""
    url = with_password(amqp_url, "not-this-s3cret")
    proc, _imported = run_emit(["kern.info", "x", "--url", url])
    assert proc.returncode == 77
    error = one_error_line(proc.stderr)
    assert "refused user 'guest'" in error
    assert "not-this-s3cret" not in proc.stderr


@pytest.mark.parametrize("command", [["subscribe", "--all"], ["topology", "apply"]])
def test_a_wrong_password_exits_77_on_other_commands(amqp_url, command):
    """Every command that logs in says 77 for refused credentials."""
    proc = run_logbus(*command, "--url", with_password(amqp_url, "not-this-s3cret"))
    assert proc.returncode == 77, proc.stderr
    one_error_line(proc.stderr)
    assert "not-this-s3cret" not in proc.stderr
