"""``local:///path/to.sock`` — the in-process broker of another process on this machine.

It connects to a ``logbus broker serve --listen /path/to.sock`` (or to the broker
a ``process://`` URL started, see :mod:`logbus.transports.inprocess.process`).

Why :mod:`multiprocessing.connection` over a Unix socket: it is the machinery
behind multiprocessing's ``Pipe`` — message framing and an HMAC challenge on
connect, both in the standard library — reachable by processes that are not
one's children. Only ``send_bytes``/``recv_bytes`` are used: records cross as
bytes in logbus's own framing (:mod:`logbus.wire.frames`), never
pickled, so a peer cannot make this process run code. The key is the socket's
neighbour ``<socket>.key`` (mode 0600): who can read it can use the broker.

Each transport is one connection (:class:`~logbus.transports.inprocess.link.Link`),
hence one broker session, with the same methods, semantics and errors as
:class:`~logbus.transports.inprocess.memory.MemoryTransport`. Calls are thread-safe;
``publish_many`` sends its publishes many to a frame and keeps a window of them
in flight; acks are pipelined and coalesced. If the broker process dies, calls
in flight and blocked consumers raise :class:`~logbus.errors.ConnectionLost`
at once, as do later calls.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import queue
import socket
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from multiprocessing.connection import (
    Connection,
    answer_challenge,
    deliver_challenge,
)
from typing import Any
from urllib.parse import unquote

from logbus._urls import parse_url
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
from logbus.transports.base import DEFAULT_PREFETCH, Capabilities, Delivery, Settlement
from logbus.transports.inprocess.link import CLOSED, LOST, MAX_ACKS, Link, rebuild
from logbus.transports.inprocess.memory import raise_for_outcome
from logbus.wire.batch import ERROR, OUTCOMES
from logbus.wire.frames import Frame, arg_bool, arg_int, arg_str, message_from

__all__ = ["LocalConsumer", "LocalTransport", "socket_path"]

#: Publishes ``publish_many`` puts in one frame, and frames it keeps in flight.
PUBLISH_WINDOW = 512
_PACKETS_IN_FLIGHT = 2
_WINDOW_BYTES = 4 * 1024 * 1024
_live: weakref.WeakSet[LocalTransport] = weakref.WeakSet()


def socket_path(url: str) -> str:
    """The socket path of ``local:///path/to.sock`` (``local://rel.sock``: relative to cwd)."""
    parts = parse_url(url)
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


def _connect(path: str, key_file: str, timeout: float = 10.0) -> Connection[Any, Any]:
    """Connect and pass multiprocessing's HMAC handshake within ``timeout`` seconds.

    ``multiprocessing.connection.Client`` has no timeout: against a server too busy
    to answer it would wait forever in ``answer_challenge``. The handshake runs in a
    helper thread here; past the deadline the socket is shut, which ends it.
    """
    try:
        with open(key_file, "rb") as source:
            key = source.read()
    except FileNotFoundError:
        raise _unavailable(path, f"no key file {key_file}") from None
    except OSError as exc:
        raise _unavailable(path, f"cannot read {key_file}: {exc.strerror}") from None
    try:
        return _handshake(path, key, timeout)
    except multiprocessing.AuthenticationError:
        raise _unavailable(path, f"it refused the key in {key_file}") from None
    except (OSError, EOFError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
        raise _unavailable(path, why) from None


def _handshake(path: str, key: bytes, timeout: float) -> Connection[Any, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout or None)
        sock.connect(path)
        sock.settimeout(None)  # multiprocessing reads a blocking descriptor
    except OSError:
        sock.close()
        raise
    conn: Connection[Any, Any] = Connection(sock.detach())
    outcome: list[BaseException | None] = []

    def shake() -> None:
        try:
            answer_challenge(conn, key)
            deliver_challenge(conn, key)
            outcome.append(None)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)

    helper = threading.Thread(target=shake, name="logbus-local-handshake", daemon=True)
    helper.start()
    helper.join(timeout or None)
    if not outcome:
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as woken:
            woken.shutdown(socket.SHUT_RDWR)  # ends the helper's blocked read
        helper.join(1.0)
        conn.close()
        raise _unavailable(
            path,
            f"it did not answer the connection handshake within {timeout:g} s; it may be "
            f"overloaded: retry, or raise LOGBUS_CONNECT_TIMEOUT",
        )
    error = outcome[0]
    if error is not None:
        conn.close()
        raise error
    return conn


