"""The consume loop: one work queue, a pool (threads, processes or greenlets), a sink, acks.

>>> worker = Worker("amqp://guest:guest@localhost:5672/%2F", "logbus.tasks",
...                 "jsonl:/var/log/logbus.jsonl", pool="process", concurrency=2)  # doctest: +SKIP
>>> summary = worker.run()  # doctest: +SKIP

``run`` returns once ``worker.stop()`` was called, e.g. from a SIGTERM handler.

How each delivery ends, so that nothing is lost and nothing loops forever:

==========================  =====================================================
the record ...               the delivery is ...
==========================  =====================================================
was stored by the sink       acked
cannot be decoded            rejected without requeue: dead-lettered if the
                             queue has a dead-letter exchange, else dropped
failed, recoverably          requeued (after a short pause, so that a sink that
                             is down is not hammered) and comes back redelivered
failed for good              rejected without requeue, like an undecodable one
was prefetched, not started  requeued when the worker stops, for other workers
was in a worker process      requeued at once (it comes back redelivered); a new
that died                    process takes its place
==========================  =====================================================

*Fair dispatch.* RabbitMQ hands a consumer at most ``prefetch`` unacked records
and the rest to whichever consumer has room, so a slow worker keeps only
``prefetch`` records from the others. The default, :func:`default_prefetch`, is
two per thread, process or greenlet (at least 10): each has one record in hand
and one waiting, which hides the round trip of the ack, and a slow worker holds
on to little. Raise it for a fast sink on a distant broker; set 1 for strict
fairness.

*Pools.* The thread that calls :meth:`Worker.run` is the only one taking
deliveries from the consumer, and the worker's threads are the only ones
settling them, whatever the pool: :mod:`logbus.pools` only says where records
are decoded and written — by ``concurrency`` threads here (``thread``), by as
many worker processes, each fed by a thread of its own (``process``: for a
sink that needs CPU, past the GIL), or by greenlets (``gevent``: for a sink
that waits on I/O, in a monkey-patched process). Deliveries reach the pool's
threads through a ``queue.Queue``. Several threads waiting in one consumer's
``get(timeout)`` would not do: the consumers wait on a ``queue.SimpleQueue``,
whose ``get`` with a timeout can, with several threads waiting, miss its
deadline and block until the next message arrives (seen on CPython 3.11) — a
worker that never stops.

*Stopping.* :meth:`Worker.stop` only raises a flag, so it is safe in a signal
handler. The thread in :meth:`Worker.run` then cancels the consumer (no new
records), lets every thread finish and ack the record in its hands, requeues
what was prefetched but not started, stops the pool (worker processes finish
and exit) and returns a :class:`WorkerSummary`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty, Queue
from typing import TYPE_CHECKING

from logbus._log import get_logger
from logbus.errors import ConfigError, ConnectionLost, LogbusError
from logbus.pools import (
    Lane,
    Pool,
    PoolKind,
    PoolWorkerLost,
    Undecodable,
    check_transport,
    make_pool,
)
from logbus.sinks import Sink, is_recoverable
from logbus.transports.base import Consumer, Delivery, Settlement, Transport

if TYPE_CHECKING:
    from logbus.settings import Settings

__all__ = ["MAX_CONCURRENCY", "Worker", "WorkerSummary", "default_prefetch", "units"]

log = get_logger("logbus.worker")

#: More threads (processes, greenlets) than this is a configuration mistake, not a deployment.
MAX_CONCURRENCY = 1024
# How often the fetching thread looks at the stop flag: the latency of stop().
#: Records handed to the sink in one write, at most: what is already waiting, no more.
_BATCH = 100
_POLL = 0.2
# Pauses before requeueing after consecutive recoverable failures: 0.05 s doubling to 2 s.
_FIRST_PAUSE = 0.05
_MAX_PAUSE = 2.0


def default_prefetch(concurrency: int) -> int:
    """The prefetch for a pool of ``concurrency``: two records per thread (process,
    greenlet), at least 10."""
    return max(10, 2 * concurrency)


def units(unit: str, count: int) -> str:
    """``unit`` (thread, process, greenlet) made plural when ``count`` is not 1."""
    if count == 1:
        return unit
    return f"{unit}es" if unit.endswith("s") else f"{unit}s"


@dataclass(frozen=True)
class WorkerSummary:
    """What a worker did between start and stop.

    ``handled`` records were stored and acked; ``failed`` sink failures happened,
    of which ``rejected`` were for good (dead-lettered or dropped) and the rest
    requeued; ``undecodable`` messages were not records (rejected). With the
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

    def __str__(self) -> str:
        text = (
            f"{self.handled} handled, {self.failed} failed ({self.rejected} rejected), "
            f"{self.undecodable} undecodable from {self.queue} in {self.seconds:.1f}s"
        )
        if self.replaced or self.requeued:
            text += (
                f"; {self.replaced} worker {units('process', self.replaced)} died and "
                f"{'were' if self.replaced != 1 else 'was'} replaced, {self.requeued} "
                f"{'records' if self.requeued != 1 else 'record'} requeued"
            )
        return text


