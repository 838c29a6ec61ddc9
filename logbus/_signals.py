"""Stopping on SIGTERM and SIGINT: the first signal asks politely, a second one does not.

Shared by ``logbus worker`` and the services; standard library only, so the
gevent pool can import it before it monkey-patches.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

__all__ = ["stop_on_signals"]


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``stop``; a second one gets the default behaviour back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (e.g. an embedding test runner)
        return
    defaults: dict[int, Any] = {
        signal.SIGINT: signal.default_int_handler,
        signal.SIGTERM: signal.SIG_DFL,
    }

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop()
        for number, default in defaults.items():
            signal.signal(number, default)

    previous = {number: signal.signal(number, handler) for number in defaults}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
