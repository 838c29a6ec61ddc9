"""The broker served over a Unix socket: local://, process://, and what happens when a side dies.

These listen on sockets and start broker processes, so they are integration tests; what
is refused before any socket is opened is in ``tests/unit/test_local_broker.py``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Client
from typing import Any

import pytest

from logbus.broker import Broker
from logbus.broker.server import BrokerServer, listen, serve
from logbus.errors import (
    BrokerUnavailable,
    ConfigError,
    ConnectionLost,
    DecodeError,
    NotFound,
    TransportClosed,
    Unroutable,
)
from logbus.message import Message
from logbus.transports import connect
from logbus.transports.inprocess import link as _local_link
from logbus.transports.inprocess.local import LocalTransport
from logbus.transports.inprocess.process import env_var, stop_broker

SPAWN = multiprocessing.get_context("spawn")
DEADLINE = 20.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Wait for ``condition`` on a deadline, failing with ``what`` if it never holds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.01)


def put(transport: LocalTransport, queue: str, *bodies: bytes) -> None:
    """Publish bodies straight to a queue through the default exchange."""
    transport.publish_many(Message(body, exchange="", routing_key=queue) for body in bodies)


@pytest.fixture
def sock(directory: str) -> str:
    """Where this test's broker socket goes."""
    return os.path.join(directory, "broker.sock")


@pytest.fixture
def server(sock: str) -> Iterator[BrokerServer]:
    """A BrokerServer in this process, serving a fresh broker on ``sock``."""
    listener, key = listen(sock)
    with BrokerServer(Broker("test"), listener, authkey=key) as running:
        yield running


@pytest.fixture
def url(server: BrokerServer, sock: str) -> str:
    """The local:// URL of the in-process server."""
    return f"local://{sock}"


@pytest.fixture
def broker_process(sock: str) -> Iterator[Any]:
    """``serve(sock)`` in a spawned process, ready to be killed by the test."""
    process = SPAWN.Process(target=serve, args=(sock,), daemon=True)
    process.start()
    wait_until(lambda: os.path.exists(sock) or not process.is_alive(), "the broker's socket")
    assert process.is_alive(), f"the broker process exited with {process.exitcode}"
    yield process
    process.kill()
    process.join(5)


@pytest.fixture
def process_name() -> Iterator[str]:
    """A fresh process:// broker name; its broker process is stopped after the test."""
    name = f"t-{os.urandom(4).hex()}"
    yield name
    stop_broker(name)


def consume_without_acking(url: str, queue: str, control: str, count: int) -> None:
    """A spawned client: take ``count`` deliveries, never ack, say so, then wait to be killed."""
    transport = connect(url)
    consumer = transport.consume(queue, prefetch=count)
    for _ in range(count):
        assert consumer.get(timeout=DEADLINE) is not None
    transport.publish(Message(b"holding", exchange="", routing_key=control))
    threading.Event().wait()


def publish_from_child(url: str, queue: str) -> None:
    """A spawned or forked client: publish one message naming its process id."""
    with connect(url) as transport:
        transport.publish(Message(str(os.getpid()).encode(), exchange="", routing_key=queue))


# -- files and keys ---------------------------------------------------------------------


def test_socket_and_key_file_are_owner_only(sock):
    """listen() leaves the socket and its new key file at mode 0600."""
    listener, _key = listen(sock)
    try:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(sock + ".key").st_mode) == 0o600
        assert os.path.getsize(sock + ".key") == 32
    finally:
        listener.close()


def test_a_stale_socket_is_replaced(sock):
    """A socket file nobody answers on is removed and listened on again."""
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(sock)  # bound, never listening, then closed: a stale file remains
    listener, _key = listen(sock)
    listener.close()


def test_a_socket_somebody_answers_on_is_left_alone(server, sock):
    """listen() refuses a path where a broker already answers, and it keeps answering."""
    with pytest.raises(ConfigError, match="already answers"):
        listen(sock)
    with connect(f"local://{sock}") as transport:
        assert transport.declare_queue("q").name == "q"


# -- connecting -------------------------------------------------------------------------


