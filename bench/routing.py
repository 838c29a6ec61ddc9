"""Benchmarks for logbus routing; run as ``python bench/routing.py``.

Each section prints one line per case, with logbus's figure next to a
baseline measured in the same run, as a ratio.

Memory transport: one thread publishing through ``memory://`` (a topic
exchange, confirmed) and one consuming with prefetch and acking each
delivery, against the bare primitive it is built on: a ``queue.Queue``
producer/consumer thread pair passing the same bodies.

Topic matching: ``TopicTable`` (a trie over words) against the naive
approach of one compiled regex per binding, for 10, 1,000 and 10,000
realistic bindings. A "decision" is one routing key routed to its full set of
destinations. Both routers are checked to agree on every key they route.
"""

from __future__ import annotations

import queue
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence

from logbus.message import Message, Properties
from logbus.routing import TopicTable
from logbus.transports import connect

SEED = 20240601
SYSLOG_FACILITIES = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console",
    *(f"local{i}" for i in range(8)),
]  # fmt: skip
SEVERITIES = ["emergency", "alert", "critical", "error", "warning", "notice", "info", "debug"]
COMPONENTS = ["db", "http", "cache", "queue", "auth"]

# (bindings, keys routed through the trie, keys routed through the regex baseline)
TOPIC_CASES = [(10, 200_000, 100_000), (1_000, 100_000, 2_000), (10_000, 100_000, 500)]
TOPIC_TARGET_BINDINGS = 10_000
TOPIC_TARGET_RATIO = 100.0
TOPIC_TARGET_RATE = 100_000.0
MEMORY_MESSAGES = 50_000
MEMORY_TARGET_RATIO = 0.3


# -- workload -------------------------------------------------------------------------


