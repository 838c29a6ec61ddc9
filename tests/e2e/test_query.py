"""``logbus query`` in real subprocesses over sqlite and postgres archives filled by the sinks."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from logbus.record import LogRecord
from logbus.sinks import load_sink
from tests.e2e.support import connection_args, emit, free_port, on_tty, one_error_line
from tests.integration.test_sinks_postgres import pg_table
from tests.support import wait_until

__all__ = ["pg_table"]  # a fixture, shared with the integration tests

T0 = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)
ROWS = [
    ("kern.critical", "disk /dev/sda1 failed", "web1", "kernel"),
    ("auth.info", "login ok for alice", "web2", "sshd"),
    ("kern.warning", "temperature high", "web1", "kernel"),
    ("mail.error", "queue stuck", "mx1", "postfix"),
    ("auth.notice", "login failed for bob", "web2", "sshd"),
    ("kern.emergency", "disk /dev/sdb1 failed", "db1", "kernel"),
]
RECORDS = [
    LogRecord.from_key(key, message, ts=T0 + timedelta(minutes=i), host=host, app=app)
    for i, (key, message, host, app) in enumerate(ROWS)
]


def fill(spec: str) -> str:
    """Write RECORDS through the sink ``spec`` names; return the spec (also the archive's)."""
    sink = load_sink(spec)
    sink.open()
    assert sink.write(RECORDS) == [None] * len(RECORDS)
    sink.close()
    return spec


@pytest.fixture
def sqlite_archive(tmp_path: Path) -> str:
    """A sqlite archive holding RECORDS."""
    return fill(f"sqlite:{tmp_path / 'archive.db'}")


@pytest.fixture
def postgres_archive(postgres_url: str, pg_table: str) -> str:
    """A postgres archive (a table of this test's) holding RECORDS."""
    return fill(f"postgres:{postgres_url}?table={pg_table}")


def messages(stdout: str) -> list[str]:
    """The messages of JSON lines output."""
    return [json.loads(line)["message"] for line in stdout.splitlines()]


def test_filters_select_records_and_pipes_get_json_lines(logbus, sqlite_archive):
    """--facility, --min-severity and --host combine; piped output is one record per line."""
    done = logbus(
        "query", "--archive", sqlite_archive,
        "--facility", "kern", "--min-severity", "critical", "--host", "web1", "--host", "db1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["message"] for r in lines] == ["disk /dev/sdb1 failed", "disk /dev/sda1 failed"]
    assert lines[1] == json.loads(RECORDS[0].to_bytes())


def test_severity_is_exact_and_repeatable(logbus, sqlite_archive):
    """--severity info --severity notice finds those two levels only."""
    done = logbus("query", "--archive", sqlite_archive, "-s", "info", "-s", "notice")
    assert done.returncode == 0, done.stderr
    assert messages(done.stdout) == ["login failed for bob", "login ok for alice"]


def test_time_window_grep_reverse_and_limit(logbus, sqlite_archive):
    """--since/--until bound the window, --grep the message, --reverse and --limit the order."""
    done = logbus(
        "query", "--archive", sqlite_archive, "--json",
        "--since", "2025-01-02T12:01:00Z", "--until", "2025-01-02T13:04:00+01:00",
        "--grep", "e", "--reverse", "--limit", "2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert messages(done.stdout) == ["login ok for alice", "temperature high"]
    assert "--limit" in done.stderr


def test_a_relative_since_that_excludes_everything_finds_nothing(logbus, sqlite_archive):
    """--since 15m over records from 2025 gives no output and exit status 0."""
    done = logbus("query", "--archive", sqlite_archive, "--since", "15m")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_the_archive_comes_from_logbus_archive(logbus, sqlite_archive):
    """Without --archive, $LOGBUS_ARCHIVE names it."""
    done = logbus("query", "--app", "postfix", env={"LOGBUS_ARCHIVE": sqlite_archive})
    assert done.returncode == 0, done.stderr
    assert messages(done.stdout) == ["queue stuck"]


def test_a_terminal_gets_a_table(sqlite_archive):
    """On a TTY: a header line, then one aligned row per record, newest first."""
    code, screen = on_tty(["query", "--archive", sqlite_archive, "--app", "sshd"], {})
    assert code == 0
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen.replace("\r", ""))  # colours aside
    rows = [line for line in plain.splitlines() if line.strip()]
    assert rows[0].split() == ["TIME", "HOST", "APP", "KEY", "MESSAGE"]
    assert "auth.notice" in rows[1] and rows[1].rstrip().endswith("login failed for bob")
    assert rows[1].index("login failed") == rows[0].index("MESSAGE")
    assert "2025-01-02T12:01:00.000000Z" in rows[2] and "web2" in rows[2]
    assert len(rows) == 3


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--since", "yesterday", "--since 'yesterday' is neither an RFC 3339 time"),
        ("--until", "12:00", "--until '12:00'"),
        ("--severity", "loud", "unknown severity 'loud'"),
        ("--min-severity", "9", "unknown severity '9'"),
        ("--facility", "Kern", "contains uppercase letters"),
    ],
)
def test_bad_input_is_exit_status_65_with_one_line(logbus, sqlite_archive, option, value, said):
    """An unparsable time, severity or facility: 65 and one line saying which."""
    done = logbus("query", "--archive", sqlite_archive, option, value)
    assert done.returncode == 65
    assert said in one_error_line(done.stderr)


