"""The one place a running worker is assembled: connect, declare, consume, serve metrics, stop.

``logbus worker`` and the services (:func:`logbus.service.run_service`) both
call :func:`run`: each only says *what* to run (a :class:`WorkerPlan`) and how
to tell the operator, so the order that matters — refuse a pool the transport
cannot serve before connecting, declare the topology before consuming, bind the
metrics port before taking a record, close the transport whatever happened —
is written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from logbus._signals import stop_on_signals
from logbus.errors import NotFound
from logbus.topology import Queue, QueueType, declare
from logbus.transports import connect
from logbus.worker.consume import SHUTDOWN_TIMEOUT, Worker
from logbus.worker.lanes import PoolKind
from logbus.worker.pools import check_transport
from logbus.worker.retry import RetryPolicy
from logbus.worker.summary import WorkerSummary

if TYPE_CHECKING:
    from logbus.settings import Settings
    from logbus.sinks import Sink
    from logbus.topology import Topology
    from logbus.transports.base import Transport

__all__ = ["WorkerPlan", "run"]


@dataclass(frozen=True)
class WorkerPlan:
    """What to run: a queue of a topology, into a sink, with a pool, retries and metrics.

    ``sink`` is an opened sink or, for the process pool, its spec (each worker
    process opens it itself). ``metrics_port`` ``None`` serves no metrics;
    ``metrics_label`` names the sink in them. ``queue_type`` (classic, quorum,
    stream) is the type to create ``queue`` with when it is absent and the topology
    does not declare it; None: classic.
    """

    settings: Settings
    topology: Topology
    queue: str
    sink: Sink | str
    pool: PoolKind = "thread"
    prefetch: int | None = None
    concurrency: int = 1
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    shutdown_timeout: float = SHUTDOWN_TIMEOUT
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    metrics_label: str = ""
    queue_type: QueueType | None = None


def run(
    plan: WorkerPlan,
    *,
    on_started: Callable[[Worker, str | None], object] | None = None,
    report: Callable[[str], object] | None = None,
    stop_signals: bool = True,
    connecting: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> WorkerSummary:
    """Consume ``plan``'s queue until stopped (SIGTERM/SIGINT unless ``stop_signals`` is off).

    ``on_started`` gets the consuming worker and the metrics URL (``None`` when
    not served); ``report`` is told what a stopping worker does; ``connecting``
    wraps the first connect (the CLI quiets the warnings of its failed attempts).
    Returns the worker's summary once it stopped.
    """
    check_transport(plan.pool, plan.settings.url)  # before connecting: gevent blocks some
    metrics = None
    if plan.metrics_port is not None:
        from logbus.metrics import WorkerMetrics  # only when metrics are served

        metrics = WorkerMetrics(plan.queue, plan.metrics_label)
    with connecting():
        transport = connect(plan.settings.url, settings=plan.settings)
    try:
        _declare(transport, plan)
        worker = Worker(
            transport,
            plan.queue,
            plan.sink,
            pool=plan.pool,
            prefetch=plan.prefetch,
            concurrency=plan.concurrency,
            settings=plan.settings,
            retry=plan.retry.following(
                next((q for q in plan.topology.queues if q.name == plan.queue), None)
            ),
            metrics=metrics,
            shutdown_timeout=plan.shutdown_timeout,
            report=report,
        )
        with contextlib.ExitStack() as serving:
            served = None
            if metrics is not None and plan.metrics_port is not None:
                from logbus.metrics import serve_metrics

                # Bound before consuming: a port in use stops the worker before it takes a record.
                port, host = plan.metrics_port, plan.metrics_host
                server = serving.enter_context(
                    serve_metrics(metrics, port, host, health=worker.health)
                )
                served = server.url
            if stop_signals:
                serving.enter_context(stop_on_signals(worker.stop))
            worker.start()
            if on_started is not None:
                on_started(worker, served)
            return worker.wait()
    finally:
        transport.close()


def _declare(transport: Transport, plan: WorkerPlan) -> None:
    """Declare the topology and the worker's queue, using that queue as it exists if it does.

    A queue someone else declared (the RabbitMQ tutorials' quorum ``task_queue``) is
    consumed whatever its type and arguments: declaring it again with the topology's
    could only end in PRECONDITION_FAILED. An absent queue is created as the topology
    declares it, else durable with ``plan.queue_type`` (classic when None).
    """
    try:
        transport.declare_queue(plan.queue, passive=True)
    except NotFound:
        declare(transport, plan.topology)
        if plan.queue not in {q.name for q in plan.topology.queues}:
            # Through Queue: its checks hold (a quorum or stream queue is durable).
            made = Queue(name=plan.queue, queue_type=plan.queue_type)
            transport.declare_queue(made.name, durable=True, arguments=made.amqp_arguments())
        return
    declare(_Existing(transport, plan.queue), plan.topology)


class _Existing:
    """A :class:`~logbus.topology.Declarer` that leaves queue ``name`` as it exists (a
    passive declare) and declares everything else, bindings to that queue included."""

    def __init__(self, transport: Transport, name: str) -> None:
        self._transport = transport
        self._name = name
        self.url = transport.url
        self.declare_exchange = transport.declare_exchange
        self.bind_queue = transport.bind_queue
        self.bind_exchange = transport.bind_exchange

    def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> object:
        if name == self._name:
            return self._transport.declare_queue(name, passive=True)
        return self._transport.declare_queue(
            name,
            durable=durable,
            exclusive=exclusive,
            auto_delete=auto_delete,
            arguments=arguments,
            passive=passive,
        )
