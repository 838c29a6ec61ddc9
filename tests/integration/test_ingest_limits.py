"""The gateway's promises at its edges, with real sockets and a broker stand-in that the test
holds back: RELP answers only after the confirm, UDP counts its drops, TCP stops reading at
the in-flight bound, connections per peer and idle connections are limited, SIGTERM-like
stops drain."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from time import monotonic
from typing import Any

import pytest

from logbus.errors import NotConfirmed
from logbus.ingest import relp
from logbus.ingest.gateway import IngestPlan, Listen, Running, run
from logbus.record import LogRecord
from tests.ingest_support import stream_in_batches

pytestmark = pytest.mark.timeout(60)


class HeldLink:
    """A broker that confirms only while ``open`` is set (else it waits, then refuses)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.taken: list[str] = []
        self.connected = True

    def emit_many(self, records: Iterable[LogRecord]) -> int:
        batch = list(records)
        if not self.open.wait(0.5):
            raise NotConfirmed("held by the test", unconfirmed=len(batch))
        self.taken += [r.message for r in batch]
        return len(batch)

    def emit_stream(
        self,
        take: Callable[[int], tuple[list[LogRecord], bool]],
        progress: Callable[[int], None],
    ) -> int:
        return stream_in_batches(self.emit_many, take, progress)

    def close(self) -> None:
        pass


class Gateway:
    """``run`` on a thread, with the listeners given; stopped (and its status checked) after."""

    def __init__(self, link: HeldLink, *listeners: str, **plan: Any) -> None:
        self.link = link
        self.running: Running | None = None
        self.up = threading.Event()
        self.status: int | None = None
        spec = IngestPlan(
            listeners=tuple(Listen.parse(kind, "127.0.0.1:0") for kind in listeners), **plan
        )
        self.thread = threading.Thread(target=self._run, args=(spec,))
        self.thread.start()
        assert self.up.wait(20), "the gateway did not start"

    def _run(self, plan: IngestPlan) -> None:
        self.status = run(plan, ready=self._ready, link=lambda: self.link)

    def _ready(self, running: Running) -> None:
        self.running = running
        self.up.set()

    def port(self, kind: str) -> int:
        assert self.running is not None
        [address] = [a for a in self.running.addresses if a.startswith(kind + " ")]
        return int(address.rpartition(":")[2])

    def stats(self, kind: str) -> Any:
        assert self.running is not None
        [stats] = [s for s in self.running.listeners if s.name.startswith(kind + ":")]
        return stats

    def stop(self) -> int | None:
        assert self.running is not None
        self.running.stop()
        self.thread.join(30)
        return self.status


@pytest.fixture
def link() -> HeldLink:
    return HeldLink()


@pytest.fixture
def gateways(link: HeldLink) -> Iterator[list[Gateway]]:
    made: list[Gateway] = []
    yield made
    link.open.set()
    for gateway in made:
        assert gateway.stop() == 0


def _until(condition: Any, timeout: float = 20.0) -> None:
    deadline = monotonic() + timeout
    while not condition():
        assert monotonic() < deadline, "the condition never held"
        threading.Event().wait(0.01)


def _relp_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(relp.RelpFrame(1, "open", b"relp_version=0\ncommands=syslog").encode())
    decoder = relp.RelpDecoder()
    frames: list[relp.RelpFrame] = []
    while not frames:
        frames += decoder.feed(sock.recv(4096))
    assert frames[0].txnr == 1 and frames[0].data.startswith(b"200 OK")
    return sock


def test_relp_answers_a_frame_only_after_the_broker_confirmed_it(link, gateways) -> None:
    """While the broker holds the record back, no rsp; once it confirms, rsp 200 for that txnr."""
    gateways.append(gateway := Gateway(link, "relp"))
    sock = _relp_open(gateway.port("relp"))
    sock.sendall(relp.RelpFrame(2, "syslog", b"<13>Dec  7 00:00:00 web1 app: held").encode())
    sock.settimeout(1.5)
    with pytest.raises(TimeoutError):
        sock.recv(4096)  # no answer may come before the confirm
    link.open.set()
    sock.settimeout(20)
    decoder = relp.RelpDecoder()
    frames: list[relp.RelpFrame] = []
    while not frames:
        frames += decoder.feed(sock.recv(4096))
    assert (frames[0].txnr, frames[0].command, frames[0].data) == (2, "rsp", b"200 OK")
    assert link.taken == ["held"]
    sock.close()


def test_relp_close_is_answered_after_the_frames_before_it(link, gateways) -> None:
    """A close waits for every earlier frame's answer, then is answered itself."""
    link.open.set()
    gateways.append(gateway := Gateway(link, "relp"))
    sock = _relp_open(gateway.port("relp"))
    frames = [relp.RelpFrame(n, "syslog", b"<13>line %d" % n) for n in range(2, 7)]
    sock.sendall(b"".join(f.encode() for f in frames) + relp.RelpFrame(7, "close").encode())
    decoder = relp.RelpDecoder()
    answers: list[relp.RelpFrame] = []
    while data := sock.recv(4096):
        answers += decoder.feed(data)
    assert [a.txnr for a in answers] == [2, 3, 4, 5, 6, 7]
    assert len(link.taken) == 5


