"""The contract suite runs once per transport; every test gets fresh, unique entity names."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from logbus.errors import LogbusError
from logbus.transports import Transport, connect


def _memory(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    url = f"memory://contract-{secrets.token_hex(4)}"
    return lambda: connect(url)


def _amqp(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    url = request.getfixturevalue("amqp_url")
    return lambda: connect(url)


def _amqp_pika_inbound(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    """The pika transport with its fast inbound path off: deliveries through pika's own."""
    request.getfixturevalue("monkeypatch").setenv("LOGBUS_AMQP_FAST_INBOUND", "0")
    return _amqp(request)


def _aio(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    # aio-pika is logbus's async engine; the suite reaches it through a test-only sync face.
    from tests.aio_blocking import BlockingAioTransport

    url = request.getfixturevalue("amqp_url")
    return lambda: BlockingAioTransport(url)


def _local(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    url = request.getfixturevalue("local_broker_url")
    return lambda: connect(url)


#: One broker process for the whole run (entity names are unique per test anyway).
_PROCESS_URL = f"process://contract-{secrets.token_hex(4)}"


def _process(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    return lambda: connect(_PROCESS_URL)


@pytest.fixture(scope="session")
def local_broker_url() -> Iterator[str]:
    """A BrokerServer on a socket in a private temporary directory, for local:// tests."""
    from logbus.broker import Broker
    from logbus.broker.server import BrokerServer, listen

    directory = tempfile.mkdtemp(prefix="logbus-ct-")  # short: AF_UNIX paths are limited
    path = os.path.join(directory, "broker.sock")
    listener, key = listen(path)
    broker = Broker("contract-local")
    with BrokerServer(broker, listener, authkey=key):
        yield f"local://{path}"
    broker.close()
    shutil.rmtree(directory, ignore_errors=True)


#: transport name -> how to open connections to a broker for one test. RabbitMQ is
#: the reference: where memory:// differs from amqp/aio, memory:// is wrong.
TRANSPORTS: dict[str, Callable[[pytest.FixtureRequest], Callable[[], Transport]]] = {
    "memory": _memory,
    "amqp": _amqp,  # deliveries read by logbus's fast inbound path (the default)
    "amqp-pika-inbound": _amqp_pika_inbound,
    "aio": _aio,
    "local": _local,
    "process": _process,
}


@pytest.fixture(params=list(TRANSPORTS))
def connector(request: pytest.FixtureRequest) -> Callable[[], Transport]:
    """Opens a new connection to this test's broker, one per transport under contract."""
    return TRANSPORTS[request.param](request)


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Unique entity names for this test: names('q') -> 'ct-<test>-<hex>-q'."""
    stem = f"ct-{request.node.originalname}-{secrets.token_hex(3)}"
    return lambda suffix: f"{stem}-{suffix}"


@pytest.fixture
def open_transport(connector: Callable[[], Transport]) -> Iterator[Callable[[], Transport]]:
    """Open connections to the test's broker; all are closed at the end."""
    opened: list[Transport] = []

    def factory() -> Transport:
        transport = connector()
        opened.append(transport)
        return transport

    yield factory
    for transport in reversed(opened):
        transport.close()


@pytest.fixture
def transport(open_transport: Callable[[], Transport]) -> Transport:
    """One open connection to the test's broker."""
    return open_transport()


@pytest.fixture
def make(
    open_transport: Callable[[], Transport], names: Callable[[str], str]
) -> Iterator[Entities]:
    """Declare uniquely named exchanges and queues that are deleted after the test."""
    entities = Entities(open_transport(), names)
    yield entities
    entities.cleanup(open_transport())


class Entities:
    """Declares test entities under unique names and remembers them for cleanup."""

    def __init__(self, transport: Transport, names: Callable[[str], str]) -> None:
        self.transport = transport
        self.names = names
        self.exchanges: list[str] = []
        self.queues: list[str] = []

    def exchange(self, suffix: str, type: str, **kwargs: object) -> str:
        """Declare an exchange named after ``suffix``; returns its full name."""
        name = self.names(suffix)
        self.transport.declare_exchange(name, type, **kwargs)  # type: ignore[arg-type]
        self.exchanges.append(name)
        return name

    def queue(self, suffix: str, **kwargs: object) -> str:
        """Declare a queue named after ``suffix``; returns its full name."""
        name = self.names(suffix)
        self.transport.declare_queue(name, **kwargs)  # type: ignore[arg-type]
        self.queues.append(name)
        return name

    def cleanup(self, transport: Transport) -> None:
        """Delete what was declared, queues first, in reverse order."""
        for queue in reversed(self.queues):
            with contextlib.suppress(LogbusError):
                transport.delete_queue(queue)
        for exchange in reversed(self.exchanges):
            with contextlib.suppress(LogbusError):
                transport.delete_exchange(exchange)
