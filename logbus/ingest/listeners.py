"""The gateway's listeners, on one asyncio loop: UDP, unix datagrams, TCP, TLS and RELP.

Why asyncio and not a thread per connection: the work per message (framing,
parsing) is Python either way and shares one GIL with the publisher thread;
asyncio adds no thread switch per read, holds thousands of idle connections
for the cost of their buffers, and makes "stop reading" a plain ``await``.
Measured on this machine with ``loggen`` (bench/ingest.py) the publisher, not
the listeners, is the bound.

Back-pressure: every listener counts what it handed to the
:class:`~logbus.ingest.pipeline.Pipeline` and is not yet settled; all of them
share one :class:`Gate` of ``max_in_flight`` records. A stream connection
(TCP, TLS, RELP) waits for room before each read, so a sender whose records
are not being confirmed sees its TCP window close. A datagram cannot wait: it
is dropped and counted (the kernel's own drops of a UDP socket are read from
``/proc/net/udp``). RELP answers a frame only once its record was confirmed
(or written to the spool).

Limits: ``max_size`` per message (longer ones are cut and flagged), at most
``max_per_peer`` connections from one address, and ``idle_timeout`` seconds
without a byte closes a connection.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from time import monotonic
from typing import Any

from logbus._log import get_logger
from logbus.ingest import relp
from logbus.ingest.framing import Framer, Truncated
from logbus.ingest.pipeline import Outcome, Pending, Pipeline
from logbus.ingest.syslog import parse_record, peer_host

__all__ = [
    "Context",
    "DatagramListener",
    "Gate",
    "ListenerStats",
    "RelpConnection",
    "StreamConnection",
    "udp_kernel_drops",
]

log = get_logger("logbus.ingest")


@dataclass(slots=True)
class ListenerStats:
    """One listener's counters (touched on the loop's thread only)."""

    name: str
    received: int = 0
    parsed: int = 0
    unparsed: int = 0
    published: int = 0
    confirmed: int = 0
    spooled: int = 0
    failed: int = 0
    dropped: int = 0
    truncated: int = 0
    connections: int = 0
    refused_connections: int = 0
    #: The most records this listener had in flight at once (back-pressure's evidence).
    peak_in_flight: int = 0
    #: Times a connection stopped reading for want of room.
    pauses: int = 0
    kernel_drops: Callable[[], int] | None = None

    @property
    def in_flight(self) -> int:
        return self.published - self.confirmed - self.spooled - self.failed


class Gate:
    """The shared bound on records handed over and not yet settled."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_flight = 0
        self.closed = False  # the gateway is stopping: nobody reads again
        #: Connections that stopped reading for want of room.
        self.waiting: set[StreamConnection] = set()

    def take(self, n: int) -> None:
        self.in_flight += n

    def release(self, n: int) -> None:
        self.in_flight -= n
        # Resume from half the bound: fewer pause/resume flips than at the edge.
        if self.waiting and not self.closed and self.in_flight <= self.limit // 2:
            waiting, self.waiting = self.waiting, set()
            for connection in waiting:
                connection.resume()

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit


