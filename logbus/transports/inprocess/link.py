"""One connection to a broker process: requests and replies, pushed deliveries, pipelined acks.

:class:`Link` is the wire under :class:`~logbus.transports.inprocess.local.LocalTransport`.
A reader thread hands replies to the waiting calls and deliveries to their
consumers' inboxes; calls are thread-safe. Publishes travel many to a frame
and deliveries arrive many to a frame (:mod:`logbus.wire.batch`).

Acks are pipelined, as AMQP's are on a socket, and coalesced: an ack joins a
list that goes out as one ``settle`` frame when it is a quarter of the
consumer's prefetch long (so the broker refills while the consumer works on
the rest), when a consumer is about to block or is blocked waiting for
deliveries (so nobody waits on an ack that was not sent), in front of any
other frame (so whatever is sent later sees it applied), or at the latest
:data:`ACK_DELAY` seconds after it was made. A record is still acked only
after the consumer took it, and one whose ack never reached the broker — the
process died first — is redelivered, as with any unacked record.

If the broker process dies, calls in flight and blocked consumers raise
:class:`~logbus.errors.ConnectionLost` at once, as do later calls.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import queue
import socket
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any

from logbus import errors
from logbus._log import get_logger
from logbus.errors import (
    ConnectionLost,
    LogbusError,
    NotConfirmed,
    TransportClosed,
    TransportError,
)
from logbus.message import Message
from logbus.transports.base import Delivery, Settlement, Settler
from logbus.wire.batch import decode_deliveries, encode_publishes
from logbus.wire.frames import Frame, decode_many, encode, encode_many, encode_plain

__all__ = ["ACK_DELAY", "CLOSED", "LOST", "Link"]

log = get_logger("logbus.transports.inprocess.local")

#: The longest an ack waits for others to share its frame, in seconds.
ACK_DELAY = 0.005
#: The most acks one ``settle`` frame carries.
MAX_ACKS = 256
CLOSED = object()  # the transport was closed: consumers end
LOST = object()  # the broker went away: consumers raise
_Inbox = queue.SimpleQueue[object]


class Link:
    """A ``multiprocessing.connection`` to a broker process, shared by a transport's threads."""

    def __init__(self, conn: Connection[Any, Any], path: str, url: str, timeout: float) -> None:
        self.path = path
        self.url = url
        self._conn = conn
        self._timeout = timeout
        self._lock = threading.Lock()  # the state below
        self._send_lock = threading.Lock()  # one writer on the socket at a time
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Frame]] = {}
        self._inboxes: dict[int, tuple[_Inbox, Settler]] = {}
        self._acks: list[int] = []
        self._blocked = 0  # consumers waiting in get(): acks go out at once
        self._ack_due = threading.Event()
        self._flusher: threading.Thread | None = None
        self.closed = False
        self.lost: str | None = None
        # Why the broker stopped reading from us (its memory alarm), until it reads again.
        self.blocked: str | None = None
        self._reader = threading.Thread(
            target=self._read_loop, name=f"logbus-local-{path}", daemon=True
        )
        self._reader.start()

    # -- state ------------------------------------------------------------------------

    def check(self) -> None:
        """Raise if the connection can no longer be used."""
        if self.lost is not None:
            raise self.lost_error()
        if self.closed:
            raise TransportClosed(f"transport {self.url} is closed; create a new one")

    def lost_error(self) -> ConnectionLost:
        """The error for every use after the broker went away."""
        return ConnectionLost(
            f"the connection to the logbus broker at {self.path} dropped ({self.lost}); "
            "operations in flight may not have completed"
        )

    # -- sending ------------------------------------------------------------------------

    def send(self, packet: bytes) -> None:
        """Send ``packet``, after the acks made so far, as one ``send_bytes``."""
        try:
            with self._send_lock:
                with self._lock:
                    acks, self._acks = self._acks, []
                if acks:
                    packet = _acks_frame(acks) + packet
                if packet:
                    self._conn.send_bytes(packet)
        except (OSError, ValueError) as exc:
            self._broken(repr(exc))
            raise self.lost_error() from None

    def submit(self, frames: list[Frame]) -> list[concurrent.futures.Future[Frame]]:
        """Send requests in one packet; returns their futures, in order."""
        stamped = [Frame(frame.op, next(self._ids), frame.args, frame.body) for frame in frames]
        packet = encode_many(stamped)  # before registering: a value that cannot cross raises
        futures: list[concurrent.futures.Future[Frame]] = []
        with self._lock:
            self.check()
            for frame in stamped:
                future: concurrent.futures.Future[Frame] = concurrent.futures.Future()
                self._pending[frame.id] = future
                futures.append(future)
        self.send(packet)
        return futures

    def publish(
        self, messages: Sequence[Message], mandatory: bool
    ) -> concurrent.futures.Future[Frame]:
        """Send one ``publish`` frame; its future's reply holds one outcome byte per message."""
        ident = next(self._ids)
        packet = encode_publishes(ident, messages, mandatory=mandatory)
        future: concurrent.futures.Future[Frame] = concurrent.futures.Future()
        with self._lock:
            self.check()
            self._pending[ident] = future
        self.send(packet)
        return future

    def wait(self, future: concurrent.futures.Future[Frame]) -> Frame:
        """The reply to a request; an error reply raises it as the broker's logbus error."""
        try:
            reply = future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                for ident, pending in list(self._pending.items()):
                    if pending is future:
                        del self._pending[ident]
            if self.blocked is not None:  # RabbitMQ's connection.blocked: not confirmed, retry
                raise NotConfirmed(
                    f"the logbus broker at {self.path} blocked publishing ({self.blocked}); "
                    "let consumers drain its queues or raise its --memory-limit, then retry"
                ) from None
            raise ConnectionLost(
                f"the logbus broker at {self.path} did not answer within {self._timeout:g} s"
            ) from None
        if reply.op == "error":
            raise rebuild(reply.args)
        return reply

    def call(self, op: str, args: dict[str, Any], body: bytes = b"") -> Any:
        """One request and its result."""
        (future,) = self.submit([Frame(op, 0, args, body)])
        return self.wait(future).args.get("result")

    # -- settling -------------------------------------------------------------------------

    def settle(
        self, how: Settlement, tag: int, multiple: bool, requeue: bool, flush_at: int
    ) -> None:
        """Settle a delivery: a plain ack joins the pending acks, anything else goes now."""
        if how is Settlement.ACK and not multiple:
            with self._lock:
                self.check()
                acks = self._acks
                acks.append(tag)
                if len(acks) < flush_at and not self._blocked:
                    if len(acks) == 1:
                        self._arm()
                    return
            self.send(b"")
            return
        self.check()
        wire_requeue = None if how is Settlement.ACK else requeue
        args = {"tags": [tag], "multiple": multiple, "requeue": wire_requeue}
        self.send(encode(Frame("settle", 0, args)))

    def block(self, delta: int) -> None:
        """A consumer starts (+1) or stops (-1) waiting; starting sends the pending acks."""
        with self._lock:
            self._blocked += delta
            if delta < 0 or not self._acks:
                return
        with contextlib.suppress(TransportClosed, ConnectionLost):
            self.send(b"")

    def _arm(self) -> None:
        """Under the lock, with the first pending ack: have the flusher send it in time."""
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_loop, name=f"logbus-local-acks-{self.path}", daemon=True
            )
            self._flusher.start()
        self._ack_due.set()

    def _flush_loop(self) -> None:
        pause = threading.Event()  # never set: a wait with a deadline
        while True:
            self._ack_due.wait()
            if self.closed or self.lost is not None:
                return
            pause.wait(ACK_DELAY)  # let the acks made meanwhile share the frame
            self._ack_due.clear()
            try:
                self.send(b"")
            except LogbusError:
                return

    # -- consumers ------------------------------------------------------------------------

    def add_inbox(self, inbox: _Inbox, settle: Settler) -> int:
        """Register a consumer's inbox and how its deliveries settle; returns its id."""
        with self._lock:
            self.check()
            cid = next(self._ids)
            self._inboxes[cid] = (inbox, settle)
            return cid

    def drop_inbox(self, cid: int) -> _Inbox | None:
        """Forget a consumer; its inbox, or None if it was gone already."""
        with self._lock:
            entry = self._inboxes.pop(cid, None)
        return None if entry is None else entry[0]

    # -- reading -------------------------------------------------------------------------

    def _read_loop(self) -> None:
        why = "the broker closed the connection"
        try:
            while True:
                for frame in decode_many(self._conn.recv_bytes()):
                    self._dispatch(frame)
        except (EOFError, OSError) as exc:
            if not isinstance(exc, EOFError):
                why = repr(exc)
        except LogbusError as exc:
            why = f"bad frame from the broker: {exc}"
        except Exception as exc:  # a bug here must not leave callers waiting forever
            why = f"internal error: {exc!r}"
            log.exception("local.reader_failed", path=self.path)
        self._broken(why)

    def _dispatch(self, frame: Frame) -> None:
        op = frame.op
        if op == "deliver":
            inboxes = self._inboxes
            for cid, tag, redelivered, ctag, queue_name, message in decode_deliveries(
                frame.args, frame.body
            ):
                entry = inboxes.get(cid)
                if entry is not None:
                    inbox, settle = entry
                    inbox.put(
                        Delivery(
                            message,
                            delivery_tag=tag,
                            redelivered=redelivered,
                            consumer_tag=ctag,
                            queue=queue_name,
                            settle=settle,
                        )
                    )
        elif op in ("ok", "error"):
            with self._lock:
                future = self._pending.pop(frame.id, None)
            if future is not None:
                future.set_result(frame)
        elif op == "blocked":  # the broker's memory alarm: it reads nothing more from us
            self.blocked = str(frame.args.get("reason") or "resource alarm")
            log.info("local.blocked", path=self.path, reason=self.blocked)
        elif op == "unblocked":
            self.blocked = None
            log.info("local.unblocked", path=self.path)
        elif op == "cancelled":  # the broker ended a consumer: its queue was deleted
            ended = frame.args.get("cid")
            dropped = self.drop_inbox(ended) if type(ended) is int else None
            if dropped is not None:
                dropped.put(CLOSED)
        # nothing else is pushed; a newer broker's extras are ignored

    def _broken(self, why: str) -> None:
        with self._lock:
            if self.lost is None and not self.closed:
                self.lost = why
            pending, self._pending = self._pending, {}
            inboxes = [inbox for inbox, _settle in self._inboxes.values()]
            marker = CLOSED if self.closed else LOST
        self._ack_due.set()  # the flusher sees the state and ends
        error: LogbusError = (
            self.lost_error()
            if marker is LOST
            else TransportClosed(f"transport {self.url} was closed")
        )
        for future in pending.values():
            future.set_exception(error)
        for inbox in inboxes:
            inbox.put(marker)

    # -- ending --------------------------------------------------------------------------

    def close(self) -> None:
        """Mark closed, shut the socket (the reader ends, consumers end), close it."""
        with self._lock:
            self.closed = True
        self._ack_due.set()
        _shutdown(self._conn)
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)
        if not self._reader.is_alive():
            self._conn.close()

    def forked(self) -> None:
        """In a forked child: the connection belongs to the parent; never touch its socket."""
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self.closed = True
        self._pending = {}
        self._inboxes = {}
        self._acks = []
        with contextlib.suppress(OSError):
            self._conn.close()  # this copy of the fd only; the parent's stays open


def _acks_frame(tags: list[int]) -> bytes:
    return b"".join(
        encode_plain("settle", 0, {"tags": tags[i : i + MAX_ACKS], "requeue": None})
        for i in range(0, len(tags), MAX_ACKS)
    )


def rebuild(args: Mapping[str, Any]) -> LogbusError:
    """The broker's error, re-raised here as the same logbus class."""
    name, message = str(args.get("class")), str(args.get("message"))
    cls = getattr(errors, name, None) if name in errors.__all__ else None
    if isinstance(cls, type) and issubclass(cls, LogbusError):
        with contextlib.suppress(TypeError):
            return cls(message)
    return TransportError(message)


def _shutdown(conn: Connection[Any, Any]) -> None:
    with (
        contextlib.suppress(OSError, ValueError),
        socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.shutdown(socket.SHUT_RDWR)
