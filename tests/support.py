"""Helpers every test tier shares."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    from logbus.worker import Worker, WorkerSummary

__all__ = ["RunningWorker", "require_or_skip", "wait_until"]

REQUIRED = "LOGBUS_REQUIRE_BROKER"


def require_or_skip(reason: str, *also: str) -> NoReturn:
    """Skip this test because of ``reason`` (a missing rabbitmqctl, openssl, Docker,
    private node or management API) — or fail it where a run must not skip: under
    ``LOGBUS_REQUIRE_BROKER=1`` (``.ci/run`` sets it), or any variable named in ``also``
    set to 1. A fault test that cannot run there is a failure, never a silent green."""
    for variable in (REQUIRED, *also):
        if os.environ.get(variable) == "1":
            pytest.fail(f"{variable}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


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


class RunningWorker:
    """A worker started (its queues declared, its consumer registered), then waited for
    on a thread of its own; ``stop()`` and ``join()`` return its summary or raise what it
    raised, failing if it has not ended within ``timeout`` seconds (default: the class's)."""

    timeout = 10.0

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.summary: WorkerSummary | None = None
        self.error: BaseException | None = None
        worker.start()
        self.thread = threading.Thread(target=self._wait, daemon=True)
        self.thread.start()

    def _wait(self) -> None:
        try:
            self.summary = self.worker.wait()
        except BaseException as exc:
            self.error = exc

    def stop(self, timeout: float | None = None) -> WorkerSummary:
        """Ask the worker to stop, then :meth:`join` it."""
        self.worker.stop()
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> WorkerSummary:
        """Wait for the worker to end by itself (or after stop)."""
        self.thread.join(self.timeout if timeout is None else timeout)
        assert not self.thread.is_alive(), "the worker did not stop in time"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary
