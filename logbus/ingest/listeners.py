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
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from logbus._log import get_logger
from logbus.ingest import relp
from logbus.ingest.framing import Framer, Truncated
from logbus.ingest.pipeline import Outcome, Pending, Pipeline
from logbus.ingest.syslog import parse_record, peer_host

__all__ = ["Context", "DatagramListener", "Gate", "ListenerStats", "handle_relp", "handle_stream"]

log = get_logger("logbus.ingest")
_READ = 64 * 1024


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
    kernel_drops: Callable[[], int] | None = None

    @property
    def in_flight(self) -> int:
        return self.published - self.confirmed - self.spooled - self.failed


class Gate:
    """The shared bound on records handed over and not yet settled."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_flight = 0
        self._room = asyncio.Event()
        self._room.set()

    def take(self, n: int) -> None:
        self.in_flight += n
        if self.in_flight >= self.limit:
            self._room.clear()

    def release(self, n: int) -> None:
        self.in_flight -= n
        if self.in_flight < self.limit:
            self._room.set()

    @property
    def full(self) -> bool:
        return self.in_flight >= self.limit

    async def room(self) -> None:
        await self._room.wait()


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
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def hand_over(
        self,
        stats: ListenerStats,
        messages: list[bytes],
        peer: str,
        done: Callable[[Outcome], None] | None = None,
        **parse_options: Any,
    ) -> None:
        """Parse ``messages`` and queue their records (one lock for the lot)."""
        items = []
        for message in messages:
            record = parse_record(message, peer, **parse_options)
            syslog = record.fields.get("syslog", {})
            stats.parsed += bool(syslog.get("parsed", True))
            stats.unparsed += not syslog.get("parsed", True)
            stats.truncated += isinstance(message, Truncated)
            items.append(Pending(record, stats, done))
        stats.received += len(messages)
        stats.published += len(items)
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


def peer_of(writer: asyncio.StreamWriter) -> str:
    """``host:port`` of a stream's peer (IPv6 in brackets)."""
    address = writer.get_extra_info("peername")
    if not isinstance(address, tuple):
        return str(address or "unknown")
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _read(ctx: Context, reader: asyncio.StreamReader) -> bytes:
    """The next bytes once there is room in flight; b"" at EOF, idle timeout or stop."""
    if ctx.gate.full:
        await ctx.gate.room()
    if ctx.stopping.is_set():
        return b""
    try:
        return await asyncio.wait_for(reader.read(_READ), ctx.idle_timeout)
    except (TimeoutError, ConnectionError, OSError):
        return b""


async def handle_stream(
    ctx: Context, stats: ListenerStats, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One TCP or TLS connection: RFC 6587 framing auto-detected, records handed over."""
    peer = peer_of(writer)
    host = ctx.admit(peer, stats)
    if host is None:
        writer.close()
        return
    framer = Framer(ctx.max_size)
    try:
        while data := await _read(ctx, reader):
            messages = framer.feed(data)
            if messages:
                ctx.hand_over(stats, messages, peer)
        tail = framer.flush()
        if tail:
            ctx.hand_over(stats, tail, peer)
    finally:
        ctx.leave(host, stats)
        writer.close()


class _RelpSession:
    """One RELP connection's answers: a frame's ``rsp`` goes out once its record settled."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.pending = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def expect(self) -> None:
        self.pending += 1
        self.idle.clear()

    def answer(self, txnr: int, outcome: Outcome) -> None:
        self.pending -= 1
        if not self.writer.is_closing():
            if outcome == "failed":
                self.writer.write(relp.response(txnr, 500, "not stored"))
            else:
                self.writer.write(relp.response(txnr))
        if self.pending == 0:
            self.idle.set()


async def handle_relp(
    ctx: Context, stats: ListenerStats, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One RELP session: ``open`` answered with the offers, each ``syslog`` answered after
    its record was confirmed, ``close`` answered once every earlier frame was."""
    peer = peer_of(writer)
    host = ctx.admit(peer, stats)
    if host is None:
        writer.close()
        return
    decoder = relp.RelpDecoder(max(ctx.max_size, 1024))
    session = _RelpSession(writer)
    try:
        while data := await _read(ctx, reader):
            if not await _relp_frames(ctx, stats, session, decoder.feed(data), peer):
                break
            if decoder.error is not None:
                log.warning("ingest.relp_framing", peer=peer, error=decoder.error)
                break
        if ctx.stopping.is_set() and not writer.is_closing():
            await session.idle.wait()
            writer.write(relp.serverclose())
    finally:
        ctx.leave(host, stats)
        with contextlib.suppress(ConnectionError, OSError):
            await writer.drain()
        writer.close()


async def _relp_frames(
    ctx: Context,
    stats: ListenerStats,
    session: _RelpSession,
    frames: list[relp.RelpFrame],
    peer: str,
) -> bool:
    """Act on a read's frames; False when the session is over."""
    writer = session.writer
    for frame in frames:
        command = frame.command.lower()
        if command == "syslog":
            session.expect()
            ctx.hand_over(stats, [frame.data], peer, partial(session.answer, frame.txnr))
        elif command == "open":
            offers = relp.accept_offers(relp.parse_offers(frame.data))
            if offers is None:
                writer.write(relp.response(frame.txnr, 500, "no relp_version offered"))
                return False
            writer.write(relp.response(frame.txnr, body=relp.format_offers(offers)))
        elif command == "close":
            await session.idle.wait()
            writer.write(relp.response(frame.txnr))
            return False
        else:
            writer.write(relp.response(frame.txnr, 500, f"unknown command {frame.command}"))
    await writer.drain()
    return True


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
            peer = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
            ctx.hand_over(stats, [data], peer)

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
