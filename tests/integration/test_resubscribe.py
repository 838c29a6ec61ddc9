"""Subscriptions resume after a reconnect, in every flavour (issue 11, defect 1).

A temporary queue is deleted with its connection; after a reconnect the
subscriber must declare a new one, bind it again and consume it, whatever
flavour it is: the sync :class:`Subscriber` and the :class:`AsyncSubscriber`,
with a temporary or a named queue, and ``logbus subscribe`` in a subprocess
with topic keys, ``--exact``, ``--all``, ``--header`` or ``--queue NAME
--durable``. Each test emits a record before the fault and one after the
subscription is back, and each subscriber must print both. A subscription
that cannot be restored must end with an error, never go on deaf.

The faults (closing every connection, restarting the node) are inflicted on
the private node (``tests/private_broker.py``), never the shared broker.
Whether a subscription is back is read from the broker: a queue bound as the
flavour asked has a consumer on a channel that did not exist before the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from logbus.demo import demo_topology
from logbus.emitter import Emitter
from logbus.errors import LogbusError, NotFound
from logbus.subscriber import AsyncSubscriber, Subscriber
from logbus.topology import Topology, dumps
from logbus.transports import connect
from tests.e2e.support import Deployment
from tests.e2e.test_subscribe import Subscription
from tests.private_broker import PrivateBroker
from tests.support import wait_until

pytestmark = pytest.mark.faults

T = TypeVar("T")

RESTORED_WITHIN = 60.0  # seconds: a broker restart takes ~16 s on a busy machine
ARRIVES_WITHIN = 20.0


# -- the subscriber flavours ------------------------------------------------------------


class Running(Protocol):
    """A subscriber of some flavour, collecting the messages of the records it receives."""

    messages: list[str]

    def failure(self) -> str | None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Flavour:
    """How one kind of subscriber subscribes, and the records meant for it.

    ``facility`` is the facility of its records (``<facility>.info``); ``binds``
    is the (exchange base name, binding key) its queue gets, which the broker
    lists once the subscription is in place.
    """

    name: str
    facility: str
    binds: tuple[str, str]
    start: Callable[[Scene, Flavour], Running]
    named: bool = False

    def message(self, when: str) -> str:
        return f"{when} {self.facility}"


@dataclass
class Scene:
    """One test's private-node deployment: a durable copy of the default topology."""

    broker: PrivateBroker
    prefix: str
    topology: Topology
    config: Path
    loop: AsyncLoop
    queues: list[str] = field(default_factory=list)

    def name(self, base: str) -> str:
        return self.prefix + base

    def emit(self, flavours: list[Flavour], when: str) -> None:
        """Emit one record for each flavour, confirmed, through a connection of its own."""
        with Emitter(self.broker.url, topology=self.topology) as emitter:
            for flavour in flavours:
                emitter.emit(f"{flavour.facility}.info", flavour.message(when))


class SyncRunning:
    """A :class:`Subscriber` read by a thread of its own until stopped."""

    def __init__(self, make: Callable[[], Subscriber]) -> None:
        self.messages: list[str] = []
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), daemon=True)
        self._thread.start()
        wait_until(self._ready.is_set, 20, "the subscriber to start")
        if self.error is not None:
            raise self.error

    def _run(self, make: Callable[[], Subscriber]) -> None:
        try:
            sub = make()
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.is_set():
                record = sub.get(0.2)
                if record is not None:
                    self.messages.append(record.message)
        except BaseException as exc:
            self.error = exc
        finally:
            with contextlib.suppress(LogbusError):
                sub.close()

    def failure(self) -> str | None:
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(15)


class AsyncLoop:
    """An event loop on a thread of its own, for the async subscribers of a sync test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class AsyncRunning:
    """An :class:`AsyncSubscriber` read by a task on the test's event loop until stopped."""

    def __init__(self, loop: AsyncLoop, sub: AsyncSubscriber) -> None:
        self.messages: list[str] = []
        self.error: BaseException | None = None
        self._loop = loop
        self._sub = sub
        loop.run(sub.start())
        self._task = asyncio.run_coroutine_threadsafe(self._read(), loop.loop)

    async def _read(self) -> None:
        try:
            async for record in self._sub:
                self.messages.append(record.message)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.error = exc
        else:
            self.error = AssertionError("the async subscription ended by itself")

    def failure(self) -> str | None:
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(Exception):
            self._loop.run(self._sub.aclose())


