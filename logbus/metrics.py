"""Prometheus metrics and a health endpoint for a worker, with the standard library only.

>>> metrics = WorkerMetrics("logbus.tasks", "jsonl:/var/log/logbus.jsonl")
>>> metrics.received(3)
>>> metrics.observe_batch(0.004, size=3)
>>> metrics.written(3)
>>> with serve_metrics(metrics, 9108) as server:  # doctest: +SKIP
...     print(server.url)  # http://127.0.0.1:9108/ : GET /metrics, GET /healthz

What :meth:`WorkerMetrics.render` exposes (Prometheus text format 0.0.4), each
sample labelled with ``queue`` and ``sink``:

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

And, unlabelled, the process's own, under the names every Prometheus client
library uses (read from ``/proc`` on Linux; elsewhere only the CPU time and
start time): ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_virtual_memory_bytes``, ``process_open_fds``, ``process_max_fds``,
``process_start_time_seconds``.

The sink label is the sink's spec with any password in it replaced by ``***``:
a plugin's spec may hold a database URL, and ``/metrics`` is not a secret.

:func:`serve_metrics` answers ``GET /metrics`` and ``GET /healthz`` on
127.0.0.1 unless told another host. ``/healthz`` asks the ``health`` callable:
200 and ``{"status": "ok", ...details}`` when it says healthy, 503 and
``{"status": "unhealthy", ...}`` when it says not, raises, or returns nonsense.
Nothing is written to stderr, neither per request nor when a client hangs up.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import socketserver
import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import accumulate
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from logbus._log import get_logger
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

_PREFIX = "logbus_worker_"
# The counters, in the order they are rendered: (name without prefix and _total, HELP).
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
# A histogram's bounds, its per-bucket counts (the last one +Inf) and its sum.
_Snapshot = tuple[tuple[float, ...], list[int], float]
# How often the serving thread looks at close()'s request: the latency of close().
_POLL = 0.2


def _number(value: float) -> str:
    """A sample value as the text format spells it (Go's ParseFloat reads it back)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape(value: str) -> str:
    """A label value escaped for the text format: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Histogram:
    """Bucket counts, a sum and nothing else; the owner holds the lock."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum: float = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le is <=).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> _Snapshot:
        return self.bounds, list(self.counts), self.sum


class WorkerMetrics:
    """The counters and histograms of one worker, consuming ``queue`` into ``sink``.

    Every method may be called from any thread: one lock per instance guards the
    numbers, held for a few additions per call, and :meth:`render` copies them
    under it and formats outside it. Counts must not be negative and durations
    must be finite and not negative (:class:`ValueError`): a counter that goes
    down reads as a restart to Prometheus.
    """

    def __init__(self, queue: str, sink: str) -> None:
        from logbus.settings import redact_url  # pydantic-settings: only when metrics are on

        self.queue = queue
        self.sink = redact_url(sink)
        self.started = time.time()
        self._labels = f'queue="{_escape(queue)}",sink="{_escape(self.sink)}"'
        self._lock = threading.Lock()
        self._counts = dict.fromkeys((name for name, _ in _COUNTERS), 0)
        self._seconds = _Histogram(BATCH_SECONDS_BUCKETS)
        self._records = _Histogram(BATCH_RECORDS_BUCKETS)
        self._depth: int | None = None  # not known until the worker first looked

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
            self._depth = ready

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
        with self._lock:
            counts = dict(self._counts)
            seconds = self._seconds.snapshot()
            records = self._records.snapshot()
            depth = self._depth
        labels = self._labels
        lines = [
            *self._family("up", "gauge", "1 while the worker's metrics are served."),
            f"{_PREFIX}up{{{labels}}} 1",
            *self._family("start_time_seconds", "gauge", "Start time of the worker, Unix time."),
            f"{_PREFIX}start_time_seconds{{{labels}}} {_number(self.started)}",
        ]
        for name, text in _COUNTERS:
            lines += self._family(f"{name}_total", "counter", text)
            lines.append(f"{_PREFIX}{name}_total{{{labels}}} {counts[name]}")
        if depth is not None:
            lines += self._family("queue_depth", "gauge", "Messages ready in the queue.")
            lines.append(f"{_PREFIX}queue_depth{{{labels}}} {depth}")
        lines += self._histogram("batch_seconds", "Time of one sink write.", seconds)
        lines += self._histogram("batch_records", "Records in one sink write.", records)
        lines += _process_lines()
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"<WorkerMetrics queue={self.queue!r} sink={self.sink!r}>"

    def _add(self, name: str, n: int) -> None:
        if n < 0:
            raise ValueError(f"counters only go up: {name}({n})")
        with self._lock:
            self._counts[name] += n

    @staticmethod
    def _family(name: str, kind: str, text: str) -> list[str]:
        return [f"# HELP {_PREFIX}{name} {text}", f"# TYPE {_PREFIX}{name} {kind}"]

    def _histogram(self, name: str, text: str, snapshot: _Snapshot) -> list[str]:
        bounds, counts, total = snapshot
        metric = _PREFIX + name
        les = [*(_number(bound) for bound in bounds), "+Inf"]
        lines = self._family(name, "histogram", text)
        for le, cumulative in zip(les, accumulate(counts), strict=True):
            lines.append(f'{metric}_bucket{{{self._labels},le="{le}"}} {cumulative}')
        lines.append(f"{metric}_sum{{{self._labels}}} {_number(total)}")
        lines.append(f"{metric}_count{{{self._labels}}} {sum(counts)}")
        return lines


# -- the process collector -----------------------------------------------------------------

_PROCESS_HELP = {
    "process_cpu_seconds_total": ("counter", "Total user and system CPU time spent in seconds."),
    "process_resident_memory_bytes": ("gauge", "Resident memory size in bytes."),
    "process_virtual_memory_bytes": ("gauge", "Virtual memory size in bytes."),
    "process_open_fds": ("gauge", "Number of open file descriptors."),
    "process_max_fds": ("gauge", "Maximum number of open file descriptors."),
    "process_start_time_seconds": (
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    ),
}


def process_metrics() -> dict[str, float]:
    """This process's CPU seconds, memory, file descriptors and start time, by the metric
    names Prometheus' client libraries use; what the platform cannot tell is left out."""
    times = os.times()
    found: dict[str, float] = {"process_cpu_seconds_total": times.user + times.system}
    try:
        with open("/proc/self/stat", "rb") as stat:
            # The command (field 2) may hold spaces: the fields after its ")" are plain.
            fields = stat.read().rpartition(b")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/stat", "rb") as system:
            boot = next(float(line.split()[1]) for line in system if line.startswith(b"btime"))
        # Fields 3.. of stat(5): vsize is field 23, rss field 24, starttime field 22.
        found["process_virtual_memory_bytes"] = float(fields[20])
        found["process_resident_memory_bytes"] = float(int(fields[21]) * page)
        found["process_start_time_seconds"] = boot + int(fields[19]) / ticks
        found["process_open_fds"] = float(len(os.listdir("/proc/self/fd")))
    except (OSError, ValueError, IndexError, StopIteration):
        found.setdefault("process_start_time_seconds", _STARTED)
    try:
        import resource

        found["process_max_fds"] = float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    except (ImportError, OSError, ValueError):
        pass
    return found


def _process_lines() -> list[str]:
    lines: list[str] = []
    for name, value in process_metrics().items():
        kind, text = _PROCESS_HELP[name]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {_number(value)}"]
    return lines


# When this module was imported: the start time where /proc cannot tell it.
_STARTED = time.time()


class _Server(ThreadingHTTPServer):
    """The HTTP server, holding what the handler needs; binds without a DNS lookup."""

    daemon_threads = True
    allow_reuse_port = False  # another process on the same port is an error, not a partner

    def __init__(
        self, address: tuple[str, int], metrics: WorkerMetrics, health: Health | None
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.metrics = metrics
        self.health = health
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a slow resolver.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-answer is not worth a traceback on the worker's stderr.
        log.debug("metrics.request_failed", client=str(client_address), exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """GET /metrics and GET /healthz; 404 for anything else."""

    server_version = "logbus-metrics"

    def do_GET(self) -> None:
        server = cast(_Server, self.server)
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE, server.metrics.render())
        elif path == "/healthz":
            status, body = _health(server.health)
            self._answer(status, "application/json", body)
        else:
            self._answer(404, "text/plain; charset=utf-8", "not found: try /metrics or /healthz\n")

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing: a scrape every few seconds is not news."""

    def _answer(self, status: int, content_type: str, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


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
    metrics: WorkerMetrics,
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
        server = _Server((host, port), metrics, health)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is in use; pick another --metrics-port"
            ) from exc
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot serve metrics on {host} port {port}: {reason}") from exc
    log.info("metrics.serving", host=host, port=server.server_address[1])
    return MetricsServer(server)
