"""Prometheus metrics and a health endpoint for a worker, through prometheus-client.

>>> metrics = WorkerMetrics("logbus.tasks", "jsonl:/var/log/logbus.jsonl")
>>> metrics.received(3)
>>> metrics.observe_batch(0.004, size=3)
>>> metrics.written(3)
>>> with serve_metrics(metrics, 9108) as server:  # doctest: +SKIP
...     print(server.url)  # http://127.0.0.1:9108/ : GET /metrics, GET /healthz

Each :class:`WorkerMetrics` owns a :class:`prometheus_client.CollectorRegistry`
(:attr:`~WorkerMetrics.registry`), never the library's global one: logbus passes
its objects explicitly, and one process may run several workers. What it
exposes, each sample labelled with ``queue`` and ``sink``:

=========================================  =========  =====================================
metric                                     type       what
=========================================  =========  =====================================
``logbus_worker_up``                       gauge      1: the worker's metrics are served
``logbus_worker_start_time_seconds``       gauge      when it started, Unix time
``logbus_worker_received_total``           counter    deliveries taken from the queue
``logbus_worker_written_total``            counter    records the sink stored (then acked)
``logbus_worker_failed_total``             counter    sink failures, one per record
``logbus_worker_retried_total``            counter    records sent to a delay queue
``logbus_worker_dead_lettered_total``      counter    records parked on ``<queue>.dead``
``logbus_worker_undecodable_total``        counter    deliveries that were not records
``logbus_worker_redelivered_total``        counter    records written again after a
                                                      redelivery (in ``written_total`` too;
                                                      sinks that de-duplicate keep one)
``logbus_worker_queue_depth``              gauge      messages ready in the queue, from a
                                                      passive declare every few seconds
``logbus_worker_batch_seconds``            histogram  time of one sink write, 1 ms..10 s
``logbus_worker_batch_records``            histogram  records in one sink write
=========================================  =========  =====================================

And, unlabelled, the process's own from prometheus-client's
:class:`~prometheus_client.ProcessCollector` (Linux only: it reads ``/proc``):
``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_virtual_memory_bytes``, ``process_open_fds``, ``process_max_fds``,
``process_start_time_seconds``.

The sink label is the sink's spec with any secret in it replaced by ``***``
(:func:`logbus._urls.redact_url`): a plugin's spec may hold a database URL, and
``/metrics`` is not a secret.

:func:`serve_metrics` answers ``GET /metrics`` (prometheus-client's WSGI app:
the text format 0.0.4, or OpenMetrics when the scraper asks for it) and ``GET
/healthz`` on 127.0.0.1 unless told another host. ``/healthz`` asks the
``health`` callable: 200 and ``{"status": "ok", ...details}`` when it says
healthy, 503 and ``{"status": "unhealthy", ...}`` when it says not, raises, or
returns nonsense. Nothing is written to stderr, neither per request nor when a
request fails.

This module imports prometheus-client at its top: only a worker or service with
metrics turned on imports this module, so ``logbus emit`` never pays for it.
"""

from __future__ import annotations

import errno
import io
import json
import math
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol, TextIO
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from logbus._log import get_logger
from logbus._urls import redact_url
from logbus.errors import ConfigError

__all__ = [
    "BATCH_RECORDS_BUCKETS",
    "BATCH_SECONDS_BUCKETS",
    "CONTENT_TYPE",
    "Health",
    "MetricsServer",
    "WorkerMetrics",
    "serve_metrics",
]

log = get_logger("logbus.metrics")

#: What ``/metrics`` answers a scraper that asks for no particular format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds of ``logbus_worker_batch_seconds``: 1 ms to 10 s, about three per decade.
BATCH_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Upper bounds of ``logbus_worker_batch_records``; the worker writes at most 100 at once.
BATCH_RECORDS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)

#: ``health()`` returns (healthy, details); details are merged into the JSON answer.
Health = Callable[[], tuple[bool, dict[str, object]]]


class Registered(Protocol):
    """What :func:`serve_metrics` serves: a worker's metrics, or the ingest gateway's."""

    registry: CollectorRegistry


