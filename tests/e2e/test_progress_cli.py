"""Long commands show progress on stderr when it is a terminal, and only then."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from typing import Any

from tests.e2e.test_query import sqlite_archive  # noqa: F401 (the archive fixture)


def _stderr_on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run ``logbus ARGS`` with stderr on a pseudo-terminal: (status, stdout, screen)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "logbus", *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    code = proc.wait(timeout=60)
    os.close(leader)
    return code, stdout, b"".join(chunks).decode(errors="replace")


def test_query_shows_progress_when_stderr_is_a_terminal(sqlite_archive: str) -> None:  # noqa: F811
    """`logbus query` draws its progress on a terminal's stderr; stdout keeps the records."""
    code, stdout, screen = _stderr_on_a_terminal(["query", "--archive", sqlite_archive, "--json"])
    assert code == 0, screen
    assert "searching sqlite:" in screen
    assert len(stdout.splitlines()) == 6


def test_query_shows_no_progress_when_stderr_is_piped(logbus: Any, sqlite_archive: str) -> None:  # noqa: F811
    """Piped, stderr gets no progress at all."""
    proc = logbus("query", "--archive", sqlite_archive, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
