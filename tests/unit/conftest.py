"""The unit tier does no I/O: a test here that opens a socket or starts a process fails.

An autouse fixture replaces, for the length of each unit test, the calls through which
a test reaches the outside world — ``socket.socket.connect``/``connect_ex``/``bind``/
``sendto``, ``socket.socketpair``, ``subprocess.Popen``, ``os.fork``/``system``/``posix_spawn`` and
``multiprocessing``'s ``Process.start`` — with one that raises :class:`UnitTestDidIO`
naming the call. Such a test belongs in ``tests/integration/`` (or ``tests/e2e/`` when
it runs the command line). Temporary files under ``tmp_path`` stay allowed: they are
quick and leave nothing behind.

The one exemption is the socket pair an asyncio event loop opens to wake itself up:
it is how every loop starts, not the test reaching out.
"""

from __future__ import annotations

import multiprocessing.process
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

MESSAGE = "unit tests do no I/O: move this test to tests/integration"

# Modules allowed to open a socket pair: the event loop's self-pipe.
_SELF_PIPE_MODULES = frozenset({"asyncio.selector_events", "asyncio.unix_events"})


class UnitTestDidIO(AssertionError):
    """A unit test opened a socket or started a process."""


def _refuse(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise UnitTestDidIO(f"{MESSAGE} (it called {what})")

    return refuse


def _guarded_socketpair(original: Callable[..., Any]) -> Callable[..., Any]:
    def socketpair(*args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller in _SELF_PIPE_MODULES:
            return original(*args, **kwargs)
        raise UnitTestDidIO(f"{MESSAGE} (it called socket.socketpair)")

    return socketpair


def install_io_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every socket open and process start raise :class:`UnitTestDidIO`."""
    for name in ("connect", "connect_ex", "bind", "sendto"):
        monkeypatch.setattr(socket.socket, name, _refuse(f"socket.{name}"))
    monkeypatch.setattr(socket, "socketpair", _guarded_socketpair(socket.socketpair))
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("subprocess.Popen"))
    for name in ("fork", "system", "posix_spawn", "posix_spawnp"):
        monkeypatch.setattr(os, name, _refuse(f"os.{name}"))
    monkeypatch.setattr(
        multiprocessing.process.BaseProcess, "start", _refuse("multiprocessing Process.start")
    )


@pytest.fixture(autouse=True)
def no_io(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every unit test runs with :func:`install_io_guard` in force."""
    install_io_guard(monkeypatch)
    yield
