"""The consume loop: one work queue, a pool (threads, processes or greenlets), a sink, acks.

>>> worker = Worker("amqp://guest:guest@localhost:5672/%2F", "logbus.tasks",
...                 "jsonl:/var/log/logbus.jsonl", pool="process", concurrency=2)  # doctest: +SKIP
>>> summary = worker.run()  # doctest: +SKIP

``run`` returns once ``worker.stop()`` was called, e.g. from a SIGTERM handler.

Each delivery ends acked once the sink stored its record; a record the sink
failed on is sent on, confirmed, to a delay queue (to be tried again) or the
dead-letter queue before it is acked, so nothing is lost and nothing loops
(:mod:`logbus.worker.outcomes` has the whole table, :mod:`logbus.worker.retry` the queues and
headers). :meth:`Worker._on_failure` is the seam that decides a failed
record's way (:class:`~logbus.worker.retry.RetryPolicy` by default).

*Fair dispatch and batches.* A thread of the pool hands the sink up to its
``max_batch`` records at once, waiting up to its ``max_wait`` for a batch to
fill; the default prefetch is two batches per thread, process or greenlet, at
least 2000 (:mod:`logbus.worker.batching` says why).

*Pools.* The worker's threads take their batches from the consumer themselves,
one thread at a time (:class:`~logbus.worker.batching.Taker`), and settle them, a
batch with one call into the transport, whatever the pool: :mod:`logbus.worker.pools`
only says where records are decoded and written — by ``concurrency`` threads
here (``thread``), by as many worker processes, each fed by a thread of its own
(``process``: for a sink that needs CPU, past the GIL), or by greenlets
(``gevent``: for a sink that waits on I/O, in a monkey-patched process). The
thread that calls :meth:`Worker.run` only watches for the signal to stop.

*Stopping.* :meth:`Worker.stop` only raises a flag, so it is safe in a signal
handler. The thread in :meth:`Worker.run` then cancels the consumer (no new
records) and requeues what was prefetched but not started, while every thread
finishes and acks the batch in its hands; then it stops the pool (worker
processes finish and exit) and returns a :class:`WorkerSummary`. All of that
takes at most ``shutdown_timeout`` seconds (20 by default, under the 30 s after
which Kubernetes kills a pod): a batch the sink has not finished by then goes
back to the queue (nacked with requeue) and the worker returns without waiting
for it, so a stuck sink delays a stop, never prevents it. A record the sink
finished just then may be stored *and* requeued: a duplicate, never a loss.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from logbus._log import get_logger
from logbus._urls import redact_url
from logbus.errors import ConfigError, LogbusError
from logbus.sinks import Sink, is_recoverable
from logbus.sinks._partial import stored_by
from logbus.transports.base import Consumer, Delivery, Transport
from logbus.worker.batching import Batching, Taker, batching_of, default_prefetch
from logbus.worker.lanes import Lane, Pool, PoolKind, PoolWorkerLost
from logbus.worker.outcomes import Forward, Outcomes, describe_failure
from logbus.worker.pools import MAX_CONCURRENCY, check_concurrency, check_transport, make_pool
from logbus.worker.processes import ProcessPool
from logbus.worker.retry import RetryPolicy, declare_retry_queues, restore_origin, route_failure
from logbus.worker.summary import WorkerSummary, units

if TYPE_CHECKING:
    from logbus.metrics import WorkerMetrics
    from logbus.settings import Settings

__all__ = [
    "MAX_CONCURRENCY",
    "SHUTDOWN_TIMEOUT",
    "Worker",
    "default_prefetch",
    "units",
]

log = get_logger("logbus.worker")

# How often the waiting threads look at the stop flag: the latency of stop().
_POLL = 0.2
# How often a worker with metrics asks the broker how deep its queue is (a passive declare).
_DEPTH_EVERY = 5.0
#: Seconds a stopping worker waits for the sink to finish what it holds (Kubernetes: 30).
SHUTDOWN_TIMEOUT = 20.0


class Worker:
    """Consumes one queue with a pool of ``concurrency``, writes to a sink, acks after success.

    ``transport_or_url`` is a connected :class:`~logbus.transports.base.Transport`
    (left open: the caller owns it) or a URL to connect to (closed when the worker
    stops). The transport must be safe to use from several threads, as the
    ``amqp://``, ``memory://`` and ``process://`` ones are: the pool's threads
    publish failed records through it. ``sink`` is a sink or its spec
    (``jsonl:PATH``); the process pool needs the spec, which each worker process
    opens itself. ``pool`` is ``thread``, ``process`` or ``gevent`` (see
    :mod:`logbus.worker.pools`). ``prefetch`` None means ``settings.prefetch`` when it
    was set explicitly (``LOGBUS_PREFETCH``), else :func:`default_prefetch`.
    ``retry`` says when a failed record is tried again (default
    :class:`~logbus.worker.retry.RetryPolicy`: 5 attempts, 1 s doubling); ``metrics``,
    if given, is told what happens. ``shutdown_timeout`` bounds a stop (see the
    module docstring); ``report``, if given, is told in words what a stopping
    worker does (``draining 12 in flight, returning 1,988 prefetched``), for a
    command line to print. The queue must exist: declare the topology first; the
    worker declares the queue's delay and dead-letter queues itself.
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
        retry: RetryPolicy | None = None,
        metrics: WorkerMetrics | None = None,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        report: Callable[[str], object] | None = None,
    ) -> None:
        self.shutdown_timeout = _shutdown_timeout(shutdown_timeout)
        self._report = report
        self.pool: Pool = make_pool(pool, sink)
        if isinstance(self.pool, ProcessPool):  # worker processes stop within the bound too
            self.pool.stop_timeout = self.shutdown_timeout
        check_concurrency(concurrency, self.pool.unit)
        # The pool holds the sink it loaded; the process pool only its spec.
        batching = batching_of(getattr(self.pool, "sink", sink))
        self._batching: Batching = batching
        self.max_batch, self.max_wait = batching.max_batch, batching.max_wait
        if prefetch is None and settings is not None and "prefetch" in settings.given:
            prefetch = settings.prefetch
        self.prefetch = (
            default_prefetch(concurrency, batching.unit) if prefetch is None else prefetch
        )
        if not 1 <= self.prefetch <= 65535:
            raise ConfigError(f"prefetch must be 1..65535 (AMQP's 16 bits), not {self.prefetch}")
        self.queue = queue
        self.sink = sink
        self.concurrency = concurrency
        self.settings = settings
        self.retry = retry if retry is not None else RetryPolicy()
        self.metrics = metrics
        # A URL is connected by start(), and that transport is the worker's to close.
        self._url: str | None = None
        self._transport: Transport | None = None
        if isinstance(transport_or_url, str):
            self._url = url = transport_or_url
        else:
            self._transport, url = transport_or_url, transport_or_url.url
        check_transport(self.pool.kind, url)
        self._taker: Taker | None = None
        self._threads: list[threading.Thread] = []
        self._stop_requested = False  # a plain flag: the only thing a signal handler touches
        self._failed = threading.Event()  # set with the flag on a fatal error: wait() sees it now
        self._draining = threading.Event()  # set by run() once it has begun to stop
        self._outcomes = Outcomes(queue, self.retry, metrics, self._draining)
        self._outcomes.transport = self._transport
        self._lock = threading.Lock()
        # The batch each thread is writing, by thread: what "in flight" means when stopping.
        self._in_hand: dict[int, list[Delivery]] = {}
        self._abandoned = False  # stopped past the timeout: late results settle nothing
        self._fatal: BaseException | None = None
        self._started_at: float | None = None

    # -- the public surface --------------------------------------------------------------

    def run(self) -> WorkerSummary:
        """Consume until :meth:`stop` (or a fatal error, raised after a clean stop)."""
        self.start()
        return self.wait()

    def start(self) -> None:
        """Declare the delay and dead-letter queues, open the pool (and sink), start
        consuming and start the threads; returns at once.

        The process pool's worker processes have all opened their sink when this returns.
        """
        if self._started_at is not None:
            raise ConfigError("a Worker runs once; create another to run again")
        self._started_at = time.monotonic()
        lanes, consumer = self._open()
        metrics = self.metrics
        self._taker = Taker(
            consumer,
            self._batching,
            self.concurrency,
            self.prefetch,
            stopping=lambda: self._stop_requested,
            received=None if metrics is None else metrics.received,
            poll=_POLL,
        )
        if self.prefetch < self.concurrency:
            log.warning(
                "worker.prefetch_below_concurrency",
                prefetch=self.prefetch,
                concurrency=self.concurrency,
                idle=self.concurrency - self.prefetch,
            )
        self._start_threads(lanes, self._taker)
        log.info(
            "worker.started",
            queue=self.queue,
            prefetch=self.prefetch,
            pool=self.pool.kind,
            concurrency=self.concurrency,
            max_batch=self.max_batch,
            max_wait=self.max_wait,
            retry=str(self.retry),
        )

    def _open(self) -> tuple[list[Lane], Consumer]:
        """Connect (a URL), declare the delay and dead-letter queues, open the pool and
        consume; on failure, close what was opened here, and the transport if it is ours."""
        owned = self._transport is None
        if self._transport is None:
            from logbus.transports import connect

            assert self._url is not None
            self._transport = connect(self._url, settings=self.settings)
            self._outcomes.transport = self._transport
        try:
            declare_retry_queues(self._transport, self.queue, self.retry)
            lanes = self.pool.open(self.concurrency, self.queue)
            try:
                consumer = self._transport.consume(self.queue, prefetch=self.prefetch)
            except BaseException:
                self.pool.close()
                raise
        except BaseException:
            if owned:
                self._transport.close()
            raise
        return lanes, consumer

    def _start_threads(self, lanes: list[Lane], taker: Taker) -> None:
        """One thread per lane, and one that watches the queue's depth for the metrics."""
        metrics = self.metrics
        if metrics is not None:
            name = f"logbus-depth:{self.queue}"
            threading.Thread(
                target=self._watch_depth, args=(metrics,), name=name, daemon=True
            ).start()
        for number, lane in enumerate(lanes, 1):
            name = f"logbus-worker-{number}:{self.queue}"
            thread = threading.Thread(
                target=self._serve, args=(lane, taker), name=name, daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def wait(self) -> WorkerSummary:
        """Wait until :meth:`stop` or a fatal error; stop cleanly.

        A fatal error (the broker cancelled the consumer, a sink broke its
        contract) is raised once the worker has stopped.
        """
        if self._started_at is None or self._taker is None:
            raise ConfigError("call Worker.start() before Worker.wait()")
        while not self._stop_requested:
            self._failed.wait(_POLL)
        self._shutdown(self._taker)
        if self._fatal is not None:
            raise self._fatal
        return self.summary()

    def stop(self) -> None:
        """Ask the worker to stop: no new records; those in hand are finished and acked
        (within ``shutdown_timeout``: what the sink has not finished by then is requeued).

        Safe to call from a signal handler (it only raises a flag, which
        :meth:`run` looks at at least five times a second) and from any thread.
        """
        self._stop_requested = True

    def summary(self) -> WorkerSummary:
        """The counts so far."""
        started = self._started_at if self._started_at is not None else time.monotonic()
        return WorkerSummary(
            queue=self.queue,
            seconds=time.monotonic() - started,
            replaced=self.pool.replaced,
            **self._outcomes.counts(),
        )

    def health(self) -> tuple[bool, dict[str, object]]:
        """Whether the worker is consuming (started, not stopping, its consumer and
        threads alive, its connection up), with the details; for ``/healthz``."""
        consumer = None if self._taker is None else self._taker.consumer
        cancelled = consumer is not None and getattr(consumer, "cancelled", False) is True
        consuming = consumer is not None and not cancelled and not self._stop_requested
        connected = getattr(self._transport, "connected", self._transport is not None)
        threads = sum(thread.is_alive() for thread in self._threads)
        healthy = (
            consuming
            and connected is not False
            and self._fatal is None
            and threads == len(self._threads) > 0
        )
        counts = self.summary()
        return healthy, {
            "queue": self.queue,
            "consuming": consuming,
            "connected": connected is not False,
            "threads": threads,
            "handled": counts.handled,
            "redelivered": counts.redelivered,
            "failed": counts.failed,
            "retried": counts.retried,
            "dead_lettered": counts.dead_lettered,
        }

    def __repr__(self) -> str:
        return (
            f"<Worker queue={self.queue!r} sink={_shown(self.sink)} prefetch={self.prefetch} "
            f"pool={self.pool.kind} concurrency={self.concurrency}>"
        )

    def _watch_depth(self, metrics: WorkerMetrics) -> None:
        """Tell ``metrics`` the queue's depth every few seconds, until the worker stops."""
        while not self._draining.is_set():
            transport = self._transport
            if transport is None:
                return
            try:
                ready = transport.declare_queue(self.queue, passive=True).message_count
            except LogbusError as exc:  # the connection is down, say: the next look may do
                log.debug("worker.depth_unknown", queue=self.queue, reason=str(exc))
            else:
                metrics.queue_depth(ready)
            self._draining.wait(_DEPTH_EVERY)

    def _fail(self, exc: BaseException) -> None:
        log.info("worker.failed", queue=self.queue, error=f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._fatal = self._fatal or exc
        self._stop_requested = True
        self._failed.set()

    # -- one thread of the pool ----------------------------------------------------------

    def _serve(self, lane: Lane, taker: Taker) -> None:
        try:
            while True:
                try:
                    batch = taker.take()
                except Exception as exc:  # the consumer is gone: stop the worker
                    self._fail(exc)
                    return
                if not batch:
                    return  # stopping
                if self._stop_requested:  # prefetched, never started: back to the queue
                    self._outcomes.requeue(batch)
                    return
                ident = threading.get_ident()
                with self._lock:
                    self._in_hand[ident] = batch
                try:
                    self._handle(lane, batch)
                except PoolWorkerLost as exc:
                    if not self._abandoned:
                        self._outcomes.lost(batch, str(exc))
                except BaseException as exc:
                    if not self._abandoned:
                        self._outcomes.requeue(batch)
                    self._fail(exc)
                    return
                finally:
                    with self._lock:
                        self._in_hand.pop(ident, None)
        finally:
            lane.close()  # a worker process finishes and exits

    def _handle(self, lane: Lane, deliveries: list[Delivery]) -> None:
        """Have the lane decode and write a batch; settle each delivery by its result."""
        for delivery in deliveries:
            # Back from a delay queue (or replayed), a record arrives under the work
            # queue's name; the lane decodes it with the key it was published with.
            delivery.message = restore_origin(delivery.message)
        metrics = self.metrics
        if metrics is None:
            results = lane.handle(deliveries)
        else:
            started = time.monotonic()
            results = lane.handle(deliveries)
            metrics.observe_batch(max(0.0, time.monotonic() - started), len(deliveries))
        if self._abandoned:  # the stop timed out meanwhile: these went back to the queue
            return
        self._outcomes.finish(deliveries, results, self._on_failure)

    def _on_failure(self, delivery: Delivery, exc: Exception) -> Forward:
        """Where a record the sink did not store goes: the seam for retry policies.

        By default :func:`logbus.worker.retry.route_failure` with the worker's policy: a
        delay queue while attempts remain and the failure is recoverable, else the
        dead-letter queue.
        """
        recoverable = is_recoverable(exc)
        if not recoverable:
            self._outcomes.count("rejected")
        message, outcome = route_failure(
            delivery.message,
            queue=self.queue,
            policy=self.retry,
            error=describe_failure(exc),
            recoverable=recoverable,
            stored=stored_by(exc),  # those sinks of several are not asked again
        )
        return Forward(delivery, message, outcome)

    # -- stopping ------------------------------------------------------------------------

    def _in_flight(self) -> list[Delivery]:
        with self._lock:
            return [delivery for batch in self._in_hand.values() for delivery in batch]

    def _tell(self, text: str) -> None:
        if self._report is not None:
            try:
                self._report(text)
            except Exception as exc:  # a broken pipe on stderr must not stop the stop
                log.debug("worker.report_failed", error=str(exc))

    def _shutdown(self, taker: Taker) -> None:
        self._stop_requested = True
        self._draining.set()
        deadline = time.monotonic() + self.shutdown_timeout
        returned: list[Delivery] = []
        try:
            # What the broker sent that no thread took: back to the queue, where other
            # workers get it now rather than when this connection closes.
            returned = taker.cancel()
            self._outcomes.requeue(returned)
        except LogbusError as exc:  # the connection is down: closing it requeues all
            log.warning("worker.cancel_failed", queue=self.queue, reason=str(exc))
        in_flight = len(self._in_flight())
        log.info(
            "worker.stopping",
            queue=self.queue,
            in_flight=in_flight,
            returned=len(returned),
            timeout=self.shutdown_timeout,
        )
        self._tell(
            f"draining {in_flight:,} in flight, returning {len(returned):,} prefetched "
            f"(at most {self.shutdown_timeout:g}s)"
        )
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread for thread in self._threads if thread.is_alive()]
        if stuck:
            self._give_up(len(stuck))
        self._outcomes.requeue(taker.leftovers())  # left by a thread that ended on an error
        try:
            if self._url is not None and self._transport is not None:
                self._transport.close()
        finally:
            if not stuck:  # a sink still inside write() is left open: closing it could block
                self.pool.close()
        self._outcomes.repeats.flush()  # the counts of repeated warnings, before the summary
        log.info("worker.stopped", pool=self.pool.kind, **vars(self.summary()))

    def _give_up(self, stuck: int) -> None:
        """Past the shutdown timeout: what the sink still holds goes back to the queue."""
        self._abandoned = True
        left = [delivery for delivery in self._in_flight() if delivery.settled is None]
        self._outcomes.requeue(left)
        log.info(  # info: the report says it on a console; json lines carry this event
            "worker.shutdown_timed_out",
            queue=self.queue,
            timeout=self.shutdown_timeout,
            requeued=len(left),
            busy=stuck,
        )
        self._tell(
            f"shutdown timeout ({self.shutdown_timeout:g}s): {len(left):,} records the sink "
            "has not finished go back to the queue"
        )
        if isinstance(self.pool, ProcessPool):  # worker processes still writing: stop them now
            self.pool.kill()


def _shutdown_timeout(value: object) -> float:
    """The shutdown timeout as seconds; ``ConfigError`` unless a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigError(f"the shutdown timeout must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _shown(sink: object) -> str:
    """A sink as a repr may show it: a spec (the process pool's) redacted, as any URL."""
    return repr(redact_url(sink)) if isinstance(sink, str) else repr(sink)