def test_a_wrong_key_is_refused_as_broker_unavailable(url, directory):
    """A client holding another key is refused with BrokerUnavailable."""
    wrong = os.path.join(directory, "wrong.key")
    with open(wrong, "wb") as out:
        out.write(os.urandom(32))
    with pytest.raises(BrokerUnavailable, match="refused the key"):
        LocalTransport(url, authkey_file=wrong)


def test_the_server_keeps_serving_after_refusing_a_key(url, directory):
    """A refused client does not disturb the next one."""
    wrong = os.path.join(directory, "wrong.key")
    with open(wrong, "wb") as out:
        out.write(os.urandom(32))
    with pytest.raises(BrokerUnavailable):
        LocalTransport(url, authkey_file=wrong)
    with connect(url) as transport:
        assert transport.declare_queue("q").message_count == 0


def test_garbage_from_a_client_drops_only_that_client(url, sock, server):
    """Undecodable bytes end that connection; the server still serves others."""
    with open(sock + ".key", "rb") as source:
        raw = Client(sock, family="AF_UNIX", authkey=source.read())
    raw.send_bytes(b"\x00\x00\x00\x05\x00\x00\x00\x00{nope")
    with pytest.raises(EOFError):
        raw.recv_bytes()
    raw.close()
    with connect(url) as transport:
        assert transport.declare_queue("q").name == "q"


def test_an_unknown_operation_is_answered_with_an_error(url):
    """A well-formed frame with an unknown op gets an error reply, not a crash."""
    with connect(url) as transport:
        assert isinstance(transport, LocalTransport)
        with pytest.raises(DecodeError, match="unknown operation 'teleport'"):
            transport._call("teleport", {})
        assert transport.declare_queue("q").name == "q"


# -- threads ---------------------------------------------------------------------------


def test_threads_can_share_one_transport(url):
    """Eight threads publishing on one transport get every message confirmed, once."""
    with connect(url) as transport:
        transport.declare_queue("q")

        def publish(n: int) -> None:
            for i in range(200):
                transport.publish(Message(f"{n}-{i}".encode(), exchange="", routing_key="q"))

        threads = [threading.Thread(target=publish, args=(n,), daemon=True) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE)
        assert not any(thread.is_alive() for thread in threads), "a publisher hung"
        assert transport.declare_queue("q", passive=True).message_count == 1600


def test_closing_the_transport_ends_a_blocked_consumer(url):
    """A consumer blocked in get() returns None once its transport is closed."""
    transport = connect(url)
    transport.declare_queue("q")
    consumer = transport.consume("q")
    results: list[object] = []
    reader = threading.Thread(target=lambda: results.append(consumer.get()), daemon=True)
    reader.start()
    transport.close()
    reader.join(DEADLINE)
    assert results == [None]


def test_a_closed_transport_refuses_calls(url):
    """Using a transport after close() raises TransportClosed."""
    transport = connect(url)
    transport.close()
    with pytest.raises(TransportClosed):
        transport.declare_queue("q")


# -- batches: publishes many to a frame, acks coalesced ----------------------------------


def test_a_refused_publish_in_a_batch_raises_its_error_and_the_others_are_routed(url):
    """One publish of a batch to a missing exchange raises NotFound; the rest still arrive."""
    with connect(url) as transport:
        transport.declare_queue("q")
        batch = [
            Message(b"1", exchange="", routing_key="q"),
            Message(b"2", exchange="no-such-exchange", routing_key="q"),
            Message(b"3", exchange="", routing_key="q"),
        ]
        with pytest.raises(NotFound, match="no-such-exchange"):
            transport.publish_many(batch)
        assert transport.declare_queue("q", passive=True).message_count == 2


def test_unroutable_publishes_in_a_batch_are_counted(url):
    """Mandatory publishes that match no queue raise Unroutable counting each of them."""
    with connect(url) as transport:
        transport.declare_queue("q")
        batch = [Message(b"1", exchange="", routing_key="q")]
        batch += [Message(b"x", exchange="", routing_key="nowhere") for _ in range(2)]
        with pytest.raises(Unroutable) as raised:
            transport.publish_many(batch)
        assert raised.value.unconfirmed == 2
        assert transport.declare_queue("q", passive=True).message_count == 1


