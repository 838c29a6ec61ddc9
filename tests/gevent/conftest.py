"""The gevent tier: the contract suite on ``gevent://``, in a monkey-patched process of its own.

Patching comes first, before anything else is imported; so this directory runs on
its own (pyproject's ``addopts`` keeps other runs out of it), and without the
conftest above it, which imports pika and with it ssl:

    python -m pytest --confcutdir=tests/gevent tests/gevent    # scripts/test does this

Should gevent report that patching came too late anyway, this conftest refuses to go on.
The contract suite's fixtures come from ``tests/contract/conftest.py``; only
``connector`` is this tier's own, opening ``gevent://`` connections.
"""

from __future__ import annotations

import warnings

from gevent import monkey

try:
    with warnings.catch_warnings():
        warnings.simplefilter("error", monkey.MonkeyPatchWarning)
        monkey.patch_all()
except monkey.MonkeyPatchWarning as exc:
    raise RuntimeError(
        "tests/gevent must be monkey-patched before anything else is imported: run it in "
        f"its own process, `python -m pytest --confcutdir=tests/gevent tests/gevent` ({exc})"
    ) from None

import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from logbus.transports import Transport, connect
from tests.contract.conftest import (  # noqa: F401 (fixtures, found by pytest by name)
    make,
    names,
    open_transport,
    transport,
)


@pytest.fixture(params=["gevent"])
def connector(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    """Opens a new connection to this test's own gevent:// broker."""
    url = f"{request.param}://contract-{secrets.token_hex(4)}"
    return lambda: connect(url)


@pytest.fixture
def run_python() -> Callable[[str], subprocess.CompletedProcess[str]]:
    """Runs code in a fresh interpreter, not monkey-patched, and captures what it printed."""

    def run(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    return run
