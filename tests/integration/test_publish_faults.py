"""Confirmed publishing under faults: a flapping connection, a broker that blocks publishers.

A connection reset through :class:`~tests.proxy.Proxy`
changes nothing on the broker, so the flap tests run on the shared broker; the
memory alarm is the private node's (``faults`` marker). Durations here are
bounds on a promise ("gives up within its timeout and a second"), not figures.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from time import monotonic
from urllib.parse import urlsplit

import pytest

from logbus.emitter import AsyncEmitter, Emitter
from logbus.errors import EX_TEMPFAIL, NotConfirmed
from logbus.settings import Settings
from logbus.topology import EmitTarget, Topology
from logbus.transports.amqp import AmqpTransport
from tests.private_broker import PrivateBroker
from tests.proxy import Proxy, with_address

RECORDS = 30_000  # enough for several resets at one a second
MOST_DUPLICATED = 0.10  # of the records, at one reset a second
TIMEOUT = 2.0  # seconds: --timeout / confirm_timeout under the memory alarm


# -- a connection reset once a second ----------------------------------------------------


class Flapping:
    """A proxy to the broker whose connections are reset every second while it runs."""

    def __init__(self, amqp_url: str) -> None:
        broker = urlsplit(amqp_url)
        self.proxy = Proxy((broker.hostname or "127.0.0.1", broker.port or 5672))
        self.proxy.start()
        self.url = with_address(amqp_url, "127.0.0.1", self.proxy.port)
        self.resets = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flap, daemon=True)

    def __enter__(self) -> Flapping:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.proxy.cut()

    def _flap(self) -> None:
        while not self._stop.wait(1.0):
            self.proxy.cut()
            self.proxy.start()
            self.resets += 1


@pytest.fixture
def work_queue(amqp_url: str, unique_name: str) -> Iterator[tuple[AmqpTransport, str]]:
    """A durable queue of this test's, and a direct connection to count and delete it."""
    with AmqpTransport(amqp_url, connection_name=f"logbus-{unique_name}-admin") as admin:
        admin.declare_queue(unique_name, durable=True)
        try:
            yield admin, unique_name
        finally:
            admin.delete_queue(unique_name)


def _duplicates(admin: AmqpTransport, queue: str) -> float:
    """The share of RECORDS the queue holds twice (every record was confirmed, so at
    least once), printed for the record."""
    depth = admin.declare_queue(queue, passive=True).message_count
    assert depth >= RECORDS, f"{RECORDS - depth} confirmed records are missing"
    ratio = (depth - RECORDS) / RECORDS
    print(f"duplicates at one reset a second: {depth - RECORDS} of {RECORDS} = {ratio:.1%}")
    return ratio


def test_emitter_on_a_flapping_connection_sends_few_duplicates(
    amqp_url: str, work_queue: tuple[AmqpTransport, str]
) -> None:
    """Emitter.emit_many through a connection reset every second re-sends at most 10 %."""
    admin, queue = work_queue
    with Flapping(amqp_url) as flapping:
        transport = AmqpTransport(flapping.url, reconnect_max_delay=0.5)
        try:
            emitter = Emitter(
                transport=transport,
                topology=Topology(),
                declare_topology=False,
                targets=[EmitTarget(exchange="", key=queue)],
            )
            sent = emitter.emit_many(("user.info", f"line {i}") for i in range(RECORDS))
        finally:
            transport.close()
    assert sent == RECORDS
    assert flapping.resets >= 3, f"only {flapping.resets} resets: the test proved nothing"
    assert _duplicates(admin, queue) <= MOST_DUPLICATED