@dataclass
class Context:
    """What every listener shares: the pipeline, the gate, the limits, the loop."""

    pipeline: Pipeline
    gate: Gate
    max_size: int = 64 * 1024
    max_per_peer: int = 64
    idle_timeout: float = 300.0
    local_host: str = ""
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    per_peer: dict[str, int] = field(default_factory=dict)
    connections: set[StreamConnection] = field(default_factory=set)

    def stop_reading(self) -> None:
        """Every stream connection stops reading (the drain); datagrams are refused."""
        self.stopping.set()
        self.gate.closed = True
        for connection in list(self.connections):
            connection.pause()

    def close_idle(self) -> None:
        """Close connections silent for ``idle_timeout`` (not those paused by us)."""
        cut = monotonic() - self.idle_timeout
        for connection in list(self.connections):
            if connection.last < cut and not connection.paused:
                log.info("ingest.idle_closed", peer=connection.peer)
                connection.goodbye()

    def hand_over(
        self,
        stats: ListenerStats,
        messages: list[bytes],
        peer: str,
        done: Callable[[Outcome], None] | None = None,
        **parse_options: Any,
    ) -> None:
        """Parse ``messages`` and queue their records (one lock for the lot)."""
        records = [parse_record(m, peer, **parse_options) for m in messages]
        unparsed = sum(not r.fields["syslog"]["parsed"] for r in records)
        stats.parsed += len(records) - unparsed
        stats.unparsed += unparsed
        stats.truncated += sum(type(m) is Truncated for m in messages)
        items = [Pending(record, stats, done) for record in records]
        stats.received += len(messages)
        stats.published += len(items)
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)
        self.gate.take(len(items))
        self.pipeline.put(items)

    def settled(self, items: list[Pending], outcome: Outcome) -> None:
        """The pipeline's word on a batch, on the loop's thread: count, answer, open the gate."""
        for item in items:
            stats: ListenerStats = item.source
            if outcome == "confirmed":
                stats.confirmed += 1
            elif outcome == "spooled":
                stats.spooled += 1
            else:
                stats.failed += 1
                stats.dropped += 1
            if item.done is not None:
                item.done(outcome)
        self.gate.release(len(items))

    def admit(self, peer: str, stats: ListenerStats) -> str | None:
        """The peer's host if it may open one more connection, else None (counted)."""
        host = peer_host(peer)
        if self.per_peer.get(host, 0) >= self.max_per_peer:
            stats.refused_connections += 1
            log.warning("ingest.too_many_connections", peer=host, limit=self.max_per_peer)
            return None
        self.per_peer[host] = self.per_peer.get(host, 0) + 1
        stats.connections += 1
        return host

    def leave(self, host: str, stats: ListenerStats) -> None:
        left = self.per_peer.get(host, 1) - 1
        if left:
            self.per_peer[host] = left
        else:
            self.per_peer.pop(host, None)
        stats.connections -= 1


def _peer(address: Any) -> str:
    """``host:port`` of a socket address (IPv6 in brackets)."""
    if not isinstance(address, tuple):
        return str(address or "unknown")
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class StreamConnection(asyncio.Protocol):
    """One TCP or TLS connection: RFC 6587 framing auto-detected, records handed over.

    A protocol rather than a stream reader: every byte that arrived is framed
    before ``connection_lost``, even when the peer ends a TLS session without a
    ``close_notify`` (a ``StreamReader`` would raise and drop its buffer then), and
    back-pressure is ``pause_reading`` on the transport.
    """

    def __init__(self, ctx: Context, stats: ListenerStats) -> None:
        self.ctx = ctx
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.host: str | None = None
        self.last = monotonic()
        self.paused = False
        self.framer = Framer(ctx.max_size)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = _peer(transport.get_extra_info("peername"))
        self.host = self.ctx.admit(self.peer, self.stats)
        if self.host is None:
            transport.abort()
            return
        self.ctx.connections.add(self)
        if self.ctx.gate.full or self.ctx.stopping.is_set():
            self.pause()

    def data_received(self, data: bytes) -> None:
        self.last = monotonic()
        self.consume(data)
        if self.ctx.gate.full:
            self.pause()

    def consume(self, data: bytes) -> None:
        messages = self.framer.feed(data)
        if messages:
            self.ctx.hand_over(self.stats, messages, self.peer)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.host is None:
            return
        tail = self.framer.flush()
        if tail:
            self.ctx.hand_over(self.stats, tail, self.peer)
        self.ctx.leave(self.host, self.stats)
        self.ctx.connections.discard(self)
        self.ctx.gate.waiting.discard(self)
        self.host = None

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = True
            self.stats.pauses += 1
            self.transport.pause_reading()
            self.ctx.gate.waiting.add(self)

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.transport.is_closing():
            self.paused = False
            self.last = monotonic()  # waiting on the broker is not the peer's silence
            self.transport.resume_reading()

    def goodbye(self) -> None:
        """The gateway is stopping: close (a RELP session says so first)."""
        if self.transport is not None:
            self.transport.close()