class CliRunning:
    """``logbus subscribe ... --json`` in a subprocess, pointed at the private node."""

    def __init__(self, scene: Scene, *args: str) -> None:
        deployment = Deployment(scene.config, scene.topology, scene.prefix, channel=None)
        self._sub = Subscription(scene.broker.url, deployment, *args, "--json")
        self._sub.wait_ready()

    @property
    def messages(self) -> list[str]:
        return [record["message"] for record in self._sub.records]

    def failure(self) -> str | None:
        code = self._sub.proc.poll()
        return None if code is None else f"exited {code}: {self._sub.stderr}"

    def stop(self) -> None:
        if self._sub.proc.poll() is None:
            self._sub.proc.terminate()
        self._sub.finish()


def _sync(named: bool) -> Callable[[Scene, Flavour], Running]:
    def start(scene: Scene, flavour: Flavour) -> Running:
        queue = scene.name(flavour.name) if named else None
        return SyncRunning(
            lambda: Subscriber(
                scene.broker.url,
                keys=[flavour.binds[1]],
                queue=queue,
                topology=scene.topology,
            )
        )

    return start


def _async(named: bool) -> Callable[[Scene, Flavour], Running]:
    def start(scene: Scene, flavour: Flavour) -> Running:
        queue = scene.name(flavour.name) if named else None
        sub = AsyncSubscriber(
            scene.broker.url, keys=[flavour.binds[1]], queue=queue, topology=scene.topology
        )
        return AsyncRunning(scene.loop, sub)

    return start


def _cli(*args: str) -> Callable[[Scene, Flavour], Running]:
    def start(scene: Scene, flavour: Flavour) -> Running:
        filled = [a.replace("{queue}", scene.name(flavour.name)) for a in args]
        return CliRunning(scene, *filled)

    return start


FLAVOURS = [
    Flavour("sync-temporary", "synctemp", ("logbus.topic", "synctemp.*"), _sync(named=False)),
    Flavour(
        "sync-named", "syncnamed", ("logbus.topic", "syncnamed.*"), _sync(named=True), named=True
    ),
    Flavour("async-temporary", "asynctemp", ("logbus.topic", "asynctemp.*"), _async(named=False)),
    Flavour(
        "async-named",
        "asyncnamed",
        ("logbus.topic", "asyncnamed.*"),
        _async(named=True),
        named=True,
    ),
    Flavour("cli-keys", "clikeys", ("logbus.topic", "clikeys.*"), _cli("clikeys.*")),
    Flavour(
        "cli-exact", "cliexact", ("logbus.direct", "cliexact.info"), _cli("--exact=cliexact.info")
    ),
    Flavour("cli-all", "cliall", ("logbus.fanout", ""), _cli("--all")),
    Flavour("cli-header", "clihead", ("logbus.headers", ""), _cli("--header=facility=clihead")),
    Flavour(
        "cli-durable-queue",
        "clidurable",
        ("logbus.topic", "clidurable.*"),
        _cli("clidurable.*", "--queue={queue}", "--durable"),
        named=True,
    ),
]


# -- what the broker says ---------------------------------------------------------------


def _rows(broker: PrivateBroker, *args: str) -> list[list[str]]:
    out = broker.ctl(*args, "--quiet", "--no-table-headers")
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def consumer_channels(broker: PrivateBroker) -> set[str]:
    """The channel of every consumer on the node."""
    return {row[1] for row in _rows(broker, "list_consumers", "queue_name", "channel_pid")}


class Restored:
    """A condition: each flavour's binding leads to a queue consumed on a new channel;
    ``missing`` names the flavours that were not, at the last look."""

    def __init__(self, scene: Scene, flavours: list[Flavour], old_channels: set[str]) -> None:
        self.scene = scene
        self.flavours = flavours
        self.old_channels = old_channels
        self.missing = [f.name for f in flavours]

    def __call__(self) -> bool:
        scene, old_channels = self.scene, self.old_channels
        bound: dict[tuple[str, str], set[str]] = {}
        listing = _rows(
            scene.broker,
            "list_bindings",
            "source_name",
            "destination_name",
            "destination_kind",
            "routing_key",
        )
        for row in listing:
            source, destination, kind = row[:3]
            key = row[3] if len(row) > 3 else ""
            if kind == "queue":
                bound.setdefault((source, key), set()).add(destination)
        consumed = {
            queue
            for queue, channel in _rows(scene.broker, "list_consumers", "queue_name", "channel_pid")
            if channel not in old_channels
        }
        self.missing = [
            f.name
            for f in self.flavours
            if not bound.get((scene.name(f.binds[0]), f.binds[1]), set()) & consumed
        ]
        return not self.missing


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def scene(healthy_private_broker: PrivateBroker, tmp_path: Path) -> Iterator[Scene]:
    """A durable copy of the default topology on the private node, removed after the test."""
    prefix = f"resub-{secrets.token_hex(4)}-"
    plain = demo_topology(prefix)
    topology = dataclasses.replace(
        plain, exchanges=tuple(dataclasses.replace(e, durable=True) for e in plain.exchanges)
    )
    config = tmp_path / "logbus.toml"
    config.write_text(dumps(topology))
    loop = AsyncLoop()
    made = Scene(healthy_private_broker, prefix, topology, config, loop)
    yield made
    loop.close()
    healthy_private_broker.start()
    with connect(healthy_private_broker.url) as transport:
        names = [q.name for q in topology.queues] + [made.name(f.name) for f in FLAVOURS]
        for name in names:
            with contextlib.suppress(NotFound):
                transport.delete_queue(name)
        for exchange in reversed(topology.exchanges):
            with contextlib.suppress(NotFound):
                transport.delete_exchange(exchange.name)


