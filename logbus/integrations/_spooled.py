"""The logging handler's ``spool=``: what the broker does not confirm goes to disk, and is
sent first when it is back, also by the next process that uses the same directory.

A script or a short-lived job that logs while its broker is away would otherwise lose
those records at exit (the buffer is memory). With a spool, a batch the broker did
not take is appended to :class:`~logbus.spool.Spool` at once (not retried in memory),
and so is every batch after it while the spool holds anything, so that order is kept;
after a pause the spool is replayed from its head, each batch deleted once
confirmed, and new batches go straight to the broker again once it is empty. At
close, events still buffered go to the spool rather than being dropped.

The directory is opened only for each use and closed after, its lock waited for: several
processes (or handlers) may share one spool and take turns. Records keep their ``id``:
a batch confirmed but not yet committed when a process dies is sent again (at least once).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING

from logbus.record import LogRecord

if TYPE_CHECKING:
    from logbus.spool import Spool

__all__ = ["SpoolKeeper"]

_FIRST_PAUSE = 0.5  # seconds before replaying after the broker went away; doubles
_MAX_PAUSE = 10.0


class SpoolKeeper:
    """A spool directory as the shipper's listener uses it: keep, replay, and when to try.

    :attr:`waiting` says the spool may hold records (true at first: an earlier process may
    have left some), so new batches go behind them until a replay empties it.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        from logbus.spool import Spool  # checks the directory can be a spool now

        self.path = Path(directory)
        Spool(self.path, wait=True).close()
        self.waiting = True
        self._pause = _FIRST_PAUSE
        self._retry_at = 0.0

    def _open(self) -> Spool:
        from logbus.spool import Spool

        return Spool(self.path, fsync="always", wait=True)

    def keep(self, records: list[LogRecord]) -> int:
        """Append ``records`` in order; how many. Raises ``SpoolFull`` or ``OSError``."""
        spool = self._open()
        try:
            count = spool.append(r.to_bytes() for r in records)
        finally:
            spool.close()
        self.waiting = True
        return count

    def due(self) -> bool:
        """Whether a replay may be tried now (the pause after the last failure is over)."""
        return monotonic() >= self._retry_at

    def replay(self, publish: Callable[[list[LogRecord]], object]) -> int:
        """Send the spool from its head through ``publish`` (confirmed), committing as it
        goes; how many. On failure it raises, and the next try waits a growing pause."""
        from logbus.spool import replay

        spool = self._open()
        try:
            sent = replay(spool, publish)
        except BaseException:
            self.away()
            raise
        finally:
            spool.close()
        self.waiting = False
        self._pause = _FIRST_PAUSE
        return sent

    def away(self) -> None:
        """The broker did not take a batch: no replay before a (growing) pause."""
        self._retry_at = monotonic() + self._pause
        self._pause = min(self._pause * 2, _MAX_PAUSE)
