"""One in-process :class:`~logbus.broker.Broker` served to other processes over a local socket.

:class:`BrokerServer` accepts connections on a :mod:`multiprocessing.connection`
``Listener``; each connection is one :class:`~logbus.broker.Session` (an AMQP
connection with one channel). Everything crosses as bytes in logbus's own
framing (:mod:`logbus.transports._frames`), never pickled.

Threads, per server and per client::

    accept ──► client ─┬─ reader: authenticate, then frames ─► Session calls ─► replies ─┐
                       │                                                               ▼
                       └─ writer ◄── outbox (queue.SimpleQueue, never blocks) ◄── replies,
                                                   deliveries, cancellations (pushed by the
                                                   broker under its lock)

The broker calls a consumer's ``deliver`` under its lock, so the callback only
puts the delivery on the client's outbox; encoding and the socket write happen
on the writer thread. Replies go through the same outbox, so a client sees
every delivery pushed before the reply to the request that caused it.
Settlements get no reply: they are queued with ``settle_later`` and applied
once the reader has handled what it received, before it blocks again. A client
that goes away (EOF, reset, undecodable bytes) has its session closed, which
requeues its unacknowledged messages flagged redelivered — RabbitMQ's rule for
a dropped connection.

:func:`serve` runs a server on an ``AF_UNIX`` socket until SIGTERM or SIGINT:
what ``logbus broker serve --listen PATH`` does.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import socket
import stat
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
from logbus.broker.core import Broker, Session
from logbus.broker.journal import FsyncPolicy, Journal
from logbus.broker.queues import Delivered
from logbus.errors import ConfigError, DecodeError, LogbusError
from logbus.message import QueueInfo
from logbus.transports._frames import (
    Frame,
    arg_bool,
    arg_int,
    arg_str,
    arg_table,
    decode_many,
    encode,
    message_args,
    message_from,
)

__all__ = ["BrokerServer", "key_path_for", "listen", "load_key", "make_broker", "serve"]

log = get_logger("logbus.broker.server")

#: The largest packet a client may send (RabbitMQ's largest message, plus room).
MAX_PACKET = 512 * 1024 * 1024 + 65536
#: Frames a writer packs into one ``send_bytes``.
_WRITE_BATCH = 256
_KEY_BYTES = 32
_STOP = object()
_Handler = Callable[[Session, dict[str, Any], bytes], tuple[Any, bytes]]


class BrokerServer:
    """Serve ``broker`` to every client that connects to ``listener``.

    ``authkey``, when given, is checked on each client's own thread (the
    listener should then have none), so a client that connects and stalls
    holds up only itself. Use as a context manager, or :meth:`start` and
    :meth:`close`.
    """

    def __init__(self, broker: Broker, listener: Listener, *, authkey: bytes | None = None):
        self.broker = broker
        self.listener = listener
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
            session = self._session = self._server.broker.session("local")
            self._writer.start()
            while True:
                settled = False
                for frame in decode_many(self._conn.recv_bytes(MAX_PACKET)):
                    if frame.op == "settle":
                        _settle(session, frame)
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
        handler = _HANDLERS.get(frame.op)
        if frame.op == "consume":
            handler = self._consume
        try:
            if handler is None:
                raise DecodeError(f"frame: unknown operation {frame.op!r}")
            result, body = handler(session, dict(frame.args), frame.body)
        except LogbusError as exc:
            return _error(frame.id, exc)
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
        )
        return tag, b""

    # -- writing -----------------------------------------------------------------

    def _write_loop(self) -> None:
        outbox = self._outbox
        try:
            while True:
                batch = [outbox.get()]
                while len(batch) < _WRITE_BATCH:
                    try:
                        batch.append(outbox.get_nowait())
                    except queue.Empty:
                        break
                done = any(item is _STOP for item in batch)
                packet = b"".join(encode(_as_frame(item)) for item in batch if item is not _STOP)
                if packet:
                    self._conn.send_bytes(packet)
                if done:
                    return
        except OSError:
            pass  # the reader sees the same broken socket and cleans up
        except Exception:
            log.exception("broker.client_write_failed")
        _shutdown(self._conn)


def _as_frame(item: object) -> Frame:
    if isinstance(item, Frame):
        return item
    assert isinstance(item, tuple)
    cid, delivered = item
    return _delivered_frame("deliver", 0, delivered, {"cid": cid})


def _delivered_frame(op: str, ident: int, item: Delivered, extra: dict[str, Any]) -> Frame:
    args = message_args(item.message)
    args.update(
        extra,
        tag=item.delivery_tag,
        redelivered=item.redelivered,
        queue=item.queue,
        consumer_tag=item.consumer_tag,
    )
    return Frame(op, ident, args, item.message.body)


def _error(ident: int, exc: LogbusError) -> Frame:
    return Frame("error", ident, {"class": type(exc).__name__, "message": str(exc)})


def _settle(session: Session, frame: Frame) -> None:
    args = frame.args
    requeue = args.get("requeue")
    if requeue is not None and type(requeue) is not bool:
        raise DecodeError("frame: settle's requeue must be true, false or null")
    session.settle_later(
        arg_int(args, "tag"), multiple=arg_bool(args, "multiple", False), requeue=requeue
    )


# -- request handlers: (session, args, body) -> (result, reply body) ----------------


def _declare_exchange(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.declare_exchange(
        arg_str(a, "name"),
        arg_str(a, "type"),
        durable=arg_bool(a, "durable", True),
        auto_delete=arg_bool(a, "auto_delete", False),
        internal=arg_bool(a, "internal", False),
        arguments=arg_table(a, "arguments"),
        passive=arg_bool(a, "passive", False),
    )
    return None, b""


def _declare_queue(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    info: QueueInfo = session.declare_queue(
        arg_str(a, "name", ""),
        durable=arg_bool(a, "durable", True),
        exclusive=arg_bool(a, "exclusive", False),
        auto_delete=arg_bool(a, "auto_delete", False),
        arguments=arg_table(a, "arguments"),
        passive=arg_bool(a, "passive", False),
    )
    return [info.name, info.message_count, info.consumer_count], b""


def _bind(method: str, first: str, second: str) -> _Handler:
    def handler(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
        getattr(session, method)(
            arg_str(a, first),
            arg_str(a, second),
            arg_str(a, "routing_key", ""),
            arg_table(a, "arguments"),
        )
        return None, b""

    return handler


def _publish(session: Session, a: dict[str, Any], body: bytes) -> tuple[Any, bytes]:
    outcome = session.publish(message_from(a, body), mandatory=arg_bool(a, "mandatory", False))
    return outcome.value, b""


def _get(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    item = session.get(arg_str(a, "queue"), auto_ack=arg_bool(a, "auto_ack", False))
    if item is None:
        return None, b""
    frame = _delivered_frame("got", 0, item, {})
    return dict(frame.args), frame.body


def _delete_exchange(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.delete_exchange(arg_str(a, "name"), if_unused=arg_bool(a, "if_unused", False))
    return None, b""


def _delete_queue(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    count = session.delete_queue(
        arg_str(a, "name"),
        if_unused=arg_bool(a, "if_unused", False),
        if_empty=arg_bool(a, "if_empty", False),
    )
    return count, b""


def _cancel(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.cancel(arg_str(a, "tag"))
    return None, b""


def _close(session: Session, _a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.close()
    return None, b""


_HANDLERS: dict[str, _Handler] = {
    "declare_exchange": _declare_exchange,
    "delete_exchange": _delete_exchange,
    "declare_queue": _declare_queue,
    "delete_queue": _delete_queue,
    "purge_queue": lambda s, a, _b: (s.purge_queue(arg_str(a, "name")), b""),
    "bind_queue": _bind("bind_queue", "queue", "exchange"),
    "unbind_queue": _bind("unbind_queue", "queue", "exchange"),
    "bind_exchange": _bind("bind_exchange", "destination", "source"),
    "unbind_exchange": _bind("unbind_exchange", "destination", "source"),
    "publish": _publish,
    "get": _get,
    "cancel": _cancel,
    "close": _close,
}


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


def key_path_for(path: str) -> str:
    """Where the key of the socket at ``path`` lives: ``<path>.key``."""
    return f"{path}.key"


def load_key(key_file: str, *, create: bool = True) -> bytes:
    """Read the authentication key, creating it (0600, 32 random bytes) when missing.

    Refuses (``ConfigError``) a key file that group or others may read: whoever
    holds the key can read every record the broker carries.
    """
    if create:
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create the key file {key_file}: {exc.strerror}") from None
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_bytes(_KEY_BYTES))
    try:
        mode = stat.S_IMODE(os.stat(key_file).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"key file {key_file} is readable by group or others (mode {mode:04o}); "
                f"run: chmod 600 {key_file}"
            )
        with open(key_file, "rb") as source:
            key = source.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the key file {key_file}: {exc.strerror}") from None
    if not key:
        raise ConfigError(f"key file {key_file} is empty; delete it and a new one is made")
    return key


def listen(path: str, *, authkey_file: str | None = None) -> tuple[Listener, bytes]:
    """An ``AF_UNIX`` listener on ``path`` (mode 0600) and its key, read or created.

    A socket already at ``path`` is removed only if nothing answers on it.
    """
    key = load_key(authkey_file or key_path_for(path))
    _clear_stale(path)
    try:
        listener = Listener(path, family="AF_UNIX", backlog=128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    os.chmod(path, 0o600)
    return listener, key


def _clear_stale(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket; remove it or choose another path")
    with socket.socket(socket.AF_UNIX) as probe:
        probe.settimeout(2.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # stale: left by a broker that did not stop cleanly
            log.info("broker.stale_socket_removed", path=path)
            return
        except OSError:
            pass  # timed out with a full backlog: somebody is there
    raise ConfigError(f"a broker already answers on {path}; stop it or choose another path")


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
) -> None:
    """Serve ``broker`` (default: a fresh one) on the ``AF_UNIX`` socket ``path`` until stopped.

    Stops on one of ``signals`` (handled only when called on the main thread)
    or when ``stop`` is set; either way the socket file is removed.
    ``on_ready(path, key_file)`` is called once clients can connect.
    """
    path = os.path.abspath(path)
    key_file = os.path.abspath(authkey_file or key_path_for(path))
    listener, key = listen(path, authkey_file=key_file)
    own_broker = broker is None
    broker = broker or Broker(f"serve:{path}")
    stop = stop or threading.Event()
    try:
        with _stopping_on(signals, stop), BrokerServer(broker, listener, authkey=key):
            if on_ready is not None:
                on_ready(path, key_file)
            stop.wait()
    finally:
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