_LABELS = ("queue", "sink")
# The counters: (name without prefix and _total, HELP).
_COUNTERS = (
    ("received", "Deliveries taken from the queue."),
    ("written", "Records the sink stored, then acked."),
    ("failed", "Sink failures, one per record."),
    ("retried", "Records sent to a delay queue, to be retried later."),
    ("dead_lettered", "Records parked on the dead-letter queue."),
    ("undecodable", "Deliveries that could not be decoded into a record."),
    (
        "redelivered",
        "Records written again after a redelivery (in written_total too; sinks that "
        "de-duplicate by id keep one copy).",
    ),
)
# How often the serving thread looks at close()'s request: the latency of close().
_POLL = 0.2


class WorkerMetrics:
    """The counters and histograms of one worker, consuming ``queue`` into ``sink``.

    It is the collector of its own :attr:`registry` (which also holds the
    process collector), so that a scrape is one snapshot: the two histograms
    are observed and collected under one lock, and always agree on the number
    of writes. Every method may be called from any thread. Counts must not be
    negative and durations must be finite and not negative
    (:class:`ValueError`): a counter that goes down reads as a restart to
    Prometheus.
    """

    def __init__(self, queue: str, sink: str) -> None:
        self.queue = queue
        self.sink = redact_url(sink)
        self.started = time.time()
        self._lock = threading.Lock()

        def family(kind: type[Any], name: str, text: str, **extra: Any) -> Any:
            # registry=None: collected through self.collect, which takes the lock.
            made = kind(f"logbus_worker_{name}", text, _LABELS, registry=None, **extra)
            self._families.append(made)
            return made.labels(queue, self.sink)

        self._families: list[MetricWrapperBase] = []
        family(Gauge, "up", "1 while the worker's metrics are served.").set(1)
        family(Gauge, "start_time_seconds", "Start time of the worker, Unix time.").set(
            self.started
        )
        self._counters: dict[str, Counter] = {
            name: family(Counter, name, text) for name, text in _COUNTERS
        }
        self._seconds: Histogram = family(
            Histogram, "batch_seconds", "Time of one sink write.", buckets=BATCH_SECONDS_BUCKETS
        )
        self._records: Histogram = family(
            Histogram, "batch_records", "Records in one sink write.", buckets=BATCH_RECORDS_BUCKETS
        )
        # Not exposed until the worker first looked: 0 would be a lie.
        self._depth_family = Gauge(
            "logbus_worker_queue_depth", "Messages ready in the queue.", _LABELS, registry=None
        )
        self._depth = self._depth_family.labels(queue, self.sink)
        self._depth_known = False
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def received(self, n: int = 1) -> None:
        """``n`` deliveries were taken from the queue."""
        self._add("received", n)

    def written(self, n: int = 1) -> None:
        """The sink stored ``n`` records (and they were acked)."""
        self._add("written", n)

    def failed(self, n: int = 1) -> None:
        """The sink failed to store ``n`` records."""
        self._add("failed", n)

    def retried(self, n: int = 1) -> None:
        """``n`` records were sent to a delay queue."""
        self._add("retried", n)

    def dead_lettered(self, n: int = 1) -> None:
        """``n`` records were parked on ``<queue>.dead``."""
        self._add("dead_lettered", n)

    def undecodable(self, n: int = 1) -> None:
        """``n`` deliveries could not be decoded into records."""
        self._add("undecodable", n)

    def redelivered(self, n: int = 1) -> None:
        """``n`` records the sink stored came redelivered (perhaps stored before)."""
        self._add("redelivered", n)

    def queue_depth(self, ready: int) -> None:
        """The queue holds ``ready`` messages ready for delivery (a gauge)."""
        if ready < 0:
            raise ValueError(f"a queue holds 0 or more messages, not {ready}")
        with self._lock:
            self._depth.set(ready)
            self._depth_known = True

    def observe_batch(self, seconds: float, size: int) -> None:
        """One sink write of ``size`` records took ``seconds``."""
        if not 0 <= seconds < math.inf or size < 0:
            raise ValueError(
                f"a batch takes finite seconds >= 0 and size >= 0, not {seconds}, {size}"
            )
        with self._lock:
            self._seconds.observe(seconds)
            self._records.observe(size)

    def render(self) -> str:
        """Every metric in the Prometheus text exposition format 0.0.4."""
        return generate_latest(self.registry).decode()

    def describe(self) -> Iterable[Metric]:
        """The worker's metric families, without samples (the registry indexes their names)."""
        families = [*self._families, self._depth_family]
        return [metric for family in families for metric in family.describe()]

    def collect(self) -> Iterable[Metric]:
        """The worker's metric families and their samples, as of one moment."""
        with self._lock:
            known = [*self._families, self._depth_family] if self._depth_known else self._families
            found = [metric for family in known for metric in family.collect()]
        for metric in found:
            # *_created would be nine more series per worker, saying what
            # logbus_worker_start_time_seconds says already.
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
        return found

    def __repr__(self) -> str:
        return f"<WorkerMetrics queue={self.queue!r} sink={self.sink!r}>"

    def _add(self, name: str, n: int) -> None:
        if n < 0:
            raise ValueError(f"counters only go up: {name}({n})")
        self._counters[name].inc(n)