def test_cli_emit_on_a_flapping_connection_sends_few_duplicates(
    amqp_url: str, work_queue: tuple[AmqpTransport, str]
) -> None:
    """`seq N | logbus emit user.info -` through a connection reset every second re-sends
    at most 10 %."""
    admin, queue = work_queue
    lines = "".join(f"{i}\n" for i in range(RECORDS)).encode()
    with Flapping(amqp_url) as flapping:
        command = [sys.executable, "-m", "logbus", "emit", "user.info", "-", "--queue", queue]
        done = subprocess.run(
            [*command, "--url", flapping.url],
            input=lines,
            capture_output=True,
            timeout=300,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()
    assert flapping.resets >= 3, f"only {flapping.resets} resets: the test proved nothing"
    assert _duplicates(admin, queue) <= MOST_DUPLICATED


# -- a broker that blocks publishers (memory alarm) ----------------------------------------


@pytest.fixture
def alarmed(healthy_private_broker: PrivateBroker) -> Iterator[PrivateBroker]:
    """The private node, its memory alarm raised while the test runs (cleared after)."""
    try:
        yield healthy_private_broker
    finally:
        healthy_private_broker.memory_alarm(False)


def _cli_emit(url: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logbus", "emit", "user.info", *args, "--url", url],
        input=None if stdin is None else stdin.decode(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.faults
@pytest.mark.parametrize(
    ("args", "stdin"),
    [(("-",), b"".join(b"%d\n" % i for i in range(10))), (("one", "record"), None)],
    ids=["stdin-batch", "one-record"],
)
def test_cli_emit_under_memory_alarm_gives_up_within_its_timeout(
    alarmed: PrivateBroker, args: tuple[str, ...], stdin: bytes | None
) -> None:
    """`logbus emit --timeout T` on a blocked broker exits 75 with one line, within T + 1 s
    of what the same command takes on a healthy broker (start-up and connecting)."""
    healthy_started = monotonic()
    healthy = _cli_emit(alarmed.url, *args, stdin=stdin)
    usual = monotonic() - healthy_started
    assert healthy.returncode == 0, healthy.stderr
    alarmed.memory_alarm(True)
    started = monotonic()
    done = _cli_emit(alarmed.url, *args, "--timeout", f"{TIMEOUT:g}", stdin=stdin)
    took = monotonic() - started
    assert done.returncode == EX_TEMPFAIL, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "blocked" in done.stderr
    assert took <= usual + TIMEOUT + 1.0, f"took {took:.1f}s (healthy: {usual:.1f}s)"


@pytest.mark.faults
def test_emitter_under_memory_alarm_gives_up_and_closes_within_its_timeout(
    alarmed: PrivateBroker,
) -> None:
    """Emitter.emit on a blocked broker raises NotConfirmed, and close() returns, within
    confirm_timeout + 1 s."""
    emitter = Emitter(settings=Settings(url=alarmed.url, confirm_timeout=TIMEOUT))
    try:
        _ = emitter.transport  # connected, topology declared, before the alarm
        alarmed.memory_alarm(True)
        started = monotonic()
        with pytest.raises(NotConfirmed, match="blocked"):
            emitter.emit("user.info", "held back")
    finally:
        emitter.close()
    took = monotonic() - started
    assert took <= TIMEOUT + 1.0, f"emit and close took {took:.1f}s"


@pytest.mark.faults
def test_async_emitter_under_memory_alarm_gives_up_and_closes_within_its_timeout(
    alarmed: PrivateBroker,
) -> None:
    """AsyncEmitter.emit on a blocked broker raises NotConfirmed, and aclose() returns,
    within confirm_timeout + 1 s."""

    async def run() -> float:
        emitter = AsyncEmitter(settings=Settings(url=alarmed.url, confirm_timeout=TIMEOUT))
        try:
            await emitter.connect()  # connected, topology declared, before the alarm
            alarmed.memory_alarm(True)
            started = monotonic()
            with pytest.raises(NotConfirmed):
                await emitter.emit("user.info", "held back")
        finally:
            await emitter.aclose()
        return monotonic() - started

    took = asyncio.run(run())
    assert took <= TIMEOUT + 1.0, f"emit and aclose took {took:.1f}s"
