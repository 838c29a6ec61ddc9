"""The worker: consume one work queue into a sink, acking each record once the sink has it.

:mod:`~logbus.worker.consume` is the consume loop (:class:`Worker`), and
:mod:`~logbus.worker.summary` what it did; :mod:`~logbus.worker.pools` and
:mod:`~logbus.worker.processes` say where records are decoded and written
(threads, greenlets, worker processes), over :mod:`~logbus.worker.lanes`;
:mod:`~logbus.worker.batching` sizes and takes batches; :mod:`~logbus.worker.outcomes`
settles each delivery by what the sink did; :mod:`~logbus.worker.retry` owns the
delay and dead-letter queues and their headers, :mod:`~logbus.worker.dlq` reads
and replays the dead letters; :func:`run` (:mod:`~logbus.worker.assembly`) is the
one place a running worker is assembled — ``logbus worker`` and the services call it.
"""

from __future__ import annotations

from logbus.worker.assembly import WorkerPlan, run
from logbus.worker.batching import default_prefetch
from logbus.worker.consume import Worker
from logbus.worker.summary import WorkerSummary, units

__all__ = ["Worker", "WorkerPlan", "WorkerSummary", "default_prefetch", "run", "units"]