def _start_all(scene: Scene, flavours: list[Flavour]) -> list[Running]:
    running: list[Running] = []
    try:
        for flavour in flavours:
            running.append(flavour.start(scene, flavour))
    except BaseException:
        for one in running:
            one.stop()
        raise
    return running


def _receive(scene: Scene, flavours: list[Flavour], running: list[Running], when: str) -> None:
    """Emit one record per flavour and wait until each subscriber has it."""
    scene.emit(flavours, when)
    for flavour, one in zip(flavours, running, strict=True):
        wait_until(
            lambda f=flavour, r=one: f.message(when) in r.messages or r.failure() is not None,
            ARRIVES_WITHIN,
            f"{flavour.name} to receive the record emitted {when}",
        )
        assert one.failure() is None, f"{flavour.name}: {one.failure()}"


def _survives(scene: Scene, flavours: list[Flavour], fault: Callable[[], None]) -> None:
    running = _start_all(scene, flavours)
    try:
        _receive(scene, flavours, running, "before")
        old_channels = consumer_channels(scene.broker)
        fault()
        restored = Restored(scene, flavours, old_channels)
        try:
            wait_until(restored, RESTORED_WITHIN, "the subscriptions to be back", every=0.5)
        except AssertionError as exc:
            failed = {f.name: one.failure() for f, one in zip(flavours, running, strict=True)}
            raise AssertionError(
                f"{exc}: not bound and consumed again: {', '.join(restored.missing)} "
                f"(failures: { {k: v for k, v in failed.items() if v} })"
            ) from None
        _receive(scene, flavours, running, "after")
        for flavour, one in zip(flavours, running, strict=True):
            assert one.messages.count(flavour.message("before")) >= 1, flavour.name
            assert one.failure() is None, f"{flavour.name}: {one.failure()}"
    finally:
        for one in running:
            one.stop()


# -- the tests --------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS, ids=[f.name for f in FLAVOURS])
def test_a_subscription_resumes_after_its_connection_is_closed(scene: Scene, flavour: Flavour):
    """A record emitted after the broker closed the subscriber's connection still arrives."""
    _survives(scene, [flavour], scene.broker.close_all_connections)


def test_every_subscription_resumes_after_a_broker_restart(scene: Scene):
    """Every flavour, running at once, receives a record emitted after the node restarted."""
    _survives(scene, FLAVOURS, scene.broker.restart)


def _replace_topic_exchange(scene: Scene) -> str:
    """Swap the topology's topic exchange for a direct one of the same name, as an
    operator's mistake would: declaring the topology again is then refused (406)."""
    name = scene.name("logbus.topic")
    with connect(scene.broker.url) as transport:
        transport.delete_exchange(name)
        transport.declare_exchange(name, "direct", durable=True)
    return name


UNRESTORABLE = [f for f in FLAVOURS if f.name in ("sync-temporary", "async-named", "cli-keys")]


@pytest.mark.parametrize("flavour", UNRESTORABLE, ids=[f.name for f in UNRESTORABLE])
def test_a_subscription_that_cannot_be_restored_ends_with_the_error(scene: Scene, flavour: Flavour):
    """When the broker refuses the topology after a reconnect, the subscriber fails with
    the broker's reason (the CLI: one line, exit 78) instead of going on deaf."""
    [running] = _start_all(scene, [flavour])
    try:
        exchange = _replace_topic_exchange(scene)
        scene.broker.close_all_connections()
        wait_until(lambda: running.failure() is not None, RESTORED_WITHIN, "the subscriber to fail")
        failure = running.failure()
        assert failure is not None and exchange in failure, failure
        if isinstance(running, CliRunning):
            assert failure.startswith("exited 78: "), failure
            assert "Traceback" not in failure
            assert "exists with other properties" in failure, failure
        else:
            assert failure.startswith("PreconditionFailed: "), failure
    finally:
        running.stop()
