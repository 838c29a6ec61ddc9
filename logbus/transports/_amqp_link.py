"""One AMQP 0-9-1 connection on a plain socket, opened as pika opens it.

For the one-shot publisher of ``logbus emit`` (``_oneshot``): :func:`broker`
reads a single plain ``amqp://`` URL as pika reads it, :func:`connect` resolves
the host, tries its addresses in turn and does the handshake (PLAIN login,
tune, ``connection.open``), and :class:`Link` carries frames with deadlines,
sending heartbeats while it waits. A failure to connect is raised as the pika
transport raises it — the same error, the same words, down to pika's own
wording of a handshake timeout — and :class:`Unsure` where this module cannot
be sure what pika would have said: then nothing was published, and the caller
takes the full path.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from logbus._urls import redact_url, split_urls
from logbus.transports import _amqp_codec as codec
from logbus.transports._amqp_errors import login_refused, unreachable

__all__ = ["CLOSE", "CLOSE_OK", "Broker", "Closed", "Link", "Unsure", "broker", "connect"]

_START, _START_OK, _TUNE, _TUNE_OK = (10, 10), (10, 11), (10, 30), (10, 31)
_OPEN, _OPEN_OK = (10, 40), (10, 41)
CLOSE, CLOSE_OK = (10, 50), (10, 51)
_LOCALE = "en_US"
_CLOSE_WAIT = 2.0  # seconds to wait for close-ok before just hanging up


class Unsure(Exception):
    """Nothing was published, and the full path should find out (and say) what is wrong."""


@dataclass(frozen=True, slots=True)
class Broker:
    """Where to connect and as whom, from one plain ``amqp://`` URL."""

    host: str
    port: int
    user: str
    password: str
    vhost: str
    shown: str  # the URL with its password redacted

    @property
    def address(self) -> str:
        """``host:port``, as errors name the broker."""
        return f"{self.host}:{self.port}"


def broker(url: str) -> Broker | None:
    """The broker of a single plain ``amqp://`` URL, read as pika reads it; ``None``
    for anything else (TLS, failover, query parameters, other schemes, odd URLs)."""
    parts = [part.strip() for part in split_urls(url) if part.strip()]
    if len(parts) != 1 or any(c in parts[0] for c in "?#;"):
        return None
    one = parts[0]
    try:
        split = urlsplit(one)
        port = split.port
    except ValueError:
        return None
    if split.scheme.lower() != "amqp" or not split.hostname:
        return None
    user, password = "guest", "guest"
    if split.username is not None:
        if not split.username or split.password is None:
            return None
        user, password = unquote(split.username), unquote(split.password)
    vhost = unquote(split.path.split("/")[1]) if len(split.path) > 1 else "/"
    return Broker(split.hostname, port or 5672, user, password, vhost, redact_url(one))


class Closed(Exception):
    """The connection ended: the peer hung up, the socket failed, or the broker closed it."""


