"""How each delivery a worker took ends: acked, sent on to a delay or dead-letter queue, requeued.

So that nothing is lost and nothing loops forever (the queues and headers are
:mod:`logbus.worker.retry`'s):

==========================  =====================================================
the record ...               the delivery is ...
==========================  =====================================================
was stored by the sink       acked
failed, recoverably, before  published to the delay queue ``<queue>.retry.<ms>``
its last attempt             with the attempt counted in its headers, then acked;
                             the broker gives it back to ``<queue>`` once the
                             delay has passed
failed on its last attempt,  published to ``<queue>.dead`` with the reason and
or for good, or cannot be    the attempt history in its headers, then acked
decoded
could not be published to a  requeued (after a pause that grows while the broker
delay or dead-letter queue   keeps refusing): nothing is lost
was prefetched, not started  requeued when the worker stops, for other workers
was in a worker process      requeued at once (it comes back redelivered); a new
that died                    process takes its place
==========================  =====================================================

The copy is confirmed by the broker before the original is acked: a worker that
dies in between leaves both (a duplicate, which sinks drop by ``id``), never
neither. Which way a failed record goes is the worker's decision
(:meth:`logbus.worker.Worker._on_failure`); :class:`Outcomes` carries it out
and counts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from logbus._log import Repeats, get_logger
from logbus.errors import LogbusError, Unroutable
from logbus.message import Message
from logbus.sinks import is_recoverable
from logbus.sinks._partial import PartlyStored, stored_by
from logbus.transports.base import Delivery, Settlement, Transport, settle_many
from logbus.worker.lanes import RemoteSinkError, Result, Undecodable
from logbus.worker.retry import Outcome, RetryPolicy, declare_retry_queues, for_dead

if TYPE_CHECKING:
    from logbus.metrics import WorkerMetrics

__all__ = ["COUNTS", "Forward", "Outcomes", "describe_failure", "pause"]

log = get_logger("logbus.worker")

#: What :meth:`Outcomes.counts` counts (the fields of ``WorkerSummary`` it fills).
COUNTS = (
    "handled",
    "redelivered",
    "failed",
    "rejected",
    "undecodable",
    "requeued",
    "retried",
    "dead_lettered",
)
# Pauses after consecutive failures to publish to a delay or dead-letter queue (or
# consecutive worker process deaths): 0.05 s doubling to 2 s.
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 2.0

#: What the worker decides for a delivery the sink failed on.
Decide = Callable[[Delivery, Exception], "Forward"]


@dataclass(frozen=True, slots=True)
class Forward:
    """A failed delivery's way on: ``message`` is published (confirmed), then it is acked."""

    delivery: Delivery
    message: Message
    outcome: Outcome


def describe_failure(exc: BaseException) -> str:
    """``Type: message`` for a sink's failure (a worker process's says its own type; a
    multi-sink's names the sinks that stored the record all the same)."""
    stored = stored_by(exc)
    if isinstance(exc, PartlyStored):
        exc = exc.error
    text = str(exc) if isinstance(exc, RemoteSinkError) else f"{type(exc).__name__}: {exc}"
    return f"{text} (stored by {', '.join(sorted(stored))})" if stored else text


