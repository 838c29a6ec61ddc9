"""The AMQP transport against a real RabbitMQ: mapping, pipelining, failover, TLS, heartbeats."""

from __future__ import annotations

import datetime as dt
import decimal
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from pika import spec

from logbus.errors import (
    AccessRefused,
    BrokerUnavailable,
    ConfigError,
    InputError,
    NotConfirmed,
    NotFound,
    TransportClosed,
    Unroutable,
)
from logbus.message import Message, Properties
from logbus.transports import connect
from logbus.transports.amqp import AmqpTransport
from tests.integration.test_amqp_faults import RABBITMQCTL, broker_connection
from tests.proxy import Proxy, with_address
from tests.support import require_or_skip


@pytest.fixture(params=["fast", "pika"])
def inbound(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Consume with logbus's fast inbound path (the default) and with pika's own."""
    if request.param == "pika":
        monkeypatch.setenv("LOGBUS_AMQP_FAST_INBOUND", "0")
    return str(request.param)


@pytest.fixture
def transport(amqp_url: str, unique_name: str, inbound: str) -> Iterator[AmqpTransport]:
    """A transport named after the test."""
    with AmqpTransport(amqp_url, connection_name=f"logbus-{unique_name}") as opened:
        yield opened


@pytest.fixture
def queue(transport: AmqpTransport) -> str:
    """An exclusive, server-named queue (gone with the connection)."""
    return transport.declare_queue("", exclusive=True).name


def closed_port() -> Iterator[int]:
    """A local port nothing listens on: bound, never listening, so connects are refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.fixture
def dead_port() -> Iterator[int]:
    """A local port that refuses connections for the test's duration."""
    yield from closed_port()


@pytest.fixture
def dead_port2() -> Iterator[int]:
    """A second local port that refuses connections."""
    yield from closed_port()


def test_connect_opens_an_amqp_transport_for_amqp_urls(amqp_url: str):
    """connect() gives an AmqpTransport for amqp:// URLs."""
    with connect(amqp_url) as opened:
        assert isinstance(opened, AmqpTransport)


def test_properties_round_trip_through_rabbitmq(transport, queue):
    """Every basic property and nested header value comes back as it was published."""
    sent = Properties(
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        priority=5,
        correlation_id="corr-1",
        reply_to="replies",
        expiration="60000",
        message_id="id-1",
        timestamp=1_700_000_000,
        type="log",
        user_id="guest",
        app_id="logbus",
        headers={
            "facility": "kern",
            "count": 3,
            "big": 2**40,
            "negative": -7,
            "flag": True,
            "nothing": None,
            "raw": b"\x00\xff",
            "price": decimal.Decimal("12.25"),
            "at": dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
            "list": [1, "two", [3], {"four": 4}],
            "x-death": [{"count": 1, "queue": "q", "routing-keys": ["a.b"]}],
        },
    )
    transport.publish(Message(b"{}", sent, "", queue))
    delivery = transport.get(queue)
    assert delivery is not None
    assert delivery.properties == sent
    assert (delivery.exchange, delivery.routing_key, delivery.body) == ("", queue, b"{}")
    delivery.ack()


def test_float_header_is_refused_before_anything_is_sent(transport, queue):
    """A header AMQP cannot carry is an InputError, and nothing reaches the queue."""
    with pytest.raises(InputError, match="float"):
        transport.publish(Message(b"x", Properties(headers={"load": 0.5}), "", queue))
    assert transport.declare_queue(queue, passive=True).message_count == 0


def test_publish_many_delivers_every_message_in_order(transport, queue):
    """Five windows of pipelined publishes all arrive, in publish order."""
    count = 5000
    transport.publish_many(Message(str(i).encode(), Properties(), "", queue) for i in range(count))
    consumer = transport.consume(queue, prefetch=1000)
    bodies = []
    while len(bodies) < count and (delivery := consumer.get(timeout=5)) is not None:
        bodies.append(int(delivery.body))
        if len(bodies) % 500 == 0:
            delivery.ack(multiple=True)
    assert bodies == list(range(count))


def test_publish_many_counts_every_returned_message(transport, queue):
    """Unroutable mandatory messages in a batch are counted; the routable ones arrive."""
    routed = [Message(b"ok", Properties(), "", queue)] * 3
    lost = [Message(b"lost", Properties(), "amq.direct", "nobody.listens")] * 4
    with pytest.raises(Unroutable) as info:
        transport.publish_many([*routed, *lost, *routed])
    assert info.value.unconfirmed == 4
    assert info.value.routing_key == "nobody.listens"
    assert transport.declare_queue(queue, passive=True).message_count == 6


def test_channel_errors_leave_the_transport_usable(transport, queue, unique_name):
    """After NOT_FOUND on a declare and on a publish, the next calls work."""
    with pytest.raises(NotFound, match=f"{unique_name}-missing"):
        transport.declare_queue(f"{unique_name}-missing", passive=True)
    with pytest.raises(NotFound, match=f"{unique_name}-nowhere"):
        transport.publish(Message(b"x", Properties(), f"{unique_name}-nowhere", "k"))
    transport.publish(Message(b"fine", Properties(), "", queue))
    assert transport.declare_queue(queue, passive=True).message_count == 1


def test_failover_skips_a_dead_first_host(amqp_url, dead_port):
    """With the first URL refusing connections, the transport connects to the second."""
    url = f"{with_address(amqp_url, '127.0.0.1', dead_port)},{amqp_url}"
    with AmqpTransport(url) as opened:
        name = opened.declare_queue("", exclusive=True).name
        opened.publish(Message(b"via second", Properties(), "", name))
        delivery = opened.get(name)
        assert delivery is not None
        assert delivery.body == b"via second"


def test_unreachable_brokers_are_named_without_the_password(amqp_url, dead_port, dead_port2):
    """BrokerUnavailable names each host:port and what to check, never the password."""
    first = with_address("amqp://logbus:s3cret-pw@x/%2F", "127.0.0.1", dead_port)
    second = with_address("amqp://logbus:s3cret-pw@x/%2F", "127.0.0.1", dead_port2)
    with pytest.raises(BrokerUnavailable) as info:
        AmqpTransport(f"{first},{second}", connect_timeout=2)
    message = str(info.value)
    assert f"127.0.0.1:{dead_port}" in message
    assert f"127.0.0.1:{dead_port2}" in message
    assert "refused" in message
    assert "running" in message
    assert "s3cret-pw" not in message


def test_wrong_password_is_access_refused_without_the_password(amqp_url):
    """A refused login is AccessRefused naming the user, never the password."""
    parts = urlsplit(amqp_url)
    url = with_address("amqp://guest:n0t-the-pw@x/%2F", parts.hostname or "", parts.port or 5672)
    with pytest.raises(AccessRefused) as info:
        AmqpTransport(url)
    assert "'guest'" in str(info.value)
    assert "n0t-the-pw" not in str(info.value)


def test_unknown_option_is_a_config_error(amqp_url):
    """A misspelt option is refused before connecting."""
    with pytest.raises(ConfigError, match="hearbeat"):
        AmqpTransport(amqp_url, hearbeat=5)


def test_one_transport_serves_many_threads(transport, queue):
    """Eight threads publishing through one transport all get their confirms."""
    failures: list[Exception] = []

    def publish(worker: int) -> None:
        try:
            for i in range(100):
                transport.publish(Message(f"{worker}-{i}".encode(), Properties(), "", queue))
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=publish, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert transport.declare_queue(queue, passive=True).message_count == 800


def test_close_is_idempotent_and_later_calls_raise_transport_closed(amqp_url):
    """close() twice is fine; any call afterwards raises TransportClosed."""
    opened = AmqpTransport(amqp_url)
    opened.close()
    opened.close()
    with pytest.raises(TransportClosed):
        opened.declare_queue("", exclusive=True)
    with pytest.raises(TransportClosed):
        opened.publish(Message(b"x", Properties(), "", "q"))


def test_close_ends_a_consumer_iteration(amqp_url, inbound):
    """A thread iterating a consumer finishes when the transport closes."""
    opened = AmqpTransport(amqp_url)
    consumer = opened.consume(opened.declare_queue("", exclusive=True).name)
    ended = threading.Event()

    def iterate() -> None:
        for _ in consumer:
            pass
        ended.set()

    threading.Thread(target=iterate, daemon=True).start()
    opened.close()
    assert ended.wait(5)


def test_blocked_connection_publish_raises_not_confirmed_in_time(amqp_url, queue, transport):
    """While RabbitMQ blocks the connection, a publish gives up with NotConfirmed at its timeout.

    The broker's connection.blocked is simulated: a real memory or disk alarm would block
    every client of the shared test broker.
    """
    with AmqpTransport(amqp_url, confirm_timeout=1.0, publish_window=10) as blocked:
        core = blocked._core
        frame = SimpleNamespace(method=spec.Connection.Blocked(reason="low on memory"))
        core.submit(lambda: core._blocked(core.connection, frame))
        pulled = []

        def records() -> Iterator[Message]:
            for i in range(100):
                pulled.append(i)
                yield Message(b"x", Properties(), "", queue)

        with pytest.raises(NotConfirmed, match="blocked") as info:
            blocked.publish_many(records())
        assert info.value.unconfirmed == 10  # one window, and nothing sent
        assert len(pulled) == 10
        core.submit(lambda: core._unblocked(core.connection, None))
        blocked.publish(Message(b"after", Properties(), "", queue))
    assert transport.declare_queue(queue, passive=True).message_count == 1


# -- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        require_or_skip("openssl is not on PATH: cannot make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    command += ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def tls_proxy(amqp_url: str, certificate: tuple[Path, Path]) -> Iterator[Proxy]:
    """A TLS endpoint with the self-signed certificate, forwarding to the broker."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    parts = urlsplit(amqp_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5672), tls=context)
    proxy.start()
    yield proxy
    proxy.cut()


def test_amqps_verifies_the_broker_certificate_by_default(amqp_url, tls_proxy):
    """amqps:// refuses a broker whose certificate no trusted CA signed."""
    url = with_address(amqp_url, "127.0.0.1", tls_proxy.port, scheme="amqps")
    with pytest.raises(BrokerUnavailable, match="certificate verif"):
        AmqpTransport(url, connect_timeout=5)


def test_amqps_trusts_the_ca_named_in_the_url(amqp_url, tls_proxy, certificate):
    """With ?cafile= naming the signer, connect("amqps://...") connects and carries messages."""
    url = with_address(amqp_url, "127.0.0.1", tls_proxy.port, scheme="amqps")
    with connect(f"{url}?cafile={certificate[0]}", connect_timeout=5) as secure:
        assert isinstance(secure, AmqpTransport)
        name = secure.declare_queue("", exclusive=True).name
        secure.publish(Message(b"over tls", Properties(), "", name))
        delivery = secure.get(name)
        assert delivery is not None
        assert delivery.body == b"over tls"


# -- heartbeats -------------------------------------------------------------------------


def test_connection_is_named_for_the_broker(amqp_url):
    """The broker lists the connection under the transport's logbus-... name."""
    if RABBITMQCTL is None:
        require_or_skip("rabbitmqctl is not on PATH")
    with AmqpTransport(amqp_url) as opened:
        assert opened.connection_name.startswith("logbus-")
        assert broker_connection(opened.connection_name).pid


def test_heartbeats_keep_an_idle_connection_open(amqp_url, unique_name):
    """Left alone for over two heartbeat intervals, the connection stays the same and works."""
    if RABBITMQCTL is None:
        require_or_skip("rabbitmqctl is not on PATH")
    name = f"logbus-{unique_name}"
    with AmqpTransport(amqp_url, heartbeat=2, connection_name=name) as idle:
        before = broker_connection(name)
        assert before.heartbeat == 2
        threading.Event().wait(7)  # the user does nothing; RabbitMQ drops silent peers in ~4 s
        assert idle.connected
        assert broker_connection(name).pid == before.pid
        queue = idle.declare_queue("", exclusive=True).name
        idle.publish(Message(b"still here", Properties(), "", queue))
        assert idle.get(queue) is not None