class Link:
    """A socket carrying AMQP frames, with deadlines, sending heartbeats while it waits.

    ``frame`` raises ``TimeoutError`` at its deadline, :class:`Closed` when the
    connection ends and ``ValueError`` for bytes that are not AMQP frames.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.heartbeat = 0.0  # seconds between our heartbeats; 0: none
        self._buffer = bytearray()
        self._frames: deque[tuple[int, int, bytes]] = deque()
        self._sent_at = time.monotonic()

    def send(self, data: bytes) -> None:
        """Send frames; ``Closed`` if the connection is gone."""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise Closed(f"send failed: {exc}") from None
        self._sent_at = time.monotonic()

    def frame(self, deadline: float) -> tuple[int, int, bytes]:
        """The next frame other than a heartbeat; ``TimeoutError`` at ``deadline``."""
        while True:
            while not self._frames:
                self._fill(deadline)
            kind, channel, payload = self._frames.popleft()
            if kind != codec.FRAME_HEARTBEAT:
                return kind, channel, payload

    def _fill(self, deadline: float) -> None:
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError
        wait = deadline - now
        if self.heartbeat:
            due = self._sent_at + self.heartbeat - now
            if due <= 0:
                self.send(codec.HEARTBEAT)
                return
            wait = min(wait, due)
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError as exc:
            raise Closed(f"receive failed: {exc}") from None
        if not data:
            raise Closed("the peer closed the connection")
        self._buffer += data
        self._frames.extend(codec.split_frames(self._buffer))  # ValueError: not AMQP framing

    def method(self, deadline: float) -> tuple[int, tuple[int, int], codec.Reader]:
        """The next frame, which must be a method: (channel, ids, arguments).

        The broker closing the connection (``connection.close``) raises ``Closed``;
        a malformed frame, ``ValueError``.
        """
        kind, channel, payload = self.frame(deadline)
        if kind != codec.FRAME_METHOD:
            raise ValueError(f"a frame of type {kind} where a method was due")
        ids, args = codec.parse_method(payload)
        if channel == 0 and ids == CLOSE:
            code, text = args.u16(), args.short()
            self.send_quietly(codec.method(0, *CLOSE_OK))
            raise Closed(f"closed by the broker ({code}): {text}")
        return channel, ids, args

    def close(self, wait: float | None = None) -> None:
        """Close the connection politely (close, then close-ok within ``wait`` seconds,
        by default a short while), then the socket."""
        deadline = time.monotonic() + (_CLOSE_WAIT if wait is None else wait)
        try:
            self.send(
                codec.method(
                    0,
                    *CLOSE,
                    codec.u16(200),
                    codec.short_string("Normal shutdown"),
                    codec.u16(0),
                    codec.u16(0),
                )
            )
            while True:
                kind, number, payload = self.frame(deadline)
                if kind == codec.FRAME_METHOD and number == 0:
                    ids, _args = codec.parse_method(payload)
                    if ids in (CLOSE_OK, CLOSE):
                        break
        except Exception:
            pass  # closing anyway
        finally:
            self.sock.close()

    def send_quietly(self, data: bytes) -> None:
        """Send, unless the connection is already gone."""
        with contextlib.suppress(Closed):
            self.send(data)


def connect(
    target: Broker, name: str, version: str, timeout: float, heartbeat: int
) -> tuple[Link, int]:
    """An open connection and its frame size, or the error pika would have raised."""
    try:
        infos = socket.getaddrinfo(
            target.host, target.port, 0, socket.SOCK_STREAM, socket.IPPROTO_TCP
        )
    except socket.gaierror as exc:
        raise unreachable(f"{target.address}: host name not resolved ({exc.strerror})") from None
    except Exception:
        raise Unsure from None
    why = None
    for info in infos:
        family, kind, proto, _canonical, address = info
        started = time.monotonic()
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            sock.connect(address)
        except TimeoutError:
            sock.close()
            why = "timed out"
            continue
        except OSError as exc:
            sock.close()
            if not exc.strerror:
                raise Unsure from None
            why = exc.strerror.lower()
            continue
        # After a TCP connection, pika tries no other address: neither does this.
        return _handshake(Link(sock), target, info, started + timeout, name, version, heartbeat)
    if why is None:
        raise Unsure
    raise unreachable(f"{target.address}: {why}")


def _handshake(
    link: Link,
    target: Broker,
    info: tuple[Any, ...],
    deadline: float,
    name: str,
    version: str,
    heartbeat: int,
) -> tuple[Link, int]:
    """Log in and open the vhost; ``state`` follows pika's names, which its errors show."""
    state = "PROTOCOL"
    try:
        link.send(codec.PROTOCOL_HEADER)
        channel, ids, args = link.method(deadline)
        if channel != 0 or ids != _START or (args.octet(), args.octet()) != (0, 9):
            raise Unsure
        args.skip_table()
        if b"PLAIN" not in args.long().split():
            raise Unsure
        state = "START"  # as pika, from the moment connection.start arrived
        response = b"\0" + target.user.encode() + b"\0" + target.password.encode()
        link.send(
            codec.method(
                0,
                *_START_OK,
                codec.encode_table(codec.client_properties(name, version)),
                codec.short_string("PLAIN"),
                codec.long_string(response),
                codec.short_string(_LOCALE),
            )
        )
        channel, ids, args = link.method(deadline)
        if channel != 0 or ids != _TUNE:
            raise Unsure
        state = "TUNE"
        channel_max = _negotiate(codec.CHANNEL_MAX, args.u16())
        frame_max = _negotiate(codec.FRAME_MAX, args.u32())
        link.send(
            codec.method(
                0, *_TUNE_OK, codec.u16(channel_max), codec.u32(frame_max), codec.u16(heartbeat)
            )
            + codec.method(
                0,
                *_OPEN,
                codec.short_string(target.vhost),
                codec.short_string(""),
                codec.bits(True),
            )
        )
        channel, ids, _args = link.method(deadline)
        if channel != 0 or ids != _OPEN_OK:
            raise Unsure
    except Closed:
        link.sock.close()
        if state == "PROTOCOL":
            raise unreachable(f"{target.address}: the peer does not speak AMQP 0-9-1") from None
        why = (
            "login refused (user name or password)"
            if state == "START"
            else "access to the vhost refused (missing vhost or permissions)"
        )
        raise login_refused(target.address, target.user, target.vhost, why, target.shown) from None
    except TimeoutError:
        link.sock.close()
        # pika closes the half-open connection and reports that, in these words.
        setting_up = f"Timeout while setting up AMQP to {target.host!r}/{info}; ssl=False"
        aborted = (
            "ConnectionOpenAborted: Connection.close() called before connection finished "
            f"opening: prev_state={state} (320): {setting_up!r}"
        )
        raise unreachable(f"{target.address}: {aborted}") from None
    except ValueError:  # a malformed frame: not what pika expects either, let it say so
        link.sock.close()
        raise Unsure from None
    except BaseException:
        link.sock.close()
        raise
    link.heartbeat = heartbeat / 2
    return link, frame_max


def _negotiate(client: int, server: int) -> int:
    # As pika (and the Java client) do: 0 is "no limit", else the lower one wins.
    return max(client, server) if client == 0 or server == 0 else min(client, server)