class RelpConnection(StreamConnection):
    """One RELP session: ``open`` answered with the offers, each ``syslog`` frame answered
    once its record settled, ``close`` answered once every earlier frame was."""

    def __init__(self, ctx: Context, stats: ListenerStats) -> None:
        super().__init__(ctx, stats)
        self.decoder = relp.RelpDecoder(max(ctx.max_size, 1024))
        self.pending = 0
        self.closing_txnr: int | None = None

    def consume(self, data: bytes) -> None:
        if self.closing_txnr is not None:
            return
        for frame in self.decoder.feed(data):
            self.frame(frame)
        if self.decoder.error is not None:
            log.warning("ingest.relp_framing", peer=self.peer, error=self.decoder.error)
            self.goodbye()

    def frame(self, frame: relp.RelpFrame) -> None:
        assert self.transport is not None
        command = frame.command.lower()
        if command == "syslog":
            self.pending += 1
            done = partial(self.answer, frame.txnr)
            self.ctx.hand_over(self.stats, [frame.data], self.peer, done)
        elif command == "open":
            offers = relp.accept_offers(relp.parse_offers(frame.data))
            if offers is None:
                self.transport.write(relp.response(frame.txnr, 500, "no relp_version offered"))
                self.transport.close()
                return
            self.transport.write(relp.response(frame.txnr, body=relp.format_offers(offers)))
        elif command == "close":
            self.closing_txnr = frame.txnr
            self._close_when_answered()
        else:
            self.transport.write(relp.response(frame.txnr, 500, f"unknown command {command}"))

    def answer(self, txnr: int, outcome: Outcome) -> None:
        self.pending -= 1
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if outcome == "failed":
                transport.write(relp.response(txnr, 500, "not stored"))
            else:
                transport.write(relp.response(txnr))
        self._close_when_answered()

    def _close_when_answered(self) -> None:
        if self.closing_txnr is not None and self.pending == 0 and self.transport is not None:
            self.transport.write(relp.response(self.closing_txnr))
            self.transport.close()

    def goodbye(self) -> None:
        """Unanswered frames stay unanswered: the sender sends them again elsewhere or later."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(relp.serverclose())
            self.transport.close()


class DatagramListener(asyncio.DatagramProtocol):
    """UDP or a unix datagram socket: a datagram is a message; no room means dropped."""

    def __init__(self, ctx: Context, stats: ListenerStats, *, local: bool = False) -> None:
        self.ctx = ctx
        self.stats = stats
        self.local = local

    def datagram_received(self, data: bytes, addr: Any) -> None:
        ctx, stats = self.ctx, self.stats
        if ctx.gate.full or ctx.stopping.is_set():
            stats.received += 1
            stats.dropped += 1
            return
        if len(data) > ctx.max_size:
            data = Truncated(data[: ctx.max_size])
        if self.local:
            ctx.hand_over(stats, [data], str(addr or "local"), host=ctx.local_host)
        else:
            ctx.hand_over(stats, [data], _peer(addr))

    def error_received(self, exc: Exception) -> None:
        log.info("ingest.datagram_error", listener=self.stats.name, error=str(exc))


def udp_kernel_drops(sock: socket.socket) -> Callable[[], int]:
    """A reader of the kernel's drop count for ``sock`` (``/proc/net/udp[6]``, by inode)."""
    import os

    inode = str(os.fstat(sock.fileno()).st_ino)

    def drops() -> int:
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                with open(table) as lines:
                    for line in lines:
                        columns = line.split()
                        if len(columns) > 12 and columns[9] == inode:
                            return int(columns[-1])
            except OSError:
                continue
        return 0

    return drops
