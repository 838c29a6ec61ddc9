"""What a worker did between start and stop: :class:`WorkerSummary`, as the operator reads it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WorkerSummary", "units"]


def units(unit: str, count: int) -> str:
    """``unit`` (thread, process, greenlet) made plural when ``count`` is not 1."""
    if count == 1:
        return unit
    return f"{unit}es" if unit.endswith("s") else f"{unit}s"


@dataclass(frozen=True)
class WorkerSummary:
    """What a worker did between start and stop.

    ``handled`` records were stored and acked; ``redelivered`` of them came
    redelivered (delivered before, to a worker that died or gave them back), so
    they may have been stored before: sinks that de-duplicate by id keep one
    copy, which is why an archive may hold fewer rows than ``handled``. ``failed`` counts the sink's
    failures, one per record and attempt; ``rejected`` of them were for good
    (not recoverable). ``retried`` records went to a delay queue, to come back
    later; ``dead_lettered`` went to the dead-letter queue: failed on their last
    attempt, failed for good, or ``undecodable`` (not records at all). With the
    process pool, ``replaced`` worker processes died and were started again, and
    ``requeued`` records they held went back to the queue, to be redelivered.
    """

    queue: str
    handled: int
    failed: int
    rejected: int
    undecodable: int
    seconds: float
    requeued: int = 0
    replaced: int = 0
    retried: int = 0
    dead_lettered: int = 0
    redelivered: int = 0

    def __str__(self) -> str:
        again = ""
        if self.redelivered:
            again = (
                f" ({self.redelivered} of them redelivered, perhaps written before: "
                "sinks that de-duplicate by id keep one copy)"
            )
        text = (
            f"{self.handled} handled{again}, {self.failed} failed ({self.retried} retried, "
            f"{self.dead_lettered} dead-lettered), {self.undecodable} undecodable "
            f"from {self.queue} in {self.seconds:.1f}s"
        )
        if self.replaced or self.requeued:
            text += (
                f"; {self.replaced} worker {units('process', self.replaced)} died and "
                f"{'were' if self.replaced != 1 else 'was'} replaced, {self.requeued} "
                f"{'records' if self.requeued != 1 else 'record'} requeued"
            )
        return text