def test_an_ack_goes_out_in_time_though_the_consumer_never_waits_again(url):
    """A lone ack, below the batch size and with nobody waiting, still frees its prefetch slot."""
    with connect(url) as transport:
        transport.declare_queue("q")
        put(transport, "q", *[str(i).encode() for i in range(9)])
        consumer = transport.consume("q", prefetch=8)  # acks go out two at a time
        held = [consumer.get(timeout=DEADLINE) for _ in range(8)]
        assert all(held)
        held[0].ack()  # nothing else happens on this connection: the ack goes out by itself
        inbox = consumer._inbox
        wait_until(lambda: inbox.qsize() == 1, "the ninth delivery, which needs the ack")


def test_an_ack_goes_out_at_once_while_a_consumer_waits(url, monkeypatch):
    """With a consumer blocked in get(), an ack made elsewhere is sent at once, not later."""
    monkeypatch.setattr(_local_link, "ACK_DELAY", 3600.0)  # only the waiting consumer can help
    with connect(url) as transport:
        transport.declare_queue("q")
        put(transport, "q", *[str(i).encode() for i in range(9)])
        consumer = transport.consume("q", prefetch=8)
        held = [consumer.get(timeout=DEADLINE) for _ in range(8)]
        got: list[object] = []
        waiter = threading.Thread(target=lambda: got.append(consumer.get(timeout=DEADLINE)))
        waiter.start()
        wait_until(lambda: transport._link._blocked == 1, "the consumer to wait")
        held[0].ack()
        waiter.join(DEADLINE)
    assert got and got[0] is not None, "the ack was held back while a consumer waited"


def test_acks_made_before_closing_are_applied_not_requeued(url, monkeypatch):
    """Acks still waiting to share a frame go out before the close: nothing comes back."""
    monkeypatch.setattr(_local_link, "ACK_DELAY", 3600.0)
    with connect(url) as other:
        other.declare_queue("q")
        put(other, "q", b"1", b"2", b"3")
        transport = connect(url)
        consumer = transport.consume("q", prefetch=100)
        held = [consumer.get(timeout=DEADLINE) for _ in range(3)]
        for delivery in held:
            assert delivery is not None
            delivery.ack()
        transport.close()
        assert other.declare_queue("q", passive=True).message_count == 0


# -- a client dies -----------------------------------------------------------------------


def test_a_killed_client_s_unacked_records_are_redelivered_to_another(url):
    """SIGKILL a process holding 4 unacked of 10 records: another client gets all 10, 4 flagged."""
    with connect(url) as transport:
        transport.declare_queue("work")
        transport.declare_queue("control")
        put(transport, "work", *[str(i).encode() for i in range(10)])
        child = SPAWN.Process(target=consume_without_acking, args=(url, "work", "control", 4))
        child.start()
        try:
            control = transport.consume("control")
            assert control.get(timeout=DEADLINE) is not None, "the child never took its records"
            assert transport.declare_queue("work", passive=True).message_count == 6
        finally:
            child.kill()
            child.join(DEADLINE)
        consumer = transport.consume("work", prefetch=100)
        got = [consumer.get(timeout=DEADLINE) for _ in range(10)]
    assert all(d is not None for d in got)
    assert sorted(d.body for d in got) == sorted(str(i).encode() for i in range(10))
    assert sum(d.redelivered for d in got) == 4


# -- the broker dies -----------------------------------------------------------------------


def test_a_blocked_consumer_raises_connection_lost_when_the_broker_dies(broker_process, sock):
    """get() waiting with no timeout raises ConnectionLost once the broker is killed."""
    transport = connect(f"local://{sock}")
    transport.declare_queue("q")
    consumer = transport.consume("q")
    outcome: list[BaseException | object] = []

    def wait() -> None:
        try:
            outcome.append(consumer.get())
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    broker_process.kill()
    waiter.join(DEADLINE)
    assert not waiter.is_alive(), "the consumer hung after the broker died"
    assert isinstance(outcome[0], ConnectionLost)


