"""``logbus ingest``: the syslog gateway assembled — listeners, publisher, spool, metrics.

>>> plan = IngestPlan(listeners=(Listen.parse("tcp", "5140"),))   # doctest: +SKIP
>>> run(plan)      # until SIGTERM; the exit status

:func:`run` is the one place a gateway is put together (the command line and
any embedding call it): listeners on an asyncio loop in the calling thread
(:mod:`~logbus.ingest.listeners`), one publisher thread with pika's pipelined
confirms (:mod:`~logbus.ingest.pipeline`, through
:class:`~logbus.emitter.Emitter`), an optional spool
(:mod:`~logbus.spool`) and ``/metrics`` + ``/healthz``
(:mod:`~logbus.ingest.metrics`). Every listener binds to 127.0.0.1 unless its
address names a host.

SIGTERM (or SIGINT) drains: listeners stop accepting and reading, RELP
sessions get their last answers and a ``serverclose``, the publisher gets until
``drain_timeout`` to have everything confirmed (or spooled). The exit status is
0 when nothing was left, 75 when records were read but neither confirmed nor
spooled (``EX_TEMPFAIL``), or the status of the error that stopped it
(77 credentials, 78 configuration).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from time import monotonic
from typing import Any

from logbus._log import get_logger
from logbus._signals import stop_on_signals
from logbus.errors import EX_TEMPFAIL, ConfigError
from logbus.ingest.framing import DEFAULT_MAX_SIZE
from logbus.ingest.listeners import (
    Context,
    DatagramListener,
    Gate,
    ListenerStats,
    RelpConnection,
    StreamConnection,
    udp_kernel_drops,
)
from logbus.ingest.pipeline import Link, Pipeline
from logbus.record import LogRecord, hostname
from logbus.settings import Settings
from logbus.spool import FsyncPolicy, Spool
from logbus.topology import Topology
from logbus.transports.amqp.window import DEEP_BUDGET

__all__ = ["KINDS", "IngestPlan", "Listen", "Running", "run"]

log = get_logger("logbus.ingest")

KINDS = ("udp", "tcp", "tls", "relp", "unix")
#: The most publishes in flight (the window's ceiling; ``DEEP_BUDGET`` seconds of the
#: broker's pace below that): under ``max_in_flight``, so listeners read ahead of it.
PUBLISH_WINDOW = 15_000


@dataclass(frozen=True)
class Listen:
    """One listener: its kind and where (``host``/``port``, or ``path`` for unix)."""

    kind: str
    host: str = "127.0.0.1"
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, kind: str, address: str) -> Listen:
        """``HOST:PORT``, ``[v6]:PORT``, ``:PORT`` or ``PORT`` (loopback); a path for unix."""
        if kind not in KINDS:
            raise ConfigError(f"unknown listener {kind!r}; one of {', '.join(KINDS)}")
        if kind == "unix":
            if not address:
                raise ConfigError("--unix needs a socket path, e.g. /run/logbus/log")
            return cls(kind, path=address)
        host, sep, port = address.rpartition(":")
        if not sep:
            host, port = "", address
        host = host.strip("[]") or "127.0.0.1"
        try:
            number = int(port)
        except ValueError:
            number = -1
        if not 0 <= number <= 65535:
            raise ConfigError(f"--{kind} {address}: the port must be 0..65535 (HOST:PORT)")
        return cls(kind, host, number)

    @property
    def name(self) -> str:
        """``tcp:127.0.0.1:5140``: the ``listener`` label of its metrics."""
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"


@dataclass(frozen=True)
class IngestPlan:
    """Everything a gateway needs; :func:`run` builds it (see the CLI's ``--help``)."""

    listeners: tuple[Listen, ...]
    settings: Settings | None = None
    topology: Topology | None = None
    cert: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    max_size: int = DEFAULT_MAX_SIZE
    max_per_peer: int = 64
    idle_timeout: float = 300.0
    max_in_flight: int = 40_000
    batch_size: int = 5000
    spool: Path | None = None
    spool_max_bytes: int = 1024**3
    spool_fsync: FsyncPolicy = "always"
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    drain_timeout: float = 30.0
    reconnect_max_delay: float = 2.0
    #: Seconds a batch may wait for confirms before it is held (or spooled); default:
    #: the settings' confirm_timeout, or 5 s with a spool (records go to disk sooner).
    confirm_timeout: float | None = None

    def check(self) -> None:
        """Refuse a plan that cannot run, before anything is bound."""
        if not self.listeners:
            raise ConfigError(
                "no listener: give at least one of --udp, --tcp, --tls, --relp, --unix"
            )
        if any(lis.kind == "tls" for lis in self.listeners) and not (self.cert and self.key):
            raise ConfigError("--tls needs --cert and --key (PEM files)")
        if self.max_size < 64 or self.max_in_flight < 1 or self.max_per_peer < 1:
            raise ConfigError("--max-size must be >= 64, --max-in-flight and --max-per-peer >= 1")


class _BrokerLink:
    """The publisher's :class:`~logbus.ingest.pipeline.Link`: an Emitter on a transport
    opened with the gateway's options (a short reconnect pause, a named connection, and a
    deep confirm window: up to a second of the broker's pace in flight, see
    ``transports.amqp.window``; a reset re-sends more, and records keep their ids)."""

    def __init__(self, plan: IngestPlan, settings: Settings) -> None:
        from logbus.emitter import Emitter
        from logbus.transports import connect

        timeout = plan.confirm_timeout
        if timeout is None:
            timeout = min(settings.confirm_timeout, 5.0) if plan.spool else settings.confirm_timeout
        self._transport = connect(
            settings.url,
            settings=settings,
            confirm_timeout=timeout,
            reconnect_max_delay=plan.reconnect_max_delay,
            connection_name=f"logbus-ingest-{hostname()}",
            publish_window=PUBLISH_WINDOW,
            publish_budget=DEEP_BUDGET,
        )
        try:
            self._emitter = Emitter(
                settings=settings, topology=plan.topology, transport=self._transport
            )
            self._emitter.transport  # noqa: B018  (declares the topology now)
        except BaseException:
            self._transport.close()
            raise

    @property
    def connected(self) -> bool:
        return bool(getattr(self._transport, "connected", True))

    def emit_many(self, records: Iterable[LogRecord]) -> int:
        return self._emitter.emit_many(records)

    def emit_stream(
        self,
        take: Callable[[int], tuple[list[LogRecord], bool]],
        progress: Callable[[int], None],
    ) -> int:
        return self._emitter.emit_stream(take, progress)

    def close(self) -> None:
        self._transport.close()


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    """A server context for RFC 5425: TLS 1.2 or later, the system's secure defaults; with
    ``client_ca``, a client certificate signed by it is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            context.load_verify_locations(cafile=str(client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot load the TLS files (--cert, --key, --client-ca): {why}"
        ) from None
    return context


@dataclass
class Running:
    """A gateway that is up, as ``run``'s ``ready`` callback sees it."""

    #: ``tcp 127.0.0.1:5140`` per listener, the ports bound (not 0).
    addresses: list[str]
    #: Each listener's counters (read them on any thread; they only grow).
    listeners: list[ListenerStats]
    #: Ask the gateway to drain and stop, as SIGTERM does (any thread).
    stop: Callable[[], None]


def run(
    plan: IngestPlan,
    *,
    ready: Callable[[Running], None] | None = None,
    link: Callable[[], Link] | None = None,
) -> int:
    """Run a gateway until SIGTERM/SIGINT (or ``Running.stop``); the exit status.

    ``ready`` is called once every listener is bound; ``link`` replaces the broker
    connection (tests).
    """
    plan.check()
    settings = plan.settings or Settings()
    spool = None
    if plan.spool is not None:
        spool = Spool(plan.spool, max_bytes=plan.spool_max_bytes, fsync=plan.spool_fsync)
    return asyncio.run(_serve(plan, settings, spool, ready, link))


async def _serve(
    plan: IngestPlan,
    settings: Settings,
    spool: Spool | None,
    ready: Callable[[Running], None] | None,
    link: Callable[[], Link] | None,
) -> int:
    loop = asyncio.get_running_loop()
    ctx: Context | None = None

    # Settlements come per confirm frame (from pika's I/O thread): queued here and handed
    # to the loop by one wake-up for all that wait, not a self-pipe write each.
    waiting: deque[tuple[list[Any], Any]] = deque()
    woken = [False]

    def deliver() -> None:
        assert ctx is not None
        woken[0] = False
        while waiting:
            ctx.settled(*waiting.popleft())

    def settle(items: list[Any], outcome: Any) -> None:
        waiting.append((items, outcome))
        if not woken[0]:
            woken[0] = True
            loop.call_soon_threadsafe(deliver)

    if link is None:
        link = await _first_link(plan, settings, spool)
    pipeline = Pipeline(
        link,
        settle,
        spool=spool,
        batch_size=plan.batch_size,
    )
    ctx = Context(
        pipeline,
        Gate(plan.max_in_flight),
        max_size=plan.max_size,
        max_per_peer=plan.max_per_peer,
        idle_timeout=plan.idle_timeout,
        local_host=hostname(),
    )
    stats = [ListenerStats(listen.name) for listen in plan.listeners]
    servers, addresses = await _bind_all(plan, ctx, stats)
    pipeline.start()
    metrics_server = _serve_metrics(plan, stats, pipeline, ctx)
    stop = asyncio.Event()

    def ask_to_stop() -> None:
        loop.call_soon_threadsafe(stop.set)

    with stop_on_signals(ask_to_stop):  # before "ready": a SIGTERM right after it drains
        if ready is not None:
            ready(Running(addresses, stats, ask_to_stop))
        await _until(stop, pipeline, ctx)
    log.info("ingest.draining", in_flight=ctx.gate.in_flight)
    ctx.stop_reading()
    for server in servers:
        server.close()
    # The loop keeps running meanwhile: settlements answer RELP frames as they come.
    drained = await loop.run_in_executor(None, pipeline.stop, monotonic() + plan.drain_timeout)
    await _close_connections(ctx)
    if metrics_server is not None:
        metrics_server.close()
    _remove_unix_sockets(plan)
    if pipeline.fatal is not None:
        raise pipeline.fatal
    return 0 if drained else EX_TEMPFAIL


async def _first_link(
    plan: IngestPlan, settings: Settings, spool: Spool | None
) -> Callable[[], Link]:
    """The broker link factory. Without a spool the broker must answer now: a gateway that
    could only hold lines back fails at once (69, 77) rather than accept and stall."""
    if spool is not None:
        return partial(_BrokerLink, plan, settings)
    loop = asyncio.get_running_loop()
    first: list[Link] = [await loop.run_in_executor(None, _BrokerLink, plan, settings)]

    def factory() -> Link:
        return first.pop() if first else _BrokerLink(plan, settings)

    return factory


async def _bind_all(
    plan: IngestPlan, ctx: Context, stats: list[ListenerStats]
) -> tuple[list[Any], list[str]]:
    """Bind every listener (all or none); their servers and the addresses bound."""
    servers: list[Any] = []
    try:
        for listen, listener_stats in zip(plan.listeners, stats, strict=True):
            servers.append(await _bind(plan, ctx, listen, listener_stats))
    except OSError as exc:
        for server in servers:
            server.close()
        raise ConfigError(f"cannot listen: {exc.strerror or exc}") from None
    addresses = [_address(li, server) for li, server in zip(plan.listeners, servers, strict=True)]
    for listener_stats, address in zip(stats, addresses, strict=True):
        listener_stats.name = address.replace(" ", ":", 1)  # the port bound, not the one asked
    return servers, addresses


async def _until(stop: asyncio.Event, pipeline: Pipeline, ctx: Context) -> None:
    """Wait for a stop signal, or for the publisher to stop on an error it cannot wait out;
    meanwhile close idle connections."""
    while not stop.is_set() and pipeline.fatal is None:
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            ctx.close_idle()


async def _bind(plan: IngestPlan, ctx: Context, listen: Listen, stats: ListenerStats) -> Any:
    loop = asyncio.get_running_loop()
    if listen.kind in ("tcp", "tls", "relp"):
        kind = RelpConnection if listen.kind == "relp" else StreamConnection
        context = None
        if listen.kind == "tls":
            assert plan.cert is not None and plan.key is not None
            context = tls_context(plan.cert, plan.key, plan.client_ca)
        return await loop.create_server(
            lambda: kind(ctx, stats), listen.host, listen.port, ssl=context
        )
    if listen.kind == "udp":
        transport, _ = await loop.create_datagram_endpoint(
            lambda: DatagramListener(ctx, stats), local_addr=(listen.host, listen.port)
        )
        sock = transport.get_extra_info("socket")
        _bigger_buffer(sock)
        stats.kernel_drops = udp_kernel_drops(sock)
        return transport
    return await _bind_unix(ctx, listen, stats)


async def _bind_unix(ctx: Context, listen: Listen, stats: ListenerStats) -> Any:
    """A datagram socket at ``listen.path``, like ``/dev/log``: writable by local programs."""
    import os
    import socket

    path = Path(listen.path)
    if path.is_socket():
        path.unlink()  # left by a gateway that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    os.chmod(path, 0o666)
    _bigger_buffer(sock)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DatagramListener(ctx, stats, local=True), sock=sock
    )
    return transport