class Worker:
    """Consumes one queue with a pool of ``concurrency``, writes to a sink, acks after success.

    ``transport_or_url`` is a connected :class:`~logbus.transports.base.Transport`
    (left open: the caller owns it) or a URL to connect to (closed when the worker
    stops). The transport must be safe to use from several threads, as the
    ``amqp://``, ``memory://`` and ``process://`` ones are. ``sink`` is a sink or
    its spec (``jsonl:PATH``); the process pool needs the spec, which each worker
    process opens itself. ``pool`` is ``thread``, ``process`` or ``gevent`` (see
    :mod:`logbus.pools`). ``prefetch`` None means ``settings.prefetch`` when it
    was set explicitly (``LOGBUS_PREFETCH``), else :func:`default_prefetch`. The
    queue must exist: declare the topology first.
    """

    def __init__(
        self,
        transport_or_url: Transport | str,
        queue: str,
        sink: Sink | str,
        *,
        pool: PoolKind = "thread",
        prefetch: int | None = None,
        concurrency: int = 1,
        settings: Settings | None = None,
    ) -> None:
        self.pool: Pool = make_pool(pool, sink)
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise ConfigError(
                f"concurrency must be 1..{MAX_CONCURRENCY} {units(self.pool.unit, 2)}, "
                f"not {concurrency}"
            )
        if prefetch is None and settings is not None and "prefetch" in settings.model_fields_set:
            prefetch = settings.prefetch
        self.prefetch = default_prefetch(concurrency) if prefetch is None else prefetch
        if not 1 <= self.prefetch <= 65535:
            raise ConfigError(f"prefetch must be 1..65535 (AMQP's 16 bits), not {self.prefetch}")
        self.queue = queue
        self.sink = sink
        self.concurrency = concurrency
        self.settings = settings
        if isinstance(transport_or_url, str):
            self._url: str | None = transport_or_url
            self._transport: Transport | None = None
        else:
            self._url = None
            self._transport = transport_or_url
        url = transport_or_url if isinstance(transport_or_url, str) else transport_or_url.url
        check_transport(self.pool.kind, url)
        self._consumer: Consumer | None = None
        self._threads: list[threading.Thread] = []
        self._stop_requested = False  # a plain flag: the only thing a signal handler touches
        self._draining = threading.Event()  # set by run() once it has begun to stop
        # Deliveries for the pool (None: a thread's cue to end). At most `prefetch` wait here.
        self._work: Queue[Delivery | None] = Queue()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._fatal: BaseException | None = None
        self._handled = self._failed = self._rejected = self._undecodable = 0
        self._requeued = 0
        self._started_at: float | None = None

    # -- the public surface --------------------------------------------------------------

    def run(self) -> WorkerSummary:
        """Consume until :meth:`stop` (or a fatal error, raised after a clean stop)."""
        self.start()
        return self.wait()

    def start(self) -> None:
        """Open the pool (and sink), start consuming and start the threads; returns at once.

        The process pool's worker processes have all opened their sink when this returns.
        """
        if self._started_at is not None:
            raise ConfigError("a Worker runs once; create another to run again")
        self._started_at = time.monotonic()
        owned = self._transport is None
        if self._transport is None:
            from logbus.transports import connect

            assert self._url is not None
            self._transport = connect(self._url, settings=self.settings)
        try:
            lanes = self.pool.open(self.concurrency, self.queue)
            try:
                self._consumer = self._transport.consume(self.queue, prefetch=self.prefetch)
            except BaseException:
                self.pool.close()
                raise
        except BaseException:
            if owned:
                self._transport.close()
            raise
        if self.prefetch < self.concurrency:
            log.warning(
                "worker.prefetch_below_concurrency",
                prefetch=self.prefetch,
                concurrency=self.concurrency,
                idle=self.concurrency - self.prefetch,
            )
        for number, lane in enumerate(lanes, 1):
            thread = threading.Thread(
                target=self._serve,
                args=(lane,),
                name=f"logbus-worker-{number}:{self.queue}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        log.info(
            "worker.started",
            queue=self.queue,
            prefetch=self.prefetch,
            pool=self.pool.kind,
            concurrency=self.concurrency,
        )

    def wait(self) -> WorkerSummary:
        """Take deliveries for the threads until :meth:`stop` or a fatal error; stop cleanly.

        A fatal error (the broker cancelled the consumer, a sink broke its
        contract) is raised once the worker has stopped.
        """
        if self._started_at is None or self._consumer is None:
            raise ConfigError("call Worker.start() before Worker.wait()")
        try:
            self._fetch(self._consumer)
        except Exception as exc:
            self._fail(exc)
        self._shutdown(self._consumer)
        if self._fatal is not None:
            raise self._fatal
        return self.summary()

    def stop(self) -> None:
        """Ask the worker to stop: no new records; those in hand are finished and acked.

        Safe to call from a signal handler (it only raises a flag, which
        :meth:`run` looks at at least five times a second) and from any thread.
        """
        self._stop_requested = True

    def summary(self) -> WorkerSummary:
        """The counts so far."""
        started = self._started_at if self._started_at is not None else time.monotonic()
        with self._lock:
            return WorkerSummary(
                queue=self.queue,
                handled=self._handled,
                failed=self._failed,
                rejected=self._rejected,
                undecodable=self._undecodable,
                seconds=time.monotonic() - started,
                requeued=self._requeued,
                replaced=self.pool.replaced,
            )

    def __repr__(self) -> str:
        return (
            f"<Worker queue={self.queue!r} sink={self.sink!r} prefetch={self.prefetch} "
            f"pool={self.pool.kind} concurrency={self.concurrency}>"
        )

    # -- taking deliveries ----------------------------------------------------------------

    def _fetch(self, consumer: Consumer) -> None:
        while not self._stop_requested:
            delivery = consumer.get(timeout=_POLL)
            if delivery is not None:
                self._work.put(delivery)
            elif getattr(consumer, "cancelled", False) is True and not self._stop_requested:
                raise ConnectionLost(
                    f"the broker stopped the consumer of queue {self.queue!r} (was the queue "
                    "deleted?); its records are safe in the queue, start again"
                )

    def _fail(self, exc: BaseException) -> None:
        log.info("worker.failed", queue=self.queue, error=f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._fatal = self._fatal or exc
        self._stop_requested = True

    # -- one thread of the pool ----------------------------------------------------------

    def _serve(self, lane: Lane) -> None:
        try:
            while (first := self._work.get()) is not None:
                batch = [first]
                # Whatever else is already waiting goes along, but only this thread's share
                # of it: the other threads get records to work on too.
                share = min(_BATCH, 1 + self._work.qsize() // self.concurrency)
                while len(batch) < share:
                    try:
                        more = self._work.get_nowait()
                    except Empty:
                        break
                    if more is None:
                        self._work.put(None)  # the stop marker is for the loop above
                        break
                    batch.append(more)
                if self._stop_requested:  # prefetched, never started: back to the queue
                    for delivery in batch:
                        self._settle(delivery, Settlement.NACK, requeue=True)
                    continue
                try:
                    self._handle(lane, batch)
                except PoolWorkerLost as exc:
                    self._requeue_lost(batch, exc)
                except BaseException as exc:
                    for delivery in batch:
                        if delivery.settled is None:
                            self._settle(delivery, Settlement.NACK, requeue=True)
                    self._fail(exc)
                    return
        finally:
            lane.close()  # a worker process finishes and exits

    def _handle(self, lane: Lane, deliveries: list[Delivery]) -> None:
        """Have the lane decode and write a batch; settle each delivery by its result."""
        results = lane.handle(deliveries)
        self._local.losses = 0
        for delivery, result in zip(deliveries, results, strict=True):
            if result is None:
                self._local.failures = 0
                self._count("_handled")
                self._settle(delivery, Settlement.ACK)
            elif isinstance(result, Undecodable):
                log.warning(
                    "worker.undecodable",
                    queue=self.queue,
                    message_id=delivery.properties.message_id,
                    routing_key=delivery.routing_key,
                    reason=result.reason,
                )
                self._count("_undecodable")
                self._settle(delivery, Settlement.REJECT, requeue=False)
            else:
                log.warning(
                    "worker.sink_failed",
                    queue=self.queue,
                    message_id=delivery.properties.message_id,
                    recoverable=is_recoverable(result),
                    error=f"{type(result).__name__}: {result}",
                )
                self._count("_failed")
                self._on_failure(delivery, result)

    def _requeue_lost(self, deliveries: list[Delivery], exc: PoolWorkerLost) -> None:
        """Records lost with a worker process go back to the queue; its lane starts another."""
        lost = [delivery for delivery in deliveries if delivery.settled is None]
        log.warning("worker.process_lost", queue=self.queue, requeued=len(lost), reason=str(exc))
        for delivery in lost:
            self._settle(delivery, Settlement.NACK, requeue=True)
        with self._lock:
            self._requeued += len(lost)
        # A process that dies on every batch (a sink crashing on start) is not restarted
        # in a tight loop: the pause grows as for a failing sink.
        losses = getattr(self._local, "losses", 0) + 1
        self._local.losses = losses
        if losses > 1:
            self._draining.wait(min(_MAX_PAUSE, _FIRST_PAUSE * 2 ** min(losses - 2, 16)))

    def _on_failure(self, delivery: Delivery, exc: Exception) -> None:
        """Settle a delivery whose record the sink did not store.

        The seam for retry policies: for now a recoverable failure requeues the
        record (after a pause that grows with consecutive failures, so a sink that
        is down is not hammered) and any other rejects it without requeue, which
        dead-letters it when the queue has a dead-letter exchange.
        """
        if is_recoverable(exc):
            failures = getattr(self._local, "failures", 0) + 1
            self._local.failures = failures
            self._draining.wait(min(_MAX_PAUSE, _FIRST_PAUSE * 2 ** min(failures - 1, 16)))
            self._settle(delivery, Settlement.NACK, requeue=True)
        else:
            self._count("_rejected")
            self._settle(delivery, Settlement.REJECT, requeue=False)

    def _settle(self, delivery: Delivery, how: Settlement, *, requeue: bool = False) -> None:
        settle: Callable[[], None]
        if how is Settlement.ACK:
            settle = delivery.ack
        elif how is Settlement.NACK:
            settle = lambda: delivery.nack(requeue=requeue)  # noqa: E731
        else:
            settle = lambda: delivery.reject(requeue=requeue)  # noqa: E731
        try:
            settle()
        except LogbusError as exc:
            # The channel is gone, and with it the delivery: the broker requeued it.
            log.warning("worker.settle_failed", queue=self.queue, how=how.value, reason=str(exc))

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self, counter, getattr(self, counter) + 1)

    # -- stopping ------------------------------------------------------------------------

    def _shutdown(self, consumer: Consumer) -> None:
        self._stop_requested = True
        self._draining.set()
        try:
            consumer.cancel()
        except LogbusError as exc:  # the connection is down: closing it requeues all
            log.warning("worker.cancel_failed", queue=self.queue, reason=str(exc))
        else:
            # What the broker sent before the cancel: back to the queue, where other
            # workers get it now rather than when this connection closes.
            for _ in range(self.prefetch):
                delivery = consumer.get(timeout=0)
                if delivery is None:
                    break
                self._settle(delivery, Settlement.NACK, requeue=True)
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()
        while True:  # left behind by threads that ended on a fatal error
            try:
                delivery = self._work.get_nowait()
            except Empty:
                break
            if delivery is not None:
                self._settle(delivery, Settlement.NACK, requeue=True)
        try:
            if self._url is not None and self._transport is not None:
                self._transport.close()
        finally:
            self.pool.close()
        log.info("worker.stopped", pool=self.pool.kind, **vars(self.summary()))