def test_publishing_after_the_broker_died_raises_connection_lost(broker_process, sock):
    """A publish on a transport whose broker is gone raises ConnectionLost, not a hang."""
    transport = connect(f"local://{sock}")
    transport.declare_queue("q")
    broker_process.kill()
    broker_process.join(DEADLINE)
    outcome: list[BaseException] = []

    def publish() -> None:
        try:
            transport.publish(Message(b"x", exchange="", routing_key="q"))
        except BaseException as exc:
            outcome.append(exc)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    publisher.join(DEADLINE)
    assert not publisher.is_alive(), "the publish hung after the broker died"
    assert isinstance(outcome[0], ConnectionLost)


def test_a_call_in_flight_raises_connection_lost_when_the_broker_dies(broker_process, sock):
    """A call the broker never answered fails with ConnectionLost when the broker dies."""
    transport = connect(f"local://{sock}")
    os.kill(broker_process.pid, signal.SIGSTOP)  # it will not answer
    outcome: list[BaseException | object] = []

    def declare() -> None:
        try:
            outcome.append(transport.declare_queue("q"))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=declare, daemon=True)
    caller.start()
    wait_until(lambda: bool(transport._link._pending), "the request to be in flight")
    broker_process.kill()
    caller.join(DEADLINE)
    assert not caller.is_alive(), "the call hung after the broker died"
    assert isinstance(outcome[0], ConnectionLost)


def test_sigterm_stops_the_broker_and_removes_its_socket(broker_process, sock):
    """serve() exits cleanly on SIGTERM and leaves no socket file behind."""
    broker_process.terminate()
    broker_process.join(DEADLINE)
    assert broker_process.exitcode == 0
    assert not os.path.exists(sock)


# -- process:// ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_children_opening_process_url_share_the_parent_s_broker(method, process_name):
    """A spawned or forked child opening process://name reaches its parent's broker."""
    url = f"process://{process_name}"
    with connect(url) as transport:
        transport.declare_queue("q")
        child = multiprocessing.get_context(method).Process(
            target=publish_from_child, args=(url, "q")
        )
        child.start()
        child.join(DEADLINE)
        assert child.exitcode == 0
        delivery = transport.get("q")
    assert delivery is not None
    assert delivery.body == str(child.pid).encode()


def test_the_process_broker_s_socket_is_exported_in_the_environment(process_name):
    """process://name's socket path is in LOGBUS_PROCESS_BROKER_<NAME> for children."""
    with connect(f"process://{process_name}") as transport:
        assert isinstance(transport, LocalTransport)
        assert os.environ[env_var(process_name)] == transport.path


def test_stopping_the_process_broker_removes_its_directory_and_variable(process_name):
    """stop_broker() ends the broker process, its private directory and its variable."""
    with connect(f"process://{process_name}") as transport:
        path = transport.path
    assert stop_broker(process_name) is True
    assert not os.path.exists(os.path.dirname(path))
    assert env_var(process_name) not in os.environ


def test_a_transport_inherited_through_fork_refuses_use_in_the_child(url):
    """A forked child using its parent's connection gets TransportClosed, not a mixed stream."""
    transport = connect(url)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        try:
            transport.declare_queue("q")
        except TransportClosed:
            os._exit(0)
        except BaseException:
            os._exit(2)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert transport.declare_queue("q").name == "q"
    transport.close()


def test_the_process_broker_stops_when_its_starter_exits(directory):
    """The broker process and its private directory are gone once the parent exits."""
    script = (
        "from logbus.transports import connect\n"
        "t = connect('process://bye')\n"
        "print(t.path, flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip()
    assert path.endswith("broker.sock")
    assert not os.path.exists(os.path.dirname(path))


def test_a_broker_that_never_answers_the_handshake_times_out(sock):
    """A socket that takes the connection but never speaks ends in BrokerUnavailable,
    within the connect timeout, instead of hanging in multiprocessing's handshake."""
    from logbus.settings import Settings

    with open(sock + ".key", "wb") as out:
        out.write(b"k" * 32)
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.bind(sock)
    silent.listen(1)  # the connection waits in the backlog: the kernel takes it, nobody talks
    try:
        with pytest.raises(BrokerUnavailable, match="did not answer the connection handshake"):
            connect(f"local://{sock}", settings=Settings(connect_timeout=0.2))
    finally:
        silent.close()
