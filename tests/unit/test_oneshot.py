"""The one-shot publisher: URLs read as pika reads them, and each way a conversation ends.

A scripted fake broker (one thread, one socket) plays RabbitMQ's side, so that
the outcomes a healthy local RabbitMQ never produces — a publish refused with a
channel error, a connection cut after the publish, a broker that stops
answering — are covered too. The e2e tests compare the command line's output
on both paths against the real broker.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest

from logbus import _plain_topology as plain
from logbus._keys import Severity
from logbus._wire import WireRecord
from logbus.errors import AccessRefused, ConnectionLost, NotConfirmed, NotFound, Unroutable
from logbus.transports import _amqp_codec as codec
from logbus.transports import _oneshot
from logbus.transports._oneshot import Broker, Outgoing, Unsettled, Unsure, broker, publish
from logbus.transports._pika_convert import endpoints

# -- reading URLs -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@localhost:5672/%2F",
        "amqp://localhost",
        "AMQP://u:p@Host.Example:1234/",
        "amqp://u%40x:p%3Aw%2F@h/v%2Fhost",
        "amqp://u:p@h/vhost/ignored",
        "amqp://u:p@[::1]:5673/%2F",
        "  amqp://u:p@h:5672  ",
        "amqp://u:p@h",
        "amqp://u:@h/",
    ],
)
def test_plain_urls_are_read_as_pika_reads_them(url: str) -> None:
    """Host, port, user, password, vhost and the redacted URL are the pika transport's."""
    target = broker(url)
    assert target is not None
    [endpoint] = endpoints(
        url, heartbeat=30, heartbeat_wins=True, connect_timeout=1.0, connection_name="t"
    )
    params = endpoint.parameters
    credentials = params.credentials
    assert (target.host, target.port, target.vhost) == (
        params.host,
        params.port,
        params.virtual_host,
    )
    assert (target.user, target.password) == (credentials.username, credentials.password)
    assert (target.address, target.vhost, target.user, target.shown) == (
        endpoint.address,
        endpoint.vhost,
        endpoint.user,
        endpoint.shown,
    )


@pytest.mark.parametrize(
    "url",
    [
        "amqps://u:p@h/",
        "amqp://u:p@a/,amqp://u:p@b/",
        "amqp://u:p@h/?heartbeat=5",
        "amqp://u:p@h/#x",
        "amqp://u:p@h/v;x",
        "amqp://u@h/",
        "amqp://:p@h/",
        "amqp://u:p@h:99999/",
        "amqp:///",
        "memory://",
        "local:///tmp/x.sock",
    ],
)
def test_everything_else_is_left_to_the_pika_transport(url: str) -> None:
    """TLS, failover, query parameters and odd URLs are not the one-shot's business."""
    assert broker(url) is None


# -- a scripted broker --------------------------------------------------------------


