"""The main job end to end: one stream of records reaching every style of subscriber.

:func:`run_demo` declares the default topology (under a private prefix, so a
real broker's own entities are never touched), starts a fanout, a direct, two
topic and a headers subscriber plus two competing workers on the work queue,
emits a realistic mixed stream, and reports who got what — checked against
what :mod:`logbus.routing` says each binding should get.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from logbus._urls import redact_url
from logbus.emitter import Emitter
from logbus.errors import TransportError
from logbus.record import LogRecord, decode
from logbus.routing import headers_match, topic_matches
from logbus.settings import Settings
from logbus.subscriber import Subscriber
from logbus.topology import Binding, EmitTarget, Exchange, Topology, default
from logbus.transports import Transport, connect

__all__ = ["DemoReport", "Participant", "run_demo"]

FACILITIES = ("kern", "auth", "mail", "cron", "daemon", "local0")
SEVERITY_WEIGHTS = {
    "emergency": 1,
    "alert": 1,
    "critical": 3,
    "error": 8,
    "warning": 12,
    "notice": 10,
    "info": 40,
    "debug": 25,
}
HOSTS = ("web1", "web2", "db1")
MESSAGES = {
    "kern": "disk /dev/sda{n} reported I/O error",
    "auth": "failed password for admin from 10.0.0.{n}",
    "mail": "queue run {n} delivered 12 messages",
    "cron": "job backup-{n} finished",
    "daemon": "nginx worker {n} restarted",
    "local0": "checkout service latency p99 {n}ms",
}


@dataclass
class Participant:
    """One subscriber or worker of the demo and what it received."""

    name: str
    exchange: str
    binding: str
    expected: int
    received: Counter[str] = field(default_factory=Counter)

    @property
    def count(self) -> int:
        """How many records it received."""
        return sum(self.received.values())


@dataclass
class DemoReport:
    """What the demo emitted and who got what."""

    url: str
    emitted: int
    subscribers: list[Participant]
    workers: list[Participant]
    seconds: float

    @property
    def complete(self) -> bool:
        """Whether every subscriber got exactly what routing said and workers got everything."""
        return all(p.count == p.expected for p in self.subscribers) and (
            sum(w.count for w in self.workers) == self.emitted
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""

        def row(p: Participant) -> dict[str, Any]:
            return {
                "name": p.name,
                "exchange": p.exchange,
                "binding": p.binding,
                "received": p.count,
                "expected": p.expected,
                "keys": dict(sorted(p.received.items())),
            }

        return {
            "url": redact_url(self.url),  # the report is printed and piped: never a password
            "emitted": self.emitted,
            "seconds": round(self.seconds, 3),
            "complete": self.complete,
            "subscribers": [row(p) for p in self.subscribers],
            "workers": [
                {
                    "name": w.name,
                    "queue": w.binding,
                    "received": w.count,
                    "share": round(w.count / max(1, self.emitted), 3),
                }
                for w in self.workers
            ],
        }


def demo_topology(prefix: str) -> Topology:
    """The default topology with every name under ``prefix`` and nothing durable.

    Without the history stream: a stream is durable by nature, and the demo leaves
    nothing behind.
    """
    base = default()
    streams = {q.name for q in base.queues if q.queue_type == "stream"}

    def name(n: str) -> str:
        return prefix + n

    return Topology(
        exchanges=tuple(
            Exchange(name=name(e.name), type=e.type, durable=False, auto_delete=False)
            for e in base.exchanges
        ),
        queues=tuple(
            # The bound keeps its overflow: without it RabbitMQ would drop the oldest silently.
            dataclasses.replace(q, name=name(q.name), durable=False, auto_delete=False)
            for q in base.queues
            if q.name not in streams
        ),
        bindings=tuple(
            Binding(
                source=name(b.source),
                destination=name(b.destination),
                destination_type=b.destination_type,
                routing_key=b.routing_key,
                arguments=b.arguments,
            )
            for b in base.bindings
            if b.destination not in streams
        ),
        emit=tuple(EmitTarget(exchange=name(t.exchange), key=t.key) for t in base.emit),
    )


def stream(count: int, rng: random.Random) -> list[LogRecord]:
    """A realistic mixed stream: several facilities, weighted severities, three hosts."""
    words = list(SEVERITY_WEIGHTS)
    weights = list(SEVERITY_WEIGHTS.values())
    out = []
    for i in range(count):
        facility = rng.choice(FACILITIES)
        severity = rng.choices(words, weights)[0]
        if i < 4:  # make sure the rarer subscriptions have something to show
            facility, severity = ("kern", "critical") if i % 2 == 0 else ("auth", "critical")
        out.append(
            LogRecord(
                facility=facility,
                severity=severity,
                host=rng.choice(HOSTS),
                app="demo",
                message=MESSAGES[facility].format(n=rng.randint(1, 99)),
                fields={"seq": i},
            )
        )
    return out


def run_demo(
    url: str | None = None,
    *,
    records: int = 120,
    seed: int | None = None,
    timeout: float = 10.0,
    work_ms: float = 1.0,
    settings: Settings | None = None,
) -> DemoReport:
    """Run the demo on ``url`` (default: a fresh ``memory://`` broker) and report.

    Each worker spends ``work_ms`` per record, standing in for a sink's write,
    so the split between the two shows fair dispatch rather than which thread
    the scheduler happened to favour.
    """
    settings = settings or Settings()
    url = url or f"memory://demo-{secrets.token_hex(4)}"
    prefix = f"logbus-demo-{secrets.token_hex(3)}."
    topology = demo_topology(prefix)
    rng = random.Random(seed)
    batch = stream(records, rng)
    admin = connect(url, settings=settings)
    started = time.monotonic()
    try:
        return _run(url, admin, topology, prefix, batch, timeout, work_ms / 1000, settings, started)
    finally:
        _remove(admin, topology)
        admin.close()


def _run(
    url: str,
    admin: Transport,
    topology: Topology,
    prefix: str,
    batch: list[LogRecord],
    timeout: float,
    work: float,
    settings: Settings,
    started: float,
) -> DemoReport:
    specs: list[tuple[str, str, dict[str, Any], Callable[[LogRecord], bool]]] = [
        ("fanout", "(all)", {"all": True}, lambda r: True),
        (
            "direct",
            "kern.critical",
            {"exact": ["kern.critical"]},
            lambda r: r.routing_key == "kern.critical",
        ),
        ("topic", "kern.*", {"keys": ["kern.*"]}, lambda r: topic_matches("kern.*", r.routing_key)),
        (
            "topic",
            "*.critical",
            {"keys": ["*.critical"]},
            lambda r: topic_matches("*.critical", r.routing_key),
        ),
        (
            "headers",
            "host=web1",
            {"headers": {"host": "web1"}},
            lambda r: headers_match({"host": "web1"}, r.to_properties().headers),
        ),
    ]
    stop = threading.Event()
    threads: list[threading.Thread] = []
    subscribers: list[Participant] = []
    # Each subscriber is made on the thread that reads it: a transport is used by the thread
    # that opened it (gevent:// consumers belong to their thread's hub). All are bound before
    # anything is emitted.
    errors: list[BaseException] = []
    bound = threading.Semaphore(0)
    for style, label, kwargs, wants in specs:
        expected = sum(1 for r in batch if wants(r))
        participant = Participant(f"{style} {label}", "", label, expected)
        subscribers.append(participant)
        make = functools.partial(Subscriber, url, settings=settings, topology=topology, **kwargs)
        threads.append(_start(_subscribe, make, participant, prefix, errors, bound, stop))
    for _ in specs:
        bound.acquire()
    if errors:
        stop.set()
        raise errors[0]
    work_queue = topology.queues[0].name
    workers = [Participant(f"worker-{i}", "", work_queue.removeprefix(prefix), 0) for i in (1, 2)]
    for worker in workers:
        transport = connect(url, settings=settings)
        threads.append(_start(_work, transport, work_queue, worker, work, stop))
    with Emitter(url, settings=settings, topology=topology, transport=admin) as emitter:
        emitter.emit_many(batch)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p.count >= p.expected for p in subscribers) and sum(w.count for w in workers) >= len(
            batch
        ):
            break
        stop.wait(0.02)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    return DemoReport(url, len(batch), subscribers, workers, time.monotonic() - started)


def _start(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _subscribe(
    make: Callable[[], Subscriber],
    participant: Participant,
    prefix: str,
    errors: list[BaseException],
    bound: threading.Semaphore,
    stop: threading.Event,
) -> None:
    try:
        sub = make()
        participant.exchange = sub.bindings[0][0].removeprefix(prefix)
    except BaseException as exc:
        errors.append(exc)
        return
    finally:
        bound.release()
    try:
        while not stop.is_set():
            record = sub.get(timeout=0.05)
            if record is not None:
                participant.received[record.routing_key] += 1
    finally:
        sub.close()


def _work(
    transport: Transport, queue: str, worker: Participant, work: float, stop: threading.Event
) -> None:
    consumer = transport.consume(queue, prefetch=1)  # the tutorial's fair dispatch
    try:
        while not stop.is_set():
            delivery = consumer.get(timeout=0.05)
            if delivery is None:
                continue
            record = decode(delivery.body, delivery.properties, delivery.routing_key)
            worker.received[record.routing_key] += 1
            if work:
                stop.wait(work)  # stands in for the sink's write
            delivery.ack()
    finally:
        consumer.cancel()
        transport.close()


def _remove(admin: Transport, topology: Topology) -> None:
    """Delete what the demo declared, so a real broker is left as it was."""
    try:
        for queue in topology.queues:
            admin.delete_queue(queue.name)
        for exchange in reversed(topology.exchanges):
            admin.delete_exchange(exchange.name)
    except TransportError:
        pass  # best effort: the demo's entities are prefixed and non-durable
