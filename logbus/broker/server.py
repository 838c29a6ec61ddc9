"""One in-process :class:`~logbus.broker.Broker` served to other processes over a local socket.

:class:`BrokerServer` accepts connections on a :mod:`multiprocessing.connection`
``Listener``; each connection is one :class:`~logbus.broker.Session` (an AMQP
connection with one channel). Everything crosses as bytes in logbus's own
framing (:mod:`logbus.wire.frames`), never pickled.

Threads, per server and per client::

    accept ──► client ─┬─ reader: authenticate, then frames ─► Session calls ─► replies ─┐
                       │                                                               ▼
                       └─ writer ◄── outbox (queue.SimpleQueue, never blocks) ◄── replies,
                                                   deliveries, cancellations (pushed by the
                                                   broker under its lock)

The broker calls a consumer's ``deliver`` under its lock, so the callback only
puts the delivery on the client's outbox; encoding and the socket write happen
on the writer thread, which sends whatever the outbox holds as one packet, each
run of deliveries in it as one ``deliver`` frame (:mod:`logbus.wire.batch`).
Replies go through the same outbox, so a client sees every delivery pushed
before the reply to the request that caused it. What each request does is in
:mod:`logbus.broker._requests`. Settlements (many tags to a frame) get no
reply: they are queued with ``settle_later`` and applied once the reader has
handled what it received, before it blocks again. A client that goes away
(EOF, reset, undecodable bytes) has its session closed, which requeues its
unacknowledged messages flagged redelivered — RabbitMQ's rule for a dropped
connection.

:func:`serve` runs a server on an ``AF_UNIX`` socket until SIGTERM or SIGINT:
what ``logbus broker serve --listen PATH`` does.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import (
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from types import FrameType
from typing import Any

from logbus._log import get_logger
from logbus.broker._listen import key_path_for, listen, load_key
from logbus.broker._requests import HANDLERS, error_frame, settle
from logbus.broker.core import Broker
from logbus.broker.journal import FsyncPolicy, Journal
from logbus.broker.queues import Delivered
from logbus.broker.sessions import Session, open_session
from logbus.broker.watermark import Watermark, default_limit
from logbus.errors import ConfigError, DecodeError, LogbusError
from logbus.wire.batch import encode_deliveries
from logbus.wire.frames import (
    Frame,
    arg_bool,
    arg_int,
    arg_str,
    arg_table,
    decode_many,
    encode,
)

__all__ = ["BrokerServer", "key_path_for", "listen", "load_key", "make_broker", "serve"]

log = get_logger("logbus.broker.server")

#: The largest packet a client may send (RabbitMQ's largest message, plus room).
MAX_PACKET = 512 * 1024 * 1024 + 65536
#: Replies and deliveries a writer packs into one ``send_bytes``, and their bodies' bytes.
_WRITE_BATCH = 1024
_WRITE_BYTES = 4 * 1024 * 1024
_STOP = object()


class BrokerServer:
    """Serve ``broker`` to every client that connects to ``listener``.

    ``authkey``, when given, is checked on each client's own thread (the
    listener should then have none), so a client that connects and stalls
    holds up only itself. With a started ``watermark``, a client that publishes
    while its alarm is raised is told it is blocked and not read again until
    the alarm clears (RabbitMQ's memory alarm). Use as a context manager, or :meth:`start` and
    :meth:`close`.
    """

    def __init__(
        self,
        broker: Broker,
        listener: Listener,
        *,
        authkey: bytes | None = None,
        watermark: Watermark | None = None,
    ):
        self.broker = broker
        self.listener = listener
        self.watermark = watermark
        self.address: Any = listener.address
        self._authkey = authkey
        self._clients: set[_Client] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._pause = threading.Event()
        self._accepter = threading.Thread(
            target=self._accept_loop, name="logbus-broker-accept", daemon=True
        )

    def start(self) -> BrokerServer:
        """Start accepting clients in a background thread."""
        self._accepter.start()
        return self

    def __enter__(self) -> BrokerServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client_count(self) -> int:
        """How many clients are connected."""
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        """Stop accepting, disconnect every client (their sessions close), close the listener."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            clients = list(self._clients)
        if self._accepter.is_alive():
            _wake(self.address)  # a blocked accept() does not notice the listener closing
            self._accepter.join(timeout=5)
        self.listener.close()
        for client in clients:
            client.hang_up()
        for client in clients:
            client.join(timeout=5)

    def _accept_loop(self) -> None:
        while True:
            try:
                conn = self.listener.accept()
            except (OSError, EOFError, AuthenticationError) as exc:
                if self._closing:
                    return
                log.warning("broker.accept_failed", reason=repr(exc))
                self._pause.wait(0.05)  # out of file descriptors, say: do not spin
                continue
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                client = _Client(self, conn)
                self._clients.add(client)
            client.start()

    def _forget(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)


class _Client:
    """One connected process: its session, its reader and writer threads, its outbox."""

    def __init__(self, server: BrokerServer, conn: Connection[Any, Any]) -> None:
        self._server = server
        self._conn = conn
        self._session: Session | None = None
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read_loop, name="logbus-broker-read")
        self._writer = threading.Thread(target=self._write_loop, name="logbus-broker-write")
        self._reader.daemon = self._writer.daemon = True

    def start(self) -> None:
        self._reader.start()

    def join(self, timeout: float) -> None:
        self._reader.join(timeout)

    def hang_up(self) -> None:
        """Shut the socket down: both threads wake up and the reader cleans up."""
        _shutdown(self._conn)

    # -- reading -----------------------------------------------------------------

    def _read_loop(self) -> None:
        why = "end of stream"
        try:
            if self._server._authkey is not None:
                deliver_challenge(self._conn, self._server._authkey)
                answer_challenge(self._conn, self._server._authkey)
            session = self._session = open_session(self._server.broker, "local")
            watermark = self._server.watermark
            self._writer.start()
            while True:
                settled = False
                for frame in decode_many(self._conn.recv_bytes(MAX_PACKET)):
                    if frame.op == "publish" and watermark is not None and watermark.alarmed:
                        self._blocked(watermark)
                    if frame.op == "settle":
                        settle(session, frame)
                        settled = True
                    else:
                        self._outbox.put(self._handle(session, frame))
                if settled:  # about to block on the socket: apply the settlements now
                    with session.waiting():
                        pass
        except AuthenticationError as exc:
            why = f"refused: {exc}"
            log.warning("broker.client_refused", reason=str(exc))
        except DecodeError as exc:
            why = f"bad frame: {exc}"
            log.warning("broker.client_bad_frame", reason=str(exc))
        except (EOFError, OSError) as exc:
            why = repr(exc) if not isinstance(exc, EOFError) else why
        except Exception:  # a bug must cost this client its connection, never the server
            why = "internal error"
            log.exception("broker.client_failed")
        finally:
            self._cleanup(why)

    def _blocked(self, watermark: Watermark) -> None:
        """Read nothing more from this publisher until the memory alarm clears."""
        if self._session is not None:  # what it settled so far is applied first
            with self._session.waiting():
                pass
        self._outbox.put(Frame("blocked", 0, {"reason": "memory above the broker's limit"}))
        log.info("broker.client_blocked", limit=watermark.limit)
        while not watermark.wait_clear(0.25):
            if self._server._closing:
                raise EOFError("the server is closing")
        self._outbox.put(Frame("unblocked", 0, {}))

    def _cleanup(self, why: str) -> None:
        _shutdown(self._conn)
        if self._session is not None:
            self._session.close()  # requeues what the client had not acknowledged
        self._outbox.put(_STOP)
        if self._writer.is_alive():
            self._writer.join(timeout=5)
        self._conn.close()
        self._server._forget(self)
        log.debug("broker.client_gone", reason=why)

    def _handle(self, session: Session, frame: Frame) -> Frame:
        handler = HANDLERS.get(frame.op)
        if frame.op == "consume":
            handler = self._consume
        try:
            if handler is None:
                raise DecodeError(f"frame: unknown operation {frame.op!r}")
            result, body = handler(session, dict(frame.args), frame.body)
        except LogbusError as exc:
            return error_frame(frame.id, exc)
        except Exception as exc:
            log.exception("broker.request_failed", op=frame.op)
            return Frame("error", frame.id, {"class": "TransportError", "message": repr(exc)})
        return Frame("ok", frame.id, {"result": result}, body)

    def _consume(self, session: Session, args: dict[str, Any], _body: bytes) -> tuple[Any, bytes]:
        cid = arg_int(args, "cid")
        put = self._outbox.put
        tag = session.consume(
            arg_str(args, "queue"),
            lambda delivered: put((cid, delivered)),  # under the broker lock: no blocking
            prefetch=arg_int(args, "prefetch", 0),
            on_cancel=lambda _tag: put(Frame("cancelled", 0, {"cid": cid})),
            exclusive=arg_bool(args, "exclusive", False),
            arguments=arg_table(args, "arguments"),
        )
        return tag, b""

    # -- writing -----------------------------------------------------------------

    def _write_loop(self) -> None:
        outbox = self._outbox
        try:
            while True:
                batch = [outbox.get()]
                size = 0
                while len(batch) < _WRITE_BATCH and size < _WRITE_BYTES:
                    try:
                        item = outbox.get_nowait()
                    except queue.Empty:
                        break
                    batch.append(item)
                    if type(item) is tuple:
                        size += len(item[1].message.body)
                packet, done = _packet(batch)
                if packet:
                    self._conn.send_bytes(packet)
                if done:
                    return
        except OSError:
            pass  # the reader sees the same broken socket and cleans up
        except Exception:
            log.exception("broker.client_write_failed")
        _shutdown(self._conn)