def pause(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failures: 0.05 doubling, at most 2."""
    return min(_MAX_PAUSE, _FIRST_PAUSE * 2.0 ** min(failures - 1, 16))


class Outcomes:
    """Settles the deliveries of one worker's queue and counts how each ended.

    Shared by the worker's threads. ``transport`` publishes what is sent on
    (set once the worker is connected); ``draining``, once set, cuts every pause
    short, so a stopping worker never waits on a broker in trouble.
    """

    def __init__(
        self,
        queue: str,
        retry: RetryPolicy,
        metrics: WorkerMetrics | None,
        draining: threading.Event,
    ) -> None:
        self.queue = queue
        self.retry = retry
        self.metrics = metrics
        self.transport: Transport | None = None
        self._draining = draining
        self._local = threading.local()  # consecutive failures, per thread
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTS, 0)
        # One warning per record would flood stderr: the first of a kind per window, then a count.
        self.repeats = Repeats(log)

    def counts(self) -> dict[str, int]:
        """Each of :data:`COUNTS` so far."""
        with self._lock:
            return dict(self._counts)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to count ``name``."""
        with self._lock:
            self._counts[name] += n

    def finish(
        self, deliveries: Sequence[Delivery], results: Sequence[Result], decide: Decide
    ) -> None:
        """Settle a batch by what the pool made of it: ack the stored, send the rest on."""
        self._local.losses = 0
        metrics = self.metrics
        stored: list[Delivery] = []
        forwards: list[Forward] = []
        for delivery, result in zip(deliveries, results, strict=True):
            if result is None:
                stored.append(delivery)
            elif isinstance(result, Undecodable):
                self.repeats.warning(
                    "worker.undecodable",
                    key=(self.queue,),
                    queue=self.queue,
                    message_id=delivery.properties.message_id,
                    routing_key=delivery.routing_key,
                    reason=result.reason,
                )
                self.count("undecodable")
                if metrics is not None:
                    metrics.undecodable()
                reason = f"undecodable: {result.reason}"
                dead = for_dead(delivery.message, queue=self.queue, reason=reason)
                forwards.append(Forward(delivery, dead, "dead_lettered"))
            else:
                self.repeats.warning(
                    "worker.sink_failed",
                    key=(self.queue, type(result).__name__, is_recoverable(result)),
                    queue=self.queue,
                    message_id=delivery.properties.message_id,
                    recoverable=is_recoverable(result),
                    error=describe_failure(result),
                )
                self.count("failed")
                if metrics is not None:
                    metrics.failed()
                forwards.append(decide(delivery, result))
        if stored:
            self.settle_all(stored, Settlement.ACK)
            # Delivered before (to a worker that died, or that gave them back): perhaps
            # stored before too, so counted apart; sinks that de-duplicate keep one copy.
            again = sum(delivery.redelivered for delivery in stored)
            with self._lock:
                self._counts["handled"] += len(stored)
                self._counts["redelivered"] += again
            if metrics is not None:
                metrics.written(len(stored))
                if again:
                    metrics.redelivered(again)
        if forwards:
            self.forward(forwards)

    def forward(self, forwards: list[Forward]) -> None:
        """Publish each record to its delay or dead-letter queue, confirmed, then ack it;
        if the broker would not take them, requeue them instead (nothing is lost)."""
        assert self.transport is not None
        try:
            self.transport.publish_many([forward.message for forward in forwards])
        except LogbusError as exc:
            self.repeats.warning(
                "worker.forward_failed",
                key=(self.queue, type(exc).__name__),
                queue=self.queue,
                records=len(forwards),
                error=f"{type(exc).__name__}: {exc}",
            )
            if isinstance(exc, Unroutable):  # a delay or dead-letter queue was deleted
                try:
                    declare_retry_queues(self.transport, self.queue, self.retry)
                except LogbusError as again:
                    log.warning("worker.redeclare_failed", queue=self.queue, error=str(again))
            # The broker is in trouble: not straight back, or the records would spin.
            failures = getattr(self._local, "forward_failures", 0) + 1
            self._local.forward_failures = failures
            self._draining.wait(pause(failures))
            self.requeue(forward.delivery for forward in forwards)
            return
        self._local.forward_failures = 0
        self.settle_all([forward.delivery for forward in forwards], Settlement.ACK)
        for forward in forwards:
            log.info(
                f"worker.{forward.outcome}",
                queue=self.queue,
                message_id=forward.delivery.properties.message_id,
                to=forward.message.routing_key,
            )
        retried = sum(forward.outcome == "retried" for forward in forwards)
        dead = len(forwards) - retried
        with self._lock:
            self._counts["retried"] += retried
            self._counts["dead_lettered"] += dead
        if self.metrics is not None:
            if retried:
                self.metrics.retried(retried)
            if dead:
                self.metrics.dead_lettered(dead)

    def requeue(self, deliveries: Iterable[Delivery]) -> None:
        """Give back every one of ``deliveries`` not settled yet: requeued, for any worker."""
        unsettled = [delivery for delivery in deliveries if delivery.settled is None]
        if unsettled:
            self.settle_all(unsettled, Settlement.NACK, requeue=True)

    def lost(self, deliveries: Sequence[Delivery], reason: str) -> None:
        """Records lost with a worker process go back to the queue (counted)."""
        lost = [delivery for delivery in deliveries if delivery.settled is None]
        log.warning("worker.process_lost", queue=self.queue, requeued=len(lost), reason=reason)
        self.requeue(lost)
        self.count("requeued", len(lost))
        # A process that dies on every batch (a sink crashing on start) is not restarted
        # in a tight loop: the pause grows as for a broker refusing records.
        losses = getattr(self._local, "losses", 0) + 1
        self._local.losses = losses
        if losses > 1:
            self._draining.wait(pause(losses - 1))

    def settle_all(
        self, deliveries: Sequence[Delivery], how: Settlement, *, requeue: bool = False
    ) -> None:
        """Settle ``deliveries`` alike, with as few calls into the transport as it allows;
        a channel gone meanwhile is logged, not raised."""
        try:
            settle_many(deliveries, how, requeue=requeue)
        except LogbusError as exc:
            # The channel is gone, and with it the deliveries: the broker requeued them.
            self.repeats.warning(
                "worker.settle_failed",
                key=(self.queue, how.value),
                queue=self.queue,
                how=how.value,
                records=len(deliveries),
                reason=str(exc),
            )

    def settle(self, delivery: Delivery, how: Settlement, *, requeue: bool = False) -> None:
        """Ack, nack or reject ``delivery``; a channel gone meanwhile is logged, not raised."""
        try:
            if how is Settlement.ACK:
                delivery.ack()
            elif how is Settlement.NACK:
                delivery.nack(requeue=requeue)
            else:
                delivery.reject(requeue=requeue)
        except LogbusError as exc:
            # The channel is gone, and with it the delivery: the broker requeued it.
            log.warning("worker.settle_failed", queue=self.queue, how=how.value, reason=str(exc))
