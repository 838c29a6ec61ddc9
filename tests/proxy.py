"""A TCP forwarder to the broker that a test can cut and restore: network faults on demand.

Cutting it resets every forwarded connection and stops listening, as a failed
link or a host gone away would; starting it again listens on the same port, so
a client's reconnect finds the broker once more. It can also terminate TLS, for
``amqps://`` tests against a broker that listens in plain AMQP. The ``proxy``
fixture (``tests/integration/conftest.py``) hands one to a test.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Proxy", "with_address"]


def with_address(url: str, host: str, port: int, scheme: str | None = None) -> str:
    """``url`` pointing at ``host:port`` (credentials and vhost kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, netloc=netloc))


class Proxy:
    """A TCP forwarder to the broker (optionally terminating TLS) that can be cut and restored."""

    def __init__(self, target: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.target = target
        self.tls = tls
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Listen (on the same port again after a cut) and forward every connection."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Stop listening and reset every forwarded connection, as a network failure would."""
        if self._listener is not None:
            with contextlib.suppress(OSError):  # wakes the accepting thread (Linux)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self.target)
        except OSError:  # includes a client refusing our certificate
            client.close()
            return
        with self._lock:
            self._open += [client, upstream]
        self._pump(client, upstream)

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        # One thread per pair: an SSL socket must not be read and written concurrently.
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in selector.select():
                    source, sink = key.fileobj, key.data
                    assert isinstance(source, socket.socket)
                    data = source.recv(65536)
                    if not data:
                        return
                    sink.sendall(data)
                    while isinstance(source, ssl.SSLSocket) and source.pending():
                        sink.sendall(source.recv(65536))
        except OSError:
            return
        finally:
            selector.close()
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