def _bigger_buffer(sock: Any) -> None:
    """Ask for a 4 MiB receive buffer: bursts wait in the kernel instead of being dropped."""
    import socket

    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)


def _address(listen: Listen, server: Any) -> str:
    if listen.kind == "unix":
        return f"unix {listen.path}"
    if isinstance(server, asyncio.AbstractServer):
        sockets = list(getattr(server, "sockets", ()))
        host, port = sockets[0].getsockname()[:2]
    else:
        host, port = server.get_extra_info("sockname")[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{listen.kind} {host}:{port}"


async def _close_connections(ctx: Context) -> None:
    """Say goodbye to every connection (RELP: ``serverclose``) and let the closes go out."""
    for connection in list(ctx.connections):
        connection.goodbye()
    for _ in range(50):
        if not ctx.connections:
            return
        await asyncio.sleep(0.02)


def _serve_metrics(
    plan: IngestPlan, stats: list[ListenerStats], pipeline: Pipeline, ctx: Context
) -> Any:
    if plan.metrics_port is None:
        return None
    from logbus.ingest.metrics import IngestMetrics
    from logbus.metrics import serve_metrics

    def health() -> tuple[bool, dict[str, object]]:
        spool = pipeline.spool
        details: dict[str, object] = {
            "in_flight": ctx.gate.in_flight,
            "listeners": [s.name for s in stats],
        }
        if spool is not None:
            details["spool_records"] = len(spool)
        if pipeline.stats.last_error and not pipeline.healthy:
            details["error"] = pipeline.stats.last_error
        return pipeline.healthy or (spool is not None and pipeline.fatal is None), details

    return serve_metrics(
        IngestMetrics(stats, pipeline), plan.metrics_port, plan.metrics_host, health=health
    )


def _remove_unix_sockets(plan: IngestPlan) -> None:
    for listen in plan.listeners:
        if listen.kind == "unix":
            with contextlib.suppress(OSError):
                Path(listen.path).unlink()
