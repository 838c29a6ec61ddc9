"""Benchmarks for logbus routing; run as ``python bench/routing.py``.

Each section prints one line per case, with logbus's figure next to a
baseline measured in the same run, as a ratio.

Topic matching: ``TopicTable`` (a trie over words) against the naive
approach of one compiled regex per binding, for 10, 1,000 and 10,000
realistic bindings. A "decision" is one routing key routed to its full set of
destinations. Both routers are checked to agree on every key they route.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence

from logbus.routing import TopicTable

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


def main() -> None:
    """Run every benchmark section in turn."""
    bench_topic()


if __name__ == "__main__":
    main()