def test_a_window_that_ends_before_it_starts_is_bad_input(logbus, sqlite_archive):
    """--since after --until is exit status 65."""
    done = logbus("query", "--archive", sqlite_archive, "--since", "1h", "--until", "2h")
    assert done.returncode == 65
    assert "not before" in one_error_line(done.stderr)


def test_no_archive_is_a_configuration_error(logbus):
    """Neither --archive nor $LOGBUS_ARCHIVE: 78, saying how to give one."""
    done = logbus("query", env={"LOGBUS_ARCHIVE": ""})
    assert done.returncode == 78
    assert "LOGBUS_ARCHIVE" in one_error_line(done.stderr)


def test_an_archive_that_is_not_a_database_is_a_configuration_error(logbus, tmp_path):
    """--archive jsonl:PATH is 78: only sqlite and postgres archives can be searched."""
    done = logbus("query", "--archive", f"jsonl:{tmp_path / 'x.jsonl'}")
    assert done.returncode == 78
    assert "sqlite:PATH or postgres:URL" in one_error_line(done.stderr)


def test_a_missing_table_is_a_configuration_error(logbus, sqlite_archive):
    """?table=nope is 78 naming the table."""
    done = logbus("query", "--archive", sqlite_archive + "?table=nope")
    assert done.returncode == 78
    assert "no table 'nope'" in one_error_line(done.stderr)


def test_a_missing_sqlite_file_is_unavailable(logbus, tmp_path):
    """A sqlite path with no database: 69."""
    done = logbus("query", "--archive", f"sqlite:{tmp_path / 'none.db'}")
    assert done.returncode == 69
    assert "none.db" in one_error_line(done.stderr)


def test_an_unreachable_postgres_is_unavailable_and_its_password_hidden(logbus):
    """A closed port: 69, one line, and the URL's password never shown."""
    url = f"postgresql://postgres:s3cr3t-pw@127.0.0.1:{free_port()}/test"
    done = logbus("query", "--archive", f"postgres:{url}")
    assert done.returncode == 69
    line = one_error_line(done.stderr)
    assert "s3cr3t-pw" not in line and "postgres:***@" in line


def test_help_shows_examples_and_exit_statuses(logbus):
    """--help lists examples and the exit statuses."""
    done = logbus("query", "--help")
    assert done.returncode == 0
    assert "logbus query --archive sqlite:" in done.stdout
    assert "69  the archive cannot be opened or reached" in done.stdout


def test_postgres_archive_filters_like_sqlite(logbus, postgres_archive, sqlite_archive):
    """The same query over both archives gives the same JSON lines."""
    query = ["--min-severity", "warning", "--grep", "disk", "--since", "2025-01-01T00:00:00Z"]
    from_pg = logbus("query", "--archive", postgres_archive, "--json", *query)
    from_sqlite = logbus("query", "--archive", sqlite_archive, "--json", *query)
    assert from_pg.returncode == 0, from_pg.stderr
    assert messages(from_pg.stdout) == ["disk /dev/sdb1 failed", "disk /dev/sda1 failed"]
    assert from_pg.stdout == from_sqlite.stdout


def test_postgres_archive_from_the_environment_with_a_bare_url(logbus, postgres_url, pg_table):
    """LOGBUS_ARCHIVE may be a bare postgresql:// URL (table as an option)."""
    fill(f"postgres:{postgres_url}?table={pg_table}")
    env = {"LOGBUS_ARCHIVE": f"{postgres_url}?table={pg_table}"}
    done = logbus("query", "--facility", "mail", env=env)
    assert done.returncode == 0, done.stderr
    assert messages(done.stdout) == ["queue stuck"]


def test_records_emitted_reach_the_archive_through_a_worker(logbus, amqp_url, deploy, tmp_path):
    """emit -> broker -> `logbus worker --sink sqlite:...` -> `logbus query` finds them."""
    deployment = deploy()
    archive = f"sqlite:{tmp_path / 'archive.db'}"
    for key, message in (("kern.critical", "disk failed"), ("auth.info", "login ok")):
        sent = emit(amqp_url, deployment, key, message)
        assert sent.returncode == 0, sent.stderr
    worker = subprocess.Popen(
        [sys.executable, "-m", "logbus", "worker", "--sink", archive,
         *connection_args(amqp_url, deployment)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:

        def both_stored() -> bool:
            found = logbus("query", "--archive", archive, "--json")
            return found.returncode == 0 and len(found.stdout.splitlines()) == 2

        wait_until(both_stored, 30, "the worker to store both records")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    done = logbus("query", "--archive", archive, "--facility", "kern")
    assert done.returncode == 0, done.stderr
    assert messages(done.stdout) == ["disk failed"]
