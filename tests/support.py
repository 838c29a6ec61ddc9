"""Helpers every test tier shares."""

from __future__ import annotations

import threading
from collections.abc import Callable
from time import monotonic

__all__ = ["wait_until"]


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, *, every: float = 0.05
) -> None:
    """Poll ``condition`` every ``every`` seconds until it holds; fail naming ``what``
    after ``timeout`` seconds (a condition with a deadline, never a bare sleep)."""
    deadline = monotonic() + timeout
    while not condition():
        if monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        threading.Event().wait(every)
