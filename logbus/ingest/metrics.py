"""The gateway's Prometheus metrics, per listener, through prometheus-client.

Served by :func:`logbus.metrics.serve_metrics` (``GET /metrics``, ``GET /healthz``)
from a registry of the gateway's own, as the worker's are. The counters are the
listeners' own integers, read when scraped (a collector), so counting costs the
hot path an integer add and nothing else. Each sample is labelled ``listener``
(``tcp:127.0.0.1:5140``):

=============================================  =========  ====================================
metric                                         type       what
=============================================  =========  ====================================
``logbus_ingest_received_total``               counter    messages read (datagrams, frames)
``logbus_ingest_parsed_total``                 counter    read with a syslog header
``logbus_ingest_unparsed_total``               counter    kept raw (no header it could read)
``logbus_ingest_truncated_total``              counter    cut at the maximum message size
``logbus_ingest_published_total``              counter    records handed to the publisher
``logbus_ingest_confirmed_total``              counter    records RabbitMQ confirmed
``logbus_ingest_spooled_total``                counter    records written to the spool
``logbus_ingest_dropped_total``                counter    datagrams with no room, refused records
``logbus_ingest_kernel_dropped_total``         counter    UDP datagrams the kernel dropped
``logbus_ingest_in_flight``                    gauge      handed over, not yet settled
``logbus_ingest_connections``                  gauge      open stream connections
``logbus_ingest_refused_connections_total``    counter    over the per-peer limit
``logbus_ingest_spool_records``                gauge      waiting in the spool (no label)
``logbus_ingest_spool_bytes``                  gauge      the spool's size on disk
``logbus_ingest_replayed_total``               counter    spooled records since confirmed
=============================================  =========  ====================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from logbus.ingest.listeners import ListenerStats
from logbus.ingest.pipeline import Pipeline

__all__ = ["IngestMetrics"]

_COUNTERS = (
    ("received", "Messages read (datagrams, frames)."),
    ("parsed", "Messages read with a syslog header."),
    ("unparsed", "Messages kept raw: no header could be read."),
    ("truncated", "Messages cut at the maximum message size."),
    ("published", "Records handed to the publisher."),
    ("confirmed", "Records RabbitMQ confirmed."),
    ("spooled", "Records written to the spool."),
    ("dropped", "Datagrams dropped for lack of room, records refused."),
    ("refused_connections", "Connections refused: over the per-peer limit."),
)


class IngestMetrics:
    """A collector over the listeners' counters and the pipeline's spool; ``registry``
    is the gateway's own (never prometheus-client's global one)."""

    def __init__(self, listeners: Sequence[ListenerStats], pipeline: Pipeline) -> None:
        self.listeners = list(listeners)
        self.pipeline = pipeline
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def describe(self) -> Iterable[Metric]:
        return []  # collected on scrape; nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        for name, text in _COUNTERS:
            family = CounterMetricFamily(f"logbus_ingest_{name}", text, labels=["listener"])
            for stats in self.listeners:
                family.add_metric([stats.name], getattr(stats, name))
            yield family
        kernel = CounterMetricFamily(
            "logbus_ingest_kernel_dropped", "UDP datagrams the kernel dropped.", labels=["listener"]
        )
        in_flight = GaugeMetricFamily(
            "logbus_ingest_in_flight", "Records handed over, not yet settled.", labels=["listener"]
        )
        connections = GaugeMetricFamily(
            "logbus_ingest_connections", "Open stream connections.", labels=["listener"]
        )
        for stats in self.listeners:
            if stats.kernel_drops is not None:
                kernel.add_metric([stats.name], stats.kernel_drops())
            in_flight.add_metric([stats.name], stats.in_flight)
            connections.add_metric([stats.name], stats.connections)
        yield from (kernel, in_flight, connections)
        spool = self.pipeline.spool
        if spool is not None:
            yield GaugeMetricFamily(
                "logbus_ingest_spool_records", "Records waiting in the spool.", value=len(spool)
            )
            yield GaugeMetricFamily(
                "logbus_ingest_spool_bytes", "The spool's size on disk.", value=spool.size
            )
            yield CounterMetricFamily(
                "logbus_ingest_replayed",
                "Spooled records since confirmed.",
                value=self.pipeline.stats.replayed,
            )