def test_udp_counts_the_datagrams_it_had_no_room_for(link, gateways) -> None:
    """At the in-flight bound, datagrams are dropped and counted; the rest are confirmed."""
    gateways.append(gateway := Gateway(link, "udp", max_in_flight=5))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(40):
            sock.sendto(b"<14>datagram %d" % n, ("127.0.0.1", gateway.port("udp")))
    stats = gateway.stats("udp")
    _until(lambda: stats.received == 40)
    link.open.set()
    _until(lambda: stats.in_flight == 0)
    assert stats.dropped > 0
    assert stats.confirmed + stats.dropped == 40
    assert len(link.taken) == stats.confirmed


def test_tcp_stops_reading_at_the_in_flight_bound(link, gateways) -> None:
    """Never more in flight than the bound plus one read (asyncio reads up to 256 KiB), however
    much the sender has written; every line still arrives, in order."""
    total = 60_000
    gateways.append(gateway := Gateway(link, "tcp", max_in_flight=100))
    stats = gateway.stats("tcp")
    lines = b"".join(b"<14>line %06d\n" % n for n in range(total))
    sock = socket.create_connection(("127.0.0.1", gateway.port("tcp")))
    sender = threading.Thread(target=sock.sendall, args=(lines,))
    sender.start()
    _until(lambda: stats.pauses >= 1)
    assert not link.taken  # the pause came while nothing was confirmed
    link.open.set()
    sender.join(30)
    sock.close()
    _until(lambda: stats.confirmed == total)
    assert link.taken == [f"line {n:06d}" for n in range(total)]
    assert stats.peak_in_flight <= 100 + 256 * 1024 // len(b"<14>line 000000\n") + 1


def test_a_peer_over_its_connection_limit_is_refused(link, gateways) -> None:
    """With max_per_peer 1, a second connection from the same address is closed at once."""
    link.open.set()
    gateways.append(gateway := Gateway(link, "tcp", max_per_peer=1))
    first = socket.create_connection(("127.0.0.1", gateway.port("tcp")))
    _until(lambda: gateway.stats("tcp").connections == 1)
    second = socket.create_connection(("127.0.0.1", gateway.port("tcp")))
    second.settimeout(20)
    assert second.recv(10) == b""
    assert gateway.stats("tcp").refused_connections == 1
    first.close()
    second.close()


def test_an_idle_connection_is_closed(link, gateways) -> None:
    """A connection silent for idle_timeout is closed by the gateway."""
    link.open.set()
    gateways.append(gateway := Gateway(link, "tcp", idle_timeout=0.3))
    sock = socket.create_connection(("127.0.0.1", gateway.port("tcp")))
    sock.settimeout(20)
    assert sock.recv(10) == b""
    sock.close()


def test_a_stop_with_records_never_confirmed_exits_75(link) -> None:
    """The drain deadline passes with records unconfirmed: exit status 75 (try again)."""
    gateway = Gateway(link, "udp", drain_timeout=0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"<14>never confirmed", ("127.0.0.1", gateway.port("udp")))
    _until(lambda: gateway.stats("udp").received == 1)
    assert gateway.stop() == 75


def test_the_gateway_publishes_with_a_deep_confirm_window(amqp_url: str, unique_name: str) -> None:
    """The gateway's own transport keeps up to DEEP_BUDGET seconds of the broker's pace in
    flight, under PUBLISH_WINDOW, which its in-flight bound leaves room above; a plain
    transport keeps BUDGET, and a budget that is not a positive number is refused."""
    from logbus.errors import ConfigError
    from logbus.ingest.gateway import PUBLISH_WINDOW, _BrokerLink
    from logbus.settings import Settings
    from logbus.topology import EmitTarget, Exchange, Topology
    from logbus.transports.amqp import AmqpTransport
    from logbus.transports.amqp.window import BUDGET, DEEP_BUDGET

    plan = IngestPlan(
        listeners=(Listen("tcp", "127.0.0.1", 0),),
        topology=Topology(
            exchanges=(Exchange(name=unique_name, type="fanout", durable=False),),
            emit=(EmitTarget(exchange=unique_name),),
        ),
    )
    link = _BrokerLink(plan, Settings(url=amqp_url))
    try:
        window = link._transport._core.publisher.window  # type: ignore[attr-defined]
        assert (window.budget, window.ceiling) == (DEEP_BUDGET, PUBLISH_WINDOW)
        assert plan.max_in_flight >= 2 * PUBLISH_WINDOW
    finally:
        link.close()
        with AmqpTransport(amqp_url) as admin:
            admin.delete_exchange(unique_name)
    with AmqpTransport(amqp_url) as plain:
        assert plain._core.publisher.window.budget == BUDGET
    with pytest.raises(ConfigError, match="publish_budget must be a positive number"):
        AmqpTransport(amqp_url, publish_budget=0)
