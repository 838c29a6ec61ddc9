"""End-to-end tests run the real ``logbus`` command in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def logbus() -> Runner:
    """Run ``python -m logbus ARGS`` and return the completed process (text mode)."""

    def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None, **kw):
        return subprocess.run(
            [sys.executable, "-m", "logbus", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
            **kw,
        )

    return run