class LocalConsumer:
    """Deliveries of one queue, pushed by the broker process to this connection."""

    def __init__(
        self,
        transport: LocalTransport,
        queue_name: str,
        prefetch: int,
        exclusive: bool,
        arguments: Mapping[str, Any] | None = None,
    ):
        self.queue = queue_name
        self._link = link = transport._link
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ended = False
        # A quarter of the prefetch: the broker refills while the rest is being handled.
        self._flush_at = max(1, prefetch // 4) if prefetch else MAX_ACKS
        self._cid = link.add_inbox(self._inbox, self._settle)
        try:
            self.tag: str = link.call(
                "consume",
                {
                    "cid": self._cid,
                    "queue": queue_name,
                    "prefetch": prefetch,
                    "exclusive": exclusive,
                    "arguments": dict(arguments or {}),
                },
            )
        except BaseException:
            link.drop_inbox(self._cid)
            raise

    def _settle(self, how: Settlement, tag: int, multiple: bool, requeue: bool) -> None:
        self._link.settle(how, tag, multiple, requeue, self._flush_at)

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once cancelled or closed.

        Raises ``ConnectionLost`` when the broker went away.
        """
        if self._ended:
            return None
        try:
            item = self._inbox.get_nowait()
        except queue.Empty:
            self._link.block(1)  # sends the pending acks: the broker may be waiting on them
            try:
                item = self._inbox.get(timeout=timeout)
            except queue.Empty:
                return None
            finally:
                self._link.block(-1)
        if type(item) is Delivery:
            return item
        if item is LOST:
            self._inbox.put(item)  # every later get raises too
            raise self._link.lost_error()
        self._ended = True  # cancelled by either side, or the transport closed
        return None

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    @property
    def ended(self) -> bool:
        """Whether a get has seen the end: it returns None at once from now on."""
        return self._ended

    def cancel(self) -> None:
        """Stop receiving; the iterator ends once what was delivered has been read."""
        if self._link.drop_inbox(self._cid) is None:
            return  # already cancelled, by us or the broker, or the transport is gone
        with contextlib.suppress(TransportClosed, ConnectionLost):
            self._link.call("cancel", {"tag": self.tag})
        self._inbox.put(CLOSED)


class LocalTransport:
    """One connection (one broker session) to a ``logbus broker serve`` on this machine."""

    #: multiprocessing's connections block a gevent-patched process.
    capabilities = Capabilities(cooperative=False)

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
        timeout = float(getattr(settings, "confirm_timeout", 30.0))
        connect_timeout = float(getattr(settings, "connect_timeout", 10.0))
        conn = _connect(self.path, authkey_file or f"{self.path}.key", connect_timeout)
        self._link = Link(conn, self.path, url, timeout)
        _live.add(self)

    def _call(self, op: str, args: dict[str, Any], body: bytes = b"") -> Any:
        return self._link.call(op, args, body)

    def _settle_now(self, how: Settlement, tag: int, multiple: bool, requeue: bool) -> None:
        self._link.settle(how, tag, multiple, requeue, 1)

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
        self.publish_many((message,), mandatory=mandatory)

    def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish with a window of confirms in flight; report the first failure and the count."""
        in_flight: deque[tuple[concurrent.futures.Future[Frame], list[Message]]] = deque()
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
                in_flight.append((self._link.publish(window, mandatory), window))
            if not in_flight or (window and len(in_flight) < _PACKETS_IN_FLIGHT):
                if not window:
                    break
                continue
            future, sent = in_flight.popleft()
            try:
                reply = self._link.wait(future)
                codes = reply.body
                if len(codes) != len(sent):
                    raise TransportError(
                        f"the broker confirmed {len(codes)} of {len(sent)} publishes"
                    )
            except LogbusError as exc:
                error = error or exc
                continue
            if codes.count(0) == len(codes):
                continue  # all routed: the common case, checked in one pass
            for index, code in enumerate(codes):
                if code == ERROR:
                    error = error or _refusal(reply.args.get("result"), index)
                elif code > ERROR:
                    error = error or TransportError(f"the broker sent confirm byte {code}")
                elif code:
                    failed += 1
                    first = first or (PublishOutcome(OUTCOMES[code]), sent[index])
        if error is not None:
            raise error
        if first is not None:
            raise_for_outcome(first[0], first[1], failed)

    def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue, or None when it is empty."""
        (future,) = self._link.submit([Frame("get", 0, {"queue": queue, "auto_ack": auto_ack})])
        reply = self._link.wait(future)
        result = reply.args.get("result")
        if result is None:
            return None
        delivery = Delivery(
            message_from(result, reply.body),
            delivery_tag=arg_int(result, "tag"),
            redelivered=arg_bool(result, "redelivered"),
            consumer_tag=arg_str(result, "consumer_tag", ""),
            queue=arg_str(result, "queue"),
            settle=self._settle_now,
        )
        if auto_ack:
            delivery.settled = Settlement.ACK
        return delivery

    def consume(
        self,
        queue: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> LocalConsumer:
        """Start consuming with manual acks and at most ``prefetch`` unacked deliveries."""
        return LocalConsumer(self, queue, prefetch, exclusive, arguments)

    def close(self) -> None:
        """Close the session (the broker requeues what was not acked), then the connection."""
        link = self._link
        if link.closed:
            return
        if link.lost is None:
            with contextlib.suppress(LogbusError):
                link.call("close", {})  # synchronous: exclusive queues are gone on return
        link.close()

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _forked(self) -> None:
        """In a forked child: the connection belongs to the parent; never touch its socket."""
        self._link.forked()


def _refusal(errors: Any, index: int) -> LogbusError:
    """The broker's error for publish ``index`` of a batch."""
    for entry in errors if isinstance(errors, list) else ():
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == index:
            return rebuild({"class": entry[1], "message": entry[2]})
    return TransportError(f"the broker refused publish {index} of a batch and did not say why")


def _after_fork_in_child() -> None:
    for transport in list(_live):
        transport._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
