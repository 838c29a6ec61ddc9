"""``local:///path/to.sock`` — the in-process broker of another process on this machine.

It connects to a ``logbus broker serve --listen /path/to.sock`` (or to the broker
a ``process://`` URL started, see :mod:`logbus.transports.process`).

Why :mod:`multiprocessing.connection` over a Unix socket: it is the machinery
behind multiprocessing's ``Pipe`` — message framing and an HMAC challenge on
connect, both in the standard library — reachable by processes that are not
one's children. Only ``send_bytes``/``recv_bytes`` are used: records cross as
bytes in logbus's own framing (:mod:`logbus.transports._frames`), never
pickled, so a peer cannot make this process run code. The key is the socket's
neighbour ``<socket>.key`` (mode 0600): who can read it can use the broker.

Each transport is one connection, hence one broker session, with the same
methods, semantics and errors as :class:`~logbus.transports.memory.MemoryTransport`.
A reader thread hands replies to the waiting calls and deliveries to their
consumers; calls are thread-safe; ``publish_many`` keeps a window of publishes
in flight; acks are sent without waiting for a reply. If the broker process
dies, calls in flight and blocked consumers raise
:class:`~logbus.errors.ConnectionLost` at once, as do later calls.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import multiprocessing
import os
import queue
import socket
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from multiprocessing.connection import Client, Connection
from typing import Any
from urllib.parse import unquote, urlsplit

from logbus import errors
from logbus._log import get_logger
from logbus.broker import PublishOutcome
from logbus.errors import (
    BrokerUnavailable,
    ConfigError,
    ConnectionLost,
    LogbusError,
    TransportClosed,
    TransportError,
)
from logbus.message import Message, QueueInfo
from logbus.transports._frames import (
    Frame,
    arg_bool,
    arg_int,
    arg_str,
    decode_many,
    encode_many,
    message_args,
    message_from,
)
from logbus.transports.base import DEFAULT_PREFETCH, Delivery, Settlement
from logbus.transports.memory import raise_for_outcome

__all__ = ["LocalConsumer", "LocalTransport", "socket_path"]

log = get_logger("logbus.transports.local")

#: Publishes ``publish_many`` puts in one packet, and packets it keeps in flight.
PUBLISH_WINDOW = 512
_PACKETS_IN_FLIGHT = 2
_WINDOW_BYTES = 4 * 1024 * 1024
_CLOSED = object()  # the transport was closed: consumers end
_LOST = object()  # the broker went away: consumers raise
_live: weakref.WeakSet[LocalTransport] = weakref.WeakSet()


def socket_path(url: str) -> str:
    """The socket path of ``local:///path/to.sock`` (``local://rel.sock``: relative to cwd)."""
    parts = urlsplit(url)
    if parts.scheme != "local":
        raise ConfigError(f"not a local:// URL: {url!r}")
    path = unquote(parts.netloc + parts.path)
    if not path:
        raise ConfigError("local:// needs a socket path, e.g. local:///run/logbus/broker.sock")
    return os.path.abspath(path)


def _unavailable(path: str, why: str) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"no logbus broker at {path} ({why}); start one with: logbus broker serve --listen {path}"
    )


