"""The archive's queries (what `logbus query` runs), over a sqlite archive, and time parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logbus.archive import Query, open_archive, parse_time, search
from logbus.errors import ArchiveUnavailable, ConfigError, InputError
from logbus.record import LogRecord, Severity
from logbus.sinks.sqlite import SqliteSink

T0 = datetime(2025, 1, 2, 12, 0, tzinfo=UTC)


def at(minutes: int, key: str, message: str, host: str = "web1", app: str = "app") -> LogRecord:
    """A record ``minutes`` after T0."""
    return LogRecord.from_key(
        key, message, ts=T0 + timedelta(minutes=minutes), host=host, app=app, pid=None
    )


RECORDS = [
    at(0, "kern.critical", "disk /dev/sda1 failed", host="web1", app="kernel"),
    at(1, "auth.info", "login ok for alice", host="web2", app="sshd"),
    at(2, "kern.warning", "temperature high", host="web1", app="kernel"),
    at(3, "mail.error", "queue stuck", host="mx1", app="postfix"),
    at(4, "auth.notice", "login failed for bob", host="web2", app="sshd"),
    at(5, "kern.emergency", "disk /dev/sdb1 failed", host="db1", app="kernel"),
]


@pytest.fixture
def archive(tmp_path) -> str:
    """A sqlite archive holding RECORDS, written through the sink; its spec."""
    path = tmp_path / "archive.db"
    sink = SqliteSink(path)
    sink.open()
    assert sink.write(RECORDS) == [None] * len(RECORDS)
    sink.close()
    return f"sqlite:{path}"


def messages(spec: str, **query: object) -> list[str]:
    """The messages a query finds, in its order."""
    return [r.message for r in search(spec, Query(**query))]  # type: ignore[arg-type]


def test_without_filters_everything_comes_newest_first(archive):
    """The default order is newest first."""
    assert messages(archive) == [r.message for r in reversed(RECORDS)]


def test_oldest_first_reverses_the_order(archive):
    """oldest_first gives the records in time order."""
    assert messages(archive, oldest_first=True) == [r.message for r in RECORDS]


def test_limit_keeps_the_newest(archive):
    """limit=2 gives the two newest records."""
    assert messages(archive, limit=2) == ["disk /dev/sdb1 failed", "login failed for bob"]


def test_limit_with_oldest_first_keeps_the_oldest(archive):
    """limit=2 and oldest_first give the two oldest records."""
    assert messages(archive, limit=2, oldest_first=True) == [
        "disk /dev/sda1 failed",
        "login ok for alice",
    ]


def test_since_is_inclusive_and_until_exclusive(archive):
    """since=T0+1m, until=T0+3m gives the records at 1 and 2 minutes."""
    found = messages(archive, since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert found == ["temperature high", "login ok for alice"]


def test_facilities_match_any_of_those_given(archive):
    """facilities=(auth, mail) finds records of either."""
    assert messages(archive, facilities=("auth", "mail"), oldest_first=True) == [
        "login ok for alice",
        "queue stuck",
        "login failed for bob",
    ]


def test_severities_are_exact(archive):
    """severities=(critical,) finds critical only, not emergency."""
    assert messages(archive, severities=(Severity.CRITICAL,)) == ["disk /dev/sda1 failed"]


def test_min_severity_keeps_that_severity_and_worse(archive):
    """min_severity=error finds error, critical and emergency."""
    assert messages(archive, min_severity=Severity.ERROR, oldest_first=True) == [
        "disk /dev/sda1 failed",
        "queue stuck",
        "disk /dev/sdb1 failed",
    ]


def test_hosts_and_apps_filter_together(archive):
    """hosts=(web1, db1) and apps=(kernel,) combine with AND."""
    found = messages(archive, hosts=("web1", "db1"), apps=("kernel",), oldest_first=True)
    assert found == ["disk /dev/sda1 failed", "temperature high", "disk /dev/sdb1 failed"]


def test_grep_is_a_case_sensitive_substring(archive):
    """grep='login f' matches 'login failed', and 'LOGIN' matches nothing."""
    assert messages(archive, grep="login f") == ["login failed for bob"]
    assert messages(archive, grep="LOGIN") == []


def test_grep_treats_like_wildcards_literally(archive):
    """'%' and '_' in grep are characters, not patterns."""
    assert messages(archive, grep="%") == []
    assert messages(archive, grep="_") == []


def test_a_missing_sqlite_file_is_unavailable(tmp_path):
    """A path with no database is ArchiveUnavailable (exit status 69)."""
    with pytest.raises(ArchiveUnavailable) as caught:
        open_archive(f"sqlite:{tmp_path / 'none.db'}")
    assert caught.value.exit_code == 69


def test_a_missing_table_is_a_config_error(archive):
    """table=other in an archive without it is a ConfigError naming the table."""
    with pytest.raises(ConfigError, match="no table 'other'"):
        open_archive(archive + "?table=other")


def test_an_archive_that_is_not_sqlite_or_postgres_is_a_config_error(tmp_path):
    """jsonl:PATH is a sink but not an archive."""
    with pytest.raises(ConfigError, match="sqlite:PATH or postgres:URL"):
        open_archive(f"jsonl:{tmp_path / 'x.jsonl'}")


def test_since_not_before_until_is_an_input_error():
    """A window that ends before it starts is refused."""
    with pytest.raises(InputError, match="not before"):
        Query(since=T0, until=T0)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_a_duration_is_that_long_ago(text, ago):
    """'15m' is fifteen minutes before now."""
    assert parse_time(text, now=T0) == T0 - ago


def test_an_rfc3339_time_is_read_in_utc():
    """An offset is honoured and the result is UTC; no offset means UTC."""
    assert parse_time("2025-01-02T14:00:00+02:00") == T0
    assert parse_time("2025-01-02T12:00:00Z") == T0
    assert parse_time("2025-01-02T12:00:00") == T0


@pytest.mark.parametrize("text", ["yesterday", "15 minutes", "-1h", "", "2025-13-01T00:00:00Z"])
def test_a_time_that_does_not_parse_is_an_input_error_naming_the_option(text):
    """Bad times are InputError (exit status 65) naming the option."""
    with pytest.raises(InputError, match="--since") as caught:
        parse_time(text, option="--since")
    assert caught.value.exit_code == 65


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_an_rfc3339_time_round_trips(when):
    """Any time written as RFC 3339 with Z parses back to itself."""
    aware = when.replace(tzinfo=UTC)
    assert parse_time(aware.isoformat().replace("+00:00", "Z")) == aware