def facilities(bindings: int) -> list[str]:
    """The syslog facilities plus one application facility per ten bindings."""
    return SYSLOG_FACILITIES + [f"app{i}" for i in range(max(1, bindings // 10))]


def realistic_patterns(count: int, rng: random.Random) -> list[str]:
    """Binding keys as subscribers write them: exact, ``kern.*``, ``*.critical``, ``app42.#``."""
    facs = facilities(count)
    shapes: list[tuple[float, Callable[[], str]]] = [
        (0.30, lambda: f"{rng.choice(facs)}.{rng.choice(SEVERITIES)}"),
        (0.20, lambda: f"{rng.choice(facs)}.*"),
        (0.20, lambda: f"{rng.choice(facs)}.#"),
        (0.10, lambda: f"*.{rng.choice(SEVERITIES)}"),
        (0.10, lambda: f"{rng.choice(facs)}.{rng.choice(SEVERITIES)}.#"),
        (0.05, lambda: f"#.{rng.choice(SEVERITIES)}"),
        (0.04, lambda: f"{rng.choice(facs)}.*.{rng.choice(COMPONENTS)}"),
        (0.01, lambda: "#"),
    ]
    weights = [weight for weight, _ in shapes]
    makers = [make for _, make in shapes]
    return [rng.choices(makers, weights)[0]() for _ in range(count)]


def realistic_keys(count: int, bindings: int, rng: random.Random) -> list[str]:
    """Routing keys as emitters send them: mostly ``<facility>.<severity>``, some deeper."""
    facs = facilities(bindings)
    keys = []
    for _ in range(count):
        key = f"{rng.choice(facs)}.{rng.choice(SEVERITIES)}"
        if rng.random() < 0.2:
            key += f".{rng.choice(COMPONENTS)}"
        keys.append(key)
    return keys


# -- the baseline -----------------------------------------------------------------------


def topic_regex(pattern: str) -> re.Pattern[str]:
    """A regex with RabbitMQ's topic semantics, applied to ``dotted(key)``.

    Every word of ``dotted(key)`` is written as ``.word``, so the empty key is
    ``""`` (zero words) and ``#`` can match zero words without special cases.
    """
    parts = []
    for word in pattern.split(".") if pattern else []:
        if word == "#":
            parts.append(r"(?:\.[^.]*)*")
        elif word == "*":
            parts.append(r"\.[^.]*")
        else:
            parts.append(r"\." + re.escape(word))
    return re.compile("".join(parts))


def dotted(key: str) -> str:
    return "." + key if key else ""


class RegexRouter:
    """The baseline: every binding's regex tried against every key."""

    def __init__(self, bindings: Sequence[tuple[str, str]]) -> None:
        self._bindings = [(topic_regex(pattern).fullmatch, dest) for pattern, dest in bindings]

    def route(self, key: str) -> set[str]:
        subject = dotted(key)
        return {dest for fullmatch, dest in self._bindings if fullmatch(subject)}


# -- measuring --------------------------------------------------------------------------


def decisions_per_second(route: Callable[[str], object], keys: Sequence[str]) -> float:
    """Route every key once (after a short warm-up) and return keys per second."""
    for key in keys[:100]:
        route(key)
    start = time.perf_counter()
    for key in keys:
        route(key)
    return len(keys) / (time.perf_counter() - start)


def bench_topic() -> None:
    """Topic routing: TopicTable against one regex per binding."""
    print("# topic routing: TopicTable (trie) vs one compiled regex per binding")
    for bindings, trie_keys, regex_keys in TOPIC_CASES:
        rng = random.Random(SEED + bindings)
        patterns = realistic_patterns(bindings, rng)
        pairs = [(pattern, f"q{i}") for i, pattern in enumerate(patterns)]
        table: TopicTable[str] = TopicTable()
        for pattern, dest in pairs:
            table.add(pattern, {}, dest)
        baseline = RegexRouter(pairs)
        keys = realistic_keys(trie_keys, bindings, rng)

        checked = keys[:regex_keys]
        disagree = [key for key in checked if table.route(key) != baseline.route(key)]
        if disagree:
            raise SystemExit(f"trie and regex disagree on {len(disagree)} keys, e.g. {disagree[0]}")

        trie_rate = decisions_per_second(table.route, keys)
        regex_rate = decisions_per_second(baseline.route, checked)
        line = (
            f"bindings={bindings} trie={trie_rate:,.0f}/s regex={regex_rate:,.0f}/s "
            f"ratio={trie_rate / regex_rate:,.1f}x"
        )
        if bindings == TOPIC_TARGET_BINDINGS:
            line += f" (target >= {TOPIC_TARGET_RATIO:.0f}x, >= {TOPIC_TARGET_RATE:,.0f}/s)"
        print(line, flush=True)


def bare_queue_pair(bodies: Sequence[bytes]) -> float:
    """Seconds for a producer thread to hand every body to a consumer thread."""
    channel: queue.Queue[bytes | None] = queue.Queue()
    received = 0

    def consume() -> None:
        nonlocal received
        while channel.get() is not None:
            received += 1

    consumer = threading.Thread(target=consume)
    started = time.perf_counter()
    consumer.start()
    for body in bodies:
        channel.put(body)
    channel.put(None)
    consumer.join()
    elapsed = time.perf_counter() - started
    assert received == len(bodies)
    return elapsed


def memory_transport(bodies: Sequence[bytes]) -> float:
    """Seconds to publish every body (confirmed) and consume and ack it on another thread."""
    url = f"memory://bench-{secrets.token_hex(4)}"
    publisher, subscriber = connect(url), connect(url)
    publisher.declare_exchange("bench", "topic", durable=False)
    publisher.declare_queue("bench.q", durable=False)
    publisher.bind_queue("bench.q", "bench", "kern.*")
    properties = Properties(content_type="application/json", delivery_mode=2)
    received = 0

    def consume() -> None:
        nonlocal received
        for delivery in subscriber.consume("bench.q", prefetch=100):
            delivery.ack()
            received += 1
            if received == len(bodies):
                return

    consumer = threading.Thread(target=consume)
    started = time.perf_counter()
    consumer.start()
    for body in bodies:
        publisher.publish(Message(body, properties, "bench", "kern.critical"))
    consumer.join()
    elapsed = time.perf_counter() - started
    publisher.close()
    subscriber.close()
    return elapsed


def bench_memory() -> None:
    """memory:// publish -> consume -> ack against a bare queue.Queue thread pair."""
    print("# memory:// transport: publish -> consume -> ack vs a bare queue.Queue pair")
    body = b'{"facility":"kern","severity":"critical","message":"disk /dev/sda1 failed"}'
    bodies = [body] * MEMORY_MESSAGES
    bare = min(bare_queue_pair(bodies) for _ in range(3))
    memory = min(memory_transport(bodies) for _ in range(3))
    bare_rate, memory_rate = len(bodies) / bare, len(bodies) / memory
    print(
        f"messages={len(bodies)} memory={memory_rate:,.0f}/s queue.Queue={bare_rate:,.0f}/s "
        f"ratio={memory_rate / bare_rate:.2f}x (target >= {MEMORY_TARGET_RATIO}x)"
    )


def main() -> None:
    """Run every benchmark section in turn."""
    bench_topic()
    print()
    bench_memory()


if __name__ == "__main__":
    main()