def _connect(path: str, key_file: str) -> Connection[Any, Any]:
    try:
        with open(key_file, "rb") as source:
            key = source.read()
    except FileNotFoundError:
        raise _unavailable(path, f"no key file {key_file}") from None
    except OSError as exc:
        raise _unavailable(path, f"cannot read {key_file}: {exc.strerror}") from None
    try:
        return Client(path, family="AF_UNIX", authkey=key)
    except multiprocessing.AuthenticationError:
        raise _unavailable(path, f"it refused the key in {key_file}") from None
    except (OSError, EOFError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
        raise _unavailable(path, why) from None


class LocalConsumer:
    """Deliveries of one queue, pushed by the broker process to this connection."""

    def __init__(self, transport: LocalTransport, queue_name: str, prefetch: int, exclusive: bool):
        self.queue = queue_name
        self._transport = transport
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ended = False
        self._cid = transport._add_inbox(self._inbox)
        try:
            self.tag: str = transport._call(
                "consume",
                {
                    "cid": self._cid,
                    "queue": queue_name,
                    "prefetch": prefetch,
                    "exclusive": exclusive,
                },
            )
        except BaseException:
            transport._drop_inbox(self._cid)
            raise

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once cancelled or closed.

        Raises ``ConnectionLost`` when the broker went away.
        """
        if self._ended:
            return None
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _LOST:
            self._inbox.put(item)  # every later get raises too
            raise self._transport._lost_error()
        if not isinstance(item, Frame):  # cancelled by either side, or the transport closed
            self._ended = True
            return None
        return self._transport._delivery(item)

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    def cancel(self) -> None:
        """Stop receiving; the iterator ends once what was delivered has been read."""
        if self._transport._drop_inbox(self._cid) is None:
            return  # already cancelled, by us or the broker, or the transport is gone
        with contextlib.suppress(TransportClosed, ConnectionLost):
            self._transport._call("cancel", {"tag": self.tag})
        self._inbox.put(_CLOSED)


class LocalTransport:
    """One connection (one broker session) to a ``logbus broker serve`` on this machine."""

    def __init__(
        self,
        url: str,
        *,
        settings: Any = None,
        authkey_file: str | None = None,
        **_options: Any,
    ) -> None:
        self.url = url
        self.path = socket_path(url)
        self._timeout = float(getattr(settings, "confirm_timeout", 30.0))
        self._conn = _connect(self.path, authkey_file or f"{self.path}.key")
        self._lock = threading.Lock()  # the state below
        self._send_lock = threading.Lock()  # one writer on the socket at a time
        self._ids = itertools.count(1)
        self._pending: dict[int, concurrent.futures.Future[Frame]] = {}
        self._inboxes: dict[int, queue.SimpleQueue[object]] = {}
        self._closed = False
        self._lost: str | None = None
        self._reader = threading.Thread(
            target=self._read_loop, name=f"logbus-local-{self.path}", daemon=True
        )
        self._reader.start()
        _live.add(self)

    # -- the wire ---------------------------------------------------------------

    def _check(self) -> None:
        if self._lost is not None:
            raise self._lost_error()
        if self._closed:
            raise TransportClosed(f"transport {self.url} is closed; create a new one")

    def _lost_error(self) -> ConnectionLost:
        return ConnectionLost(
            f"the connection to the logbus broker at {self.path} dropped ({self._lost}); "
            "operations in flight may not have completed"
        )

    def _send(self, frames: list[Frame]) -> None:
        packet = encode_many(frames)
        try:
            with self._send_lock:
                self._conn.send_bytes(packet)
        except (OSError, ValueError) as exc:
            self._broken(repr(exc))
            raise self._lost_error() from None

    def _submit(
        self, requests: list[tuple[str, dict[str, Any], bytes]]
    ) -> list[concurrent.futures.Future[Frame]]:
        """Send requests in one packet; returns their futures, in order."""
        futures: list[concurrent.futures.Future[Frame]] = []
        frames = []
        with self._lock:
            self._check()
            for op, args, body in requests:
                ident = next(self._ids)
                future: concurrent.futures.Future[Frame] = concurrent.futures.Future()
                self._pending[ident] = future
                futures.append(future)
                frames.append(Frame(op, ident, args, body))
        self._send(frames)
        return futures

    def _wait(self, future: concurrent.futures.Future[Frame]) -> Frame:
        try:
            reply = future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            with self._lock:
                for ident, pending in list(self._pending.items()):
                    if pending is future:
                        del self._pending[ident]
            raise ConnectionLost(
                f"the logbus broker at {self.path} did not answer within {self._timeout:g} s"
            ) from None
        if reply.op == "error":
            raise _rebuild(reply.args)
        return reply

    def _call(self, op: str, args: dict[str, Any], body: bytes = b"") -> Any:
        (future,) = self._submit([(op, args, body)])
        return self._wait(future).args.get("result")

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
        if frame.op in ("ok", "error"):
            with self._lock:
                future = self._pending.pop(frame.id, None)
            if future is not None:
                future.set_result(frame)
            return
        if frame.op not in ("deliver", "cancelled"):
            return  # nothing else is pushed; a newer broker's extras are ignored
        cid = arg_int(frame.args, "cid")
        if frame.op == "deliver":
            inbox = self._inboxes.get(cid)
            if inbox is not None:
                inbox.put(frame)
        elif frame.op == "cancelled":  # the broker ended it: its queue was deleted
            inbox = self._drop_inbox(cid)
            if inbox is not None:
                inbox.put(_CLOSED)

    def _broken(self, why: str) -> None:
        with self._lock:
            if self._lost is None and not self._closed:
                self._lost = why
            pending, self._pending = self._pending, {}
            inboxes = list(self._inboxes.values())
            marker = _CLOSED if self._closed else _LOST
        error: LogbusError = (
            self._lost_error()
            if marker is _LOST
            else TransportClosed(f"transport {self.url} was closed")
        )
        for future in pending.values():
            future.set_exception(error)
        for inbox in inboxes:
            inbox.put(marker)

    def _add_inbox(self, inbox: queue.SimpleQueue[object]) -> int:
        with self._lock:
            self._check()
            cid = next(self._ids)
            self._inboxes[cid] = inbox
            return cid

    def _drop_inbox(self, cid: int) -> queue.SimpleQueue[object] | None:
        with self._lock:
            return self._inboxes.pop(cid, None)

    def _settle(self, how: Settlement, tag: int, multiple: bool, requeue: bool) -> None:
        self._check()
        wire_requeue = None if how is Settlement.ACK else requeue
        self._send(
            [Frame("settle", 0, {"tag": tag, "multiple": multiple, "requeue": wire_requeue})]
        )

    def _delivery(self, frame: Frame) -> Delivery:
        args = frame.args
        return Delivery(
            message_from(args, frame.body),
            delivery_tag=arg_int(args, "tag"),
            redelivered=arg_bool(args, "redelivered"),
            consumer_tag=arg_str(args, "consumer_tag", ""),
            queue=arg_str(args, "queue"),
            settle=self._settle,
        )

    # -- the Transport protocol -----------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> None:
        """Declare an exchange on the broker."""
        self._call(
            "declare_exchange",
            {
                "name": name,
                "type": type,
                "durable": durable,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": arguments,
                "passive": passive,
            },
        )

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and its bindings."""
        self._call("delete_exchange", {"name": name, "if_unused": if_unused})

    def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo:
        """Declare a queue on the broker."""
        queue_name, messages, consumers = self._call(
            "declare_queue",
            {
                "name": name,
                "durable": durable,
                "exclusive": exclusive,
                "auto_delete": auto_delete,
                "arguments": arguments,
                "passive": passive,
            },
        )
        return QueueInfo(queue_name, messages, consumers)

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        return int(
            self._call("delete_queue", {"name": name, "if_unused": if_unused, "if_empty": if_empty})
        )

    def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages."""
        return int(self._call("purge_queue", {"name": name}))

    def _binding(self, op: str, names: dict[str, str], key: str, arguments: Any) -> None:
        self._call(op, {**names, "routing_key": key, "arguments": arguments})

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        self._binding("bind_queue", {"queue": queue, "exchange": exchange}, routing_key, arguments)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        names = {"queue": queue, "exchange": exchange}
        self._binding("unbind_queue", names, routing_key, arguments)

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another."""
        names = {"destination": destination, "source": source}
        self._binding("bind_exchange", names, routing_key, arguments)

    def publish(self, message: Message, *, mandatory: bool = True) -> None:
        """Publish and wait for the broker's confirm."""
        outcome = self._call("publish", _publish_args(message, mandatory), message.body)
        raise_for_outcome(PublishOutcome(outcome), message)

    def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish with a window of confirms in flight; report the first failure and the count."""
        in_flight: deque[list[tuple[concurrent.futures.Future[Frame], Message]]] = deque()
        failed = 0
        first: tuple[PublishOutcome, Message] | None = None
        error: LogbusError | None = None
        source = iter(messages)
        while True:
            window: list[Message] = []
            size = 0
            if error is None:
                for message in source:
                    window.append(message)
                    size += len(message.body)
                    if len(window) >= PUBLISH_WINDOW or size >= _WINDOW_BYTES:
                        break
            if window:
                requests = [("publish", _publish_args(m, mandatory), m.body) for m in window]
                in_flight.append(list(zip(self._submit(requests), window, strict=True)))
            if not in_flight or (window and len(in_flight) < _PACKETS_IN_FLIGHT):
                if not window:
                    break
                continue
            for future, message in in_flight.popleft():
                try:
                    outcome = PublishOutcome(self._wait(future).args.get("result"))
                except LogbusError as exc:
                    error = error or exc
                    continue
                if outcome is not PublishOutcome.ROUTED:
                    failed += 1
                    first = first or (outcome, message)
        if error is not None:
            raise error
        if first is not None:
            raise_for_outcome(first[0], first[1], failed)

    def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue, or None when it is empty."""
        (future,) = self._submit([("get", {"queue": queue, "auto_ack": auto_ack}, b"")])
        reply = self._wait(future)
        result = reply.args.get("result")
        if result is None:
            return None
        delivery = self._delivery(Frame("got", 0, result, reply.body))
        if auto_ack:
            delivery.settled = Settlement.ACK
        return delivery

    def consume(
        self, queue: str, *, prefetch: int = DEFAULT_PREFETCH, exclusive: bool = False
    ) -> LocalConsumer:
        """Start consuming with manual acks and at most ``prefetch`` unacked deliveries."""
        return LocalConsumer(self, queue, prefetch, exclusive)

    def close(self) -> None:
        """Close the session (the broker requeues what was not acked), then the connection."""
        with self._lock:
            if self._closed:
                return
            healthy = self._lost is None
        if healthy:
            with contextlib.suppress(LogbusError):
                self._call("close", {})  # synchronous: exclusive queues are gone on return
        with self._lock:
            self._closed = True
        _shutdown(self._conn)
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)
        if not self._reader.is_alive():
            self._conn.close()

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _forked(self) -> None:
        """In a forked child: the connection belongs to the parent; never touch its socket."""
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = True
        self._pending = {}
        self._inboxes = {}
        with contextlib.suppress(OSError):
            self._conn.close()  # this copy of the fd only; the parent's stays open


def _publish_args(message: Message, mandatory: bool) -> dict[str, Any]:
    args = message_args(message)
    args["mandatory"] = mandatory
    return args


def _rebuild(args: Mapping[str, Any]) -> LogbusError:
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


def _after_fork_in_child() -> None:
    for transport in list(_live):
        transport._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