def _packet(batch: list[object]) -> tuple[bytes, bool]:
    """The outbox items as one packet: each run of deliveries as one ``deliver`` frame."""
    parts: list[bytes] = []
    run: list[tuple[int, Delivered]] = []
    done = False
    for item in batch:
        if type(item) is tuple:
            run.append(item)
            continue
        if run:
            parts.append(encode_deliveries(run))
            run = []
        if item is _STOP:
            done = True
        elif isinstance(item, Frame):
            parts.append(encode(item))
    if run:
        parts.append(encode_deliveries(run))
    return b"".join(parts), done


# -- sockets ------------------------------------------------------------------------


def _shutdown(conn: Connection[Any, Any]) -> None:
    """Wake whoever blocks on ``conn``: closing an fd does not, shutting the socket down does."""
    with (
        contextlib.suppress(OSError, ValueError),
        socket.fromfd(conn.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.shutdown(socket.SHUT_RDWR)  # on the shared socket, through a duplicate fd


def _wake(address: Any) -> None:
    family = socket.AF_UNIX if isinstance(address, str | bytes) else socket.AF_INET
    with contextlib.suppress(OSError), socket.socket(family) as sock:
        sock.settimeout(1.0)
        sock.connect(address)


def make_broker(*, data_dir: str | None = None, fsync: str | None = None) -> Broker:
    """The broker ``logbus broker serve`` runs, built from its options.

    With ``data_dir``, durable entities and the persistent records of durable
    queues are journaled there and come back when a broker starts on it again
    (:mod:`logbus.broker.journal`); ``fsync`` is the journal's policy (default
    ``interval``). Without, the broker lives in memory only. Close the broker
    when done: that flushes the journal.
    """
    if data_dir is None:
        if fsync is not None:
            raise ConfigError(
                "--fsync needs --data-dir: without a data directory nothing is written"
            )
        return Broker("serve")
    policy = _FSYNC_POLICIES.get(fsync or "interval")
    if policy is None:
        raise ConfigError(f"unknown fsync policy {fsync!r}; use always, interval or never")
    return Broker("serve", journal=Journal(data_dir, fsync=policy))


_FSYNC_POLICIES: dict[str, FsyncPolicy] = {
    "always": "always",
    "interval": "interval",
    "never": "never",
}


def serve(
    path: str,
    *,
    authkey_file: str | None = None,
    broker: Broker | None = None,
    on_ready: Callable[[str, str], None] | None = None,
    stop: threading.Event | None = None,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
    memory_limit: int | None = None,
) -> None:
    """Serve ``broker`` (default: a fresh one) on the ``AF_UNIX`` socket ``path`` until stopped.

    Stops on one of ``signals`` (handled only when called on the main thread)
    or when ``stop`` is set; either way the socket file is removed.
    ``on_ready(path, key_file)`` is called once clients can connect. Publishers
    are blocked while the broker holds more than ``memory_limit`` bytes
    (default: :func:`~logbus.broker.watermark.default_limit`, 40 % of the
    machine's memory; see :mod:`logbus.broker.watermark`).
    """
    path = os.path.abspath(path)
    key_file = os.path.abspath(authkey_file or key_path_for(path))
    limit = default_limit() if memory_limit is None else memory_limit
    listener, key = listen(path, authkey_file=key_file)
    own_broker = broker is None
    broker = broker or Broker(f"serve:{path}")
    stop = stop or threading.Event()
    watermark = Watermark(broker.held_bytes, limit, page=broker.page)
    try:
        with (
            _stopping_on(signals, stop),
            BrokerServer(broker, listener, authkey=key, watermark=watermark),
        ):
            watermark.start()  # after the handlers: a signal at once still stops cleanly
            if on_ready is not None:
                on_ready(path, key_file)
            stop.wait()
    finally:
        watermark.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if own_broker:
            broker.close()


@contextlib.contextmanager
def _stopping_on(signals: tuple[signal.Signals, ...], stop: threading.Event) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
