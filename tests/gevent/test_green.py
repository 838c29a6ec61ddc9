"""gevent:// beyond the contract: greenlets sharing work, cooperative waits, the optional extra."""

from __future__ import annotations

import secrets

import gevent
import gevent.event
import pytest

from logbus.errors import ConfigError, NotFound
from logbus.message import Message
from logbus.transports import connect
from logbus.transports.inprocess.green import GreenTransport


@pytest.fixture
def green():
    """A transport on a fresh gevent:// broker of this test's own."""
    with GreenTransport(f"gevent://green-{secrets.token_hex(4)}") as transport:
        yield transport


def put(transport, queue: str, count: int) -> None:
    """Publish bodies b'0', b'1', ... straight to ``queue``."""
    transport.publish_many(Message(str(i).encode(), routing_key=queue) for i in range(count))


def test_connect_opens_a_green_transport_for_gevent_urls():
    """connect('gevent://name') gives a GreenTransport; connections to one name share a broker."""
    url = f"gevent://connect-{secrets.token_hex(4)}"
    with connect(url) as first, connect(url) as second:
        assert isinstance(first, GreenTransport)
        first.declare_queue("shared")
        assert second.declare_queue("shared", passive=True).name == "shared"


def test_a_url_of_another_scheme_is_refused():
    """GreenTransport('memory://x') is a configuration error, not a silent memory broker."""
    with pytest.raises(ConfigError, match="not a gevent:// URL"):
        GreenTransport("memory://x")


def test_gevent_brokers_are_apart_from_memory_brokers():
    """gevent://x and memory://x are two brokers: a queue on one is unknown to the other."""
    name = f"apart-{secrets.token_hex(4)}"
    with connect(f"gevent://{name}") as green, connect(f"memory://{name}") as memory:
        green.declare_queue("only-green")
        with pytest.raises(NotFound):
            memory.declare_queue("only-green", passive=True)


def test_fair_dispatch_shares_work_evenly_among_greenlet_consumers(green):
    """Five greenlet consumers (prefetch 1) whose handlers wait cooperatively take a fifth each."""
    queue = green.declare_queue("", exclusive=True).name
    consumers = [green.consume(queue, prefetch=1) for _ in range(5)]
    put(green, queue, 50)
    got: dict[str, list[int]] = {c.tag: [] for c in consumers}
    busy = peak = 0

    def handle(consumer):
        nonlocal busy, peak
        for delivery in consumer:
            busy += 1
            peak = max(peak, busy)
            gevent.sleep(0.005)  # the handler's I/O: the other greenlets run meanwhile
            busy -= 1
            got[consumer.tag].append(int(delivery.body))
            delivery.ack()
            if sum(map(len, got.values())) == 50:
                for each in consumers:
                    each.cancel()

    workers = [gevent.spawn(handle, c) for c in consumers]
    gevent.joinall(workers, timeout=10, raise_error=True)
    assert all(w.dead for w in workers)
    assert sorted(n for bodies in got.values() for n in bodies) == list(range(50))
    assert [len(bodies) for bodies in got.values()] == [10] * 5
    assert peak == 5


def test_a_greenlet_waiting_in_its_handler_does_not_hoard_with_prefetch_one(green):
    """While one handler waits on an event, the other greenlet consumer gets every message."""
    queue = green.declare_queue("", exclusive=True).name
    slow, fast = green.consume(queue, prefetch=1), green.consume(queue, prefetch=1)
    put(green, queue, 20)
    release = gevent.event.Event()
    taken: dict[str, list[bytes]] = {"slow": [], "fast": []}

    def run_slow():
        delivery = slow.get(timeout=5)
        taken["slow"].append(delivery.body)
        release.wait(timeout=5)
        delivery.ack()

    def run_fast():
        while len(taken["fast"]) < 19:
            delivery = fast.get(timeout=5)
            assert delivery is not None, f"fast got only {taken['fast']}"
            taken["fast"].append(delivery.body)
            gevent.sleep(0)
            delivery.ack()
        release.set()

    gevent.joinall([gevent.spawn(run_slow), gevent.spawn(run_fast)], timeout=10, raise_error=True)
    assert taken["slow"] == [b"0"]
    assert taken["fast"] == [str(i).encode() for i in range(1, 20)]


def test_get_lets_a_publisher_greenlet_run_while_it_waits(green):
    """A consumer blocked in get() yields, so a publisher greenlet runs and its message arrives."""
    queue = green.declare_queue("", exclusive=True).name
    consumer = green.consume(queue)
    publisher = gevent.spawn(green.publish, Message(b"hello", routing_key=queue))
    assert not publisher.dead  # it can only run once this greenlet yields
    delivery = consumer.get(timeout=5)
    assert delivery is not None
    assert delivery.body == b"hello"
    assert publisher.successful()


def test_get_keeps_the_hub_running_until_its_timeout(green):
    """Other greenlets keep running while get() waits out a timeout with nothing to deliver."""
    queue = green.declare_queue("", exclusive=True).name
    consumer = green.consume(queue)
    ticks = 0

    def tick():
        nonlocal ticks
        while True:
            ticks += 1
            gevent.sleep(0.01)

    ticker = gevent.spawn(tick)
    assert consumer.get(timeout=0.2) is None
    ticker.kill()
    assert ticks > 1


def test_cancel_ends_every_greenlet_iterating_one_consumer(green):
    """Greenlets sharing one consumer all finish their iteration once it is cancelled."""
    queue = green.declare_queue("", exclusive=True).name
    consumer = green.consume(queue, prefetch=10)
    put(green, queue, 6)
    seen: list[bytes] = []
    all_seen = gevent.event.Event()

    def work():
        for delivery in consumer:
            seen.append(delivery.body)
            delivery.ack()
            if len(seen) == 6:
                all_seen.set()

    workers = [gevent.spawn(work) for _ in range(3)]
    assert all_seen.wait(timeout=5)
    consumer.cancel()
    gevent.joinall(workers, timeout=5, raise_error=True)
    assert all(w.dead for w in workers)
    assert sorted(seen) == [str(i).encode() for i in range(6)]


def test_without_gevent_the_error_names_the_extra_to_install(run_python):
    """With gevent missing, importing green.py and connect('gevent://') raise ConfigError."""
    result = run_python(
        """
        import sys
        sys.modules["gevent"] = None  # what an interpreter without gevent sees
        from logbus.errors import ConfigError
        from logbus.transports import connect
        try:
            import logbus.transports.inprocess.green
        except ConfigError as exc:
            print(exc)
        try:
            connect("gevent://")
        except ConfigError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    line = "gevent:// needs gevent: pip install 'logbus[gevent]'"
    assert result.stdout.splitlines() == [line, line]


def test_logbus_and_memory_urls_never_import_gevent(run_python):
    """Importing logbus and using memory:// leaves gevent unimported."""
    result = run_python(
        """
        import sys
        import logbus
        from logbus.transports import connect
        with connect("memory://") as transport:
            transport.declare_queue("q")
        print("gevent" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