# -- the HTTP server -------------------------------------------------------------------


class _DebugLog(io.StringIO):
    """Where wsgiref writes a failing request's traceback: logged at debug, not on stderr."""

    def flush(self) -> None:
        if text := self.getvalue():
            log.debug("metrics.request_failed", error=text)
            self.seek(0)
            self.truncate()


class _Handler(WSGIRequestHandler):
    """wsgiref's request handler, silent: a scrape every few seconds is not news."""

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing."""

    def get_stderr(self) -> TextIO:
        return _DebugLog()


class _Server(ThreadingWSGIServer):
    """prometheus-client's threading WSGI server, binding without a DNS lookup."""

    allow_reuse_port = False  # another process on the same port is an error, not a partner

    def __init__(self, address: tuple[str, int]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-answer is not worth a traceback on the worker's stderr.
        log.debug("metrics.request_failed", client=str(client_address), exc_info=True)


def _application(metrics: Registered, health: Health | None) -> WSGIApplication:
    """``/metrics`` to prometheus-client's app, ``/healthz`` to ``health``, else 404."""
    scrape: WSGIApplication = make_wsgi_app(metrics.registry)

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return scrape(environ, start_response)
        if path == "/healthz":
            status, text = _health(health)
            content_type = "application/json"
        else:
            status, content_type = 404, "text/plain; charset=utf-8"
            text = "not found: try /metrics or /healthz\n"
        start_response(f"{status} {HTTPStatus(status).phrase}", [("Content-Type", content_type)])
        return [text.encode()]

    return application


def _health(health: Health | None) -> tuple[int, str]:
    """The status and JSON body of ``/healthz``; a failing check is an unhealthy worker."""
    try:
        healthy, details = health() if health is not None else (True, {})
        status = "ok" if healthy else "unhealthy"
        body = json.dumps(
            {"status": status} | {k: v for k, v in details.items() if k != "status"}, default=str
        )
    except Exception as exc:
        log.info("metrics.health_failed", error=f"{type(exc).__name__}: {exc}")
        return 503, json.dumps({"status": "unhealthy", "error": "the health check failed"})
    return (200 if healthy else 503), body


class MetricsServer:
    """A running ``/metrics`` and ``/healthz`` endpoint; :meth:`close` (or ``with``) stops it.

    ``host`` and ``port`` are where it is bound (the port the system picked if
    0 was asked), ``url`` is its root.
    """

    def __init__(self, server: _Server) -> None:
        self._server = server
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL},
            name=f"logbus-metrics:{self.port}",
            daemon=True,
        )
        self._closed = False
        self._close_lock = threading.Lock()
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``, with an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        """Stop serving, free the port and join the serving thread; again does nothing."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url} closed={self._closed}>"


def serve_metrics(
    metrics: Registered,
    port: int,
    host: str = "127.0.0.1",
    health: Health | None = None,
) -> MetricsServer:
    """Serve ``metrics`` on ``host:port`` from a daemon thread; returns once bound.

    Only this machine can scrape it unless ``host`` says otherwise (``0.0.0.0``,
    ``::``). ``port`` 0 lets the system pick a free one (see
    :attr:`MetricsServer.port`). A port in use, or a host or port that cannot be
    bound, raises :class:`~logbus.errors.ConfigError`. ``health`` is called from
    the server's threads, once per ``/healthz`` request.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"metrics port must be 0..65535, not {port}")
    try:
        server = _Server((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use; pick another --metrics-port"
            ) from exc
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot serve metrics on {host} port {port}: {reason}") from exc
    server.set_app(_application(metrics, health))
    log.info("metrics.serving", host=host, port=server.server_address[1])
    return MetricsServer(server)
