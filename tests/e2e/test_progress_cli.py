"""Long commands show progress on stderr when it is a terminal, and only then."""

from __future__ import annotations

from typing import Any

from tests.e2e.support import on_terminal
from tests.e2e.test_query import sqlite_archive  # noqa: F401 (the archive fixture)


def test_query_shows_progress_when_stderr_is_a_terminal(sqlite_archive: str) -> None:  # noqa: F811
    """`logbus query` draws its progress on a terminal's stderr; stdout keeps the records."""
    code, screen, stdout = on_terminal(
        ["query", "--archive", sqlite_archive, "--json"], {}, stream="stderr"
    )
    assert code == 0, screen
    assert "searching sqlite:" in screen
    assert len(stdout.splitlines()) == 6


def test_query_shows_no_progress_when_stderr_is_piped(logbus: Any, sqlite_archive: str) -> None:  # noqa: F811
    """Piped, stderr gets no progress at all."""
    proc = logbus("query", "--archive", sqlite_archive, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