class FakeBroker:
    """RabbitMQ's side of one connection, played by ``script`` on a thread."""

    def __init__(self, script: Callable[[FakeBroker], None]) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conn: socket.socket | None = None
        self.buffer = bytearray()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script: Callable[[FakeBroker], None]) -> None:
        try:
            self.conn, _ = self.server.accept()
            script(self)
        except BaseException as exc:
            self.failure = exc

    def read(self, size: int) -> bytes:
        assert self.conn is not None
        while len(self.buffer) < size:
            data = self.conn.recv(65536)
            if not data:
                raise EOFError
            self.buffer += data
        piece = bytes(self.buffer[:size])
        del self.buffer[:size]
        return piece

    def frame(self) -> tuple[int, int, bytes]:
        kind, channel, size = struct.unpack(">BHI", self.read(7))
        payload = self.read(size + 1)[:-1]
        return kind, channel, payload

    def method(self) -> tuple[int, tuple[int, int], bytes]:
        kind, channel, payload = self.frame()
        assert kind == 1, kind
        return channel, struct.unpack(">HH", payload[:4]), payload[4:]

    def send(self, channel: int, ids: tuple[int, int], *args: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(codec.method(channel, *ids, *args))

    def handshake(self) -> None:
        assert self.read(8) == codec.PROTOCOL_HEADER
        self.send(0, (10, 10), b"\x00\x09", codec.encode_table({}),
                  codec.long_string("PLAIN AMQPLAIN"), codec.long_string("en_US"))  # fmt: skip
        assert self.method()[1] == (10, 11)
        self.send(0, (10, 30), codec.u16(2047), codec.u32(131072), codec.u16(60))
        assert self.method()[1] == (10, 31)
        assert self.method()[1] == (10, 40)
        self.send(0, (10, 41), codec.short_string(""))

    def declarations(self, count: int) -> None:
        """Answer channel.open, ``count`` declarations and confirm.select on channel 1."""
        assert self.method()[1] == (20, 10)
        self.send(1, (20, 11), codec.long_string(""))
        for _ in range(count):
            _channel, (class_id, method_id), _args = self.method()
            self.send(1, (class_id, method_id + 1), *self._ok(class_id, method_id))
        assert self.method()[1] == (85, 10)
        self.send(1, (85, 11))

    @staticmethod
    def _ok(class_id: int, method_id: int) -> tuple[bytes, ...]:
        if (class_id, method_id) == (50, 10):
            return codec.short_string("q"), codec.u32(0), codec.u32(0)
        return ()

    def published(self) -> tuple[int, str, str, bytes]:
        """Read one publish: (channel, exchange, routing key, body)."""
        channel, ids, args = self.method()
        assert ids == (60, 40)
        reader = codec.Reader(args, 2)
        exchange, key = reader.short(), reader.short()
        kind, _channel, header = self.frame()
        assert kind == 2
        size = struct.unpack(">Q", header[4:12])[0]
        body = b""
        while len(body) < size:
            body += self.frame()[2]
        return channel, exchange, key, body

    def ack(self, channel: int, tag: int, *, multiple: bool = False, nack: bool = False) -> None:
        ids = (60, 120) if nack else (60, 80)
        self.send(channel, ids, struct.pack(">Q", tag), codec.bits(multiple))

    def closed_politely(self) -> None:
        """Read up to connection.close and answer close-ok."""
        while True:
            _channel, ids, _args = self.method()
            if ids == (10, 50):
                self.send(0, (10, 51))
                return

    def finish(self) -> None:
        self.thread.join(10)
        if self.conn is not None:
            self.conn.close()
        self.server.close()
        if self.failure is not None and not isinstance(self.failure, EOFError | OSError):
            raise self.failure


DECLARATIONS = plain.declarations(plain.DEFAULT)


def messages(*exchanges: str) -> list[Outgoing]:
    """One record's messages, to each exchange given."""
    record = WireRecord("kern", Severity.INFO, "disk failed", host="h")
    return [Outgoing(x, "kern.info", record.body(), record.properties()) for x in exchanges]


def run(
    script: Callable[[FakeBroker], None],
    outgoing: list[Outgoing] | None = None,
    *,
    confirm_timeout: float = 5.0,
    url: str = "amqp://guest:guest@127.0.0.1:{port}/%2F",
) -> None:
    fake = FakeBroker(script)
    target = broker(url.format(port=fake.port))
    assert isinstance(target, Broker)
    try:
        publish(
            target,
            DECLARATIONS,
            messages("logbus.topic") if outgoing is None else outgoing,
            connect_timeout=2.0,
            confirm_timeout=confirm_timeout,
            heartbeat=30,
            connection_name="test",
            version="0",
        )
    finally:
        fake.finish()


def test_a_confirmed_publish_returns_and_closes_politely() -> None:
    """Handshake, declarations, publish, ack, connection.close: no error."""
    seen: list[Any] = []

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        fake.declarations(len(DECLARATIONS))
        seen.append(fake.published())
        fake.ack(1, 1)
        fake.closed_politely()

    run(script)
    [(channel, exchange, key, body)] = seen
    assert (channel, exchange, key) == (1, "logbus.topic", "kern.info")
    assert b'"message":"disk failed"' in body


def test_nacks_and_returns_are_counted_as_the_pika_transport_counts_them() -> None:
    """A returned message then a multiple nack: the first failure names the error, both count."""

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        fake.declarations(len(DECLARATIONS))
        _channel, exchange, key, body = fake.published()
        fake.published()
        fake.send(1, (60, 50), codec.u16(312), codec.short_string("NO_ROUTE"),
                  codec.short_string(exchange), codec.short_string(key))  # fmt: skip
        fake.conn.sendall(  # type: ignore[union-attr]
            codec.content(1, b"\x00\x00", body, 131072)
        )
        fake.ack(1, 1)
        fake.ack(1, 2, nack=True)
        fake.closed_politely()

    with pytest.raises(Unroutable) as caught:
        run(script, messages("logbus.topic", "logbus.topic"))
    assert caught.value.unconfirmed == 2
    assert "no queue is bound to exchange 'logbus.topic' for key 'kern.info'" in str(caught.value)


def test_a_publish_refused_by_a_channel_error_raises_it_and_resends_the_others() -> None:
    """channel.close naming one exchange fails its messages; the rest go out on a new channel."""
    resent: list[Any] = []

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        fake.declarations(len(DECLARATIONS))
        fake.published()
        fake.published()
        fake.send(1, (20, 40), codec.u16(404),
                  codec.short_string("NOT_FOUND - no exchange 'gone' in vhost '/'"),
                  codec.u16(60), codec.u16(40))  # fmt: skip
        assert fake.method()[1] == (20, 41)
        channel, ids, _args = fake.method()
        assert (channel, ids) == (2, (20, 10))
        fake.send(2, (20, 11), codec.long_string(""))
        assert fake.method()[1] == (85, 10)
        fake.send(2, (85, 11))
        resent.append(fake.published())
        fake.ack(2, 1)
        fake.closed_politely()

    with pytest.raises(NotFound, match="no exchange 'gone'"):
        run(script, messages("gone", "logbus.topic"))
    assert [(channel, exchange) for channel, exchange, _key, _body in resent] == [
        (2, "logbus.topic")
    ]


def test_a_refused_declaration_leaves_it_to_the_full_path() -> None:
    """A channel error before anything was published: Unsure, nothing sent."""

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        assert fake.method()[1] == (20, 10)
        fake.send(1, (20, 11), codec.long_string(""))
        fake.method()
        fake.send(1, (20, 40), codec.u16(406), codec.short_string("PRECONDITION_FAILED"),
                  codec.u16(40), codec.u16(10))  # fmt: skip
        fake.closed_politely()

    with pytest.raises(Unsure):
        run(script)


def test_a_connection_cut_after_the_publish_is_unsettled() -> None:
    """The publish went out and the connection died before its ack: Unsettled."""

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        fake.declarations(len(DECLARATIONS))
        fake.published()
        assert fake.conn is not None
        fake.conn.close()

    with pytest.raises(Unsettled):
        run(script)


def test_a_connection_cut_before_the_publish_is_unsure() -> None:
    """The connection died during the declarations: nothing published, Unsure."""

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        fake.method()
        assert fake.conn is not None
        fake.conn.close()

    with pytest.raises(Unsure):
        run(script)


def test_a_silent_declaration_times_out_in_the_pika_transports_words() -> None:
    """No answer to the first declaration: ConnectionLost naming it, the address, the seconds."""

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        fake.method()
        fake.send(1, (20, 11), codec.long_string(""))
        fake.closed_politely()

    with pytest.raises(ConnectionLost) as caught:
        run(script, confirm_timeout=0.3)
    port = str(caught.value).split("127.0.0.1:")[1].split(" ")[0]
    assert str(caught.value) == (
        f"declare exchange 'logbus.topic': RabbitMQ at 127.0.0.1:{port} did not answer in 0.3s"
    )


def test_a_silent_confirm_while_blocked_says_the_broker_blocked_publishing() -> None:
    """connection.blocked and no ack: NotConfirmed with the alarm, nothing published."""
    published: list[Any] = []

    def script(fake: FakeBroker) -> None:
        fake.handshake()
        fake.send(0, (10, 60), codec.short_string("low on memory"))
        fake.declarations(len(DECLARATIONS))
        _channel, ids, _args = fake.method()  # no publish while blocked: straight to close
        published.append(ids)
        fake.send(0, (10, 51))

    with pytest.raises(NotConfirmed) as caught:
        run(script, confirm_timeout=0.3)
    assert published == [(10, 50)]
    assert str(caught.value) == (
        "1 message(s) not confirmed within 0.3s: RabbitMQ blocked publishing (low on memory: "
        "a memory or disk alarm); free resources on the broker or retry later"
    )


def test_a_refused_login_is_the_pika_transports_access_refused() -> None:
    """The broker closing the connection after start-ok is a refused login."""

    def script(fake: FakeBroker) -> None:
        assert fake.read(8) == codec.PROTOCOL_HEADER
        fake.send(0, (10, 10), b"\x00\x09", codec.encode_table({}),
                  codec.long_string("PLAIN"), codec.long_string("en_US"))  # fmt: skip
        fake.method()
        fake.send(0, (10, 50), codec.u16(403), codec.short_string("ACCESS_REFUSED - Login"),
                  codec.u16(0), codec.u16(0))  # fmt: skip

    with pytest.raises(AccessRefused, match="login refused \\(user name or password\\)"):
        run(script)


def test_module_names_its_exceptions() -> None:
    """Unsure and Unsettled are what callers catch."""
    assert {"Unsure", "Unsettled", "publish", "broker"} <= set(_oneshot.__all__)
