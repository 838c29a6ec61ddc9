"""The proof that logbus.routing routes exactly as RabbitMQ does, on generated cases.

Each generated binding gets its own exclusive server-named queue, so which
queues a message reached says which bindings the broker matched. Messages are
published with confirms; then every queue gets a fence message through the
default exchange, and the queues are drained until each fence has arrived —
messages from one channel reach a queue in publish order, so after its fence a
queue holds nothing more. The broker's answer is compared with the binding
table and the matcher function, with zero differences allowed.

Set ``LOGBUS_PARITY_SEED`` to replay a failing run; the seed is in every
failure message.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from logbus.routing import HeadersTable, TopicTable, headers_match, topic_matches

SEED = int(os.environ.get("LOGBUS_PARITY_SEED", random.SystemRandom().randrange(2**32)))
FENCE = "fence"
DRAIN_DEADLINE = 20.0
SHOW = 15

PATTERN_WORDS = ["a", "b", "kern", "", "*", "#"]
KEY_WORDS = ["a", "b", "kern", "", "c", "*", "#"]
CORNER_PATTERNS = ["", "#", "*", "#.#", "kern.#", "#.kern", "*.#", "#.*", "a..b", ".", "a.*.b"]
CORNER_KEYS = ["", ".", "..", "kern", "kern.", "a..b", "kern.c.b", "*", "#", "c"]

HEADER_NAMES = ["h1", "h2", "h3", "x-h"]
BINDING_VALUES: list[Any] = ["1", 1, "2", 2, "a", None, True]
HEADER_VALUES: list[Any] = ["1", 1, "2", 2, "a", b"1", True, None]
X_MATCH = [None, "all", "any", "all-with-x", "any-with-x"]


def _words(rng: random.Random, alphabet: list[str]) -> str:
    return ".".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))


def _distinct(make: Callable[[], str], corners: list[str], count: int) -> list[str]:
    found = dict.fromkeys(corners)
    for _ in range(count * 20):
        if len(found) >= count:
            break
        found.setdefault(make())
    return list(found)


def _binding_arguments(rng: random.Random) -> dict[str, Any]:
    names = rng.sample(HEADER_NAMES, rng.randint(0, 3))
    args: dict[str, Any] = {name: rng.choice(BINDING_VALUES) for name in names}
    mode = rng.choice(X_MATCH)
    if mode is not None:
        args["x-match"] = mode
    return args


def _headers(rng: random.Random) -> dict[str, Any]:
    names = rng.sample([*HEADER_NAMES, "x-match"], rng.randint(0, 4))
    return {name: rng.choice(HEADER_VALUES) for name in names}


@pytest.fixture
def channel(amqp_url: str, request: pytest.FixtureRequest) -> Iterator[BlockingChannel]:
    """A confirming channel on a connection named after the test."""
    params = pika.URLParameters(amqp_url)
    params.client_properties = {"connection_name": f"logbus-tests:{request.node.name}"}
    connection = BlockingConnection(params)
    try:
        chan = connection.channel()
        chan.confirm_delivery()
        yield chan
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], object]]]:
    """Undo actions, run in reverse order of registration at the end of the test."""
    actions: list[Callable[[], object]] = []
    yield actions
    for action in reversed(actions):
        action()


def broker_routes(
    chan: BlockingChannel,
    cleanup: list[Callable[[], object]],
    exchange: tuple[str, str],
    bindings: list[tuple[str, dict[str, Any]]],
    messages: list[tuple[str, dict[str, Any] | None]],
) -> list[set[int]]:
    """For each message, the indices of the bindings whose queue the broker put it in."""
    name, kind = exchange
    chan.exchange_declare(name, kind)
    cleanup.append(partial(chan.exchange_delete, name))
    queues: list[str] = []
    for key, args in bindings:
        queue = chan.queue_declare("", exclusive=True).method.queue
        cleanup.append(partial(chan.queue_delete, queue))
        chan.queue_bind(queue, name, routing_key=key, arguments=args)
        queues.append(queue)

    for index, (key, headers) in enumerate(messages):
        props = pika.BasicProperties(message_id=str(index), headers=headers)
        chan.basic_publish(name, key, b"", props)
    for queue in queues:
        chan.basic_publish("", queue, b"", pika.BasicProperties(message_id=FENCE))

    routed: list[set[int]] = [set() for _ in messages]
    fenced: set[int] = set()

    def on_message(binding: int, _ch: Any, _method: Any, props: Any, _body: bytes) -> None:
        if props.message_id == FENCE:
            fenced.add(binding)
        else:
            routed[int(props.message_id)].add(binding)

    for index, queue in enumerate(queues):
        tag = chan.basic_consume(queue, partial(on_message, index), auto_ack=True)
        cleanup.append(partial(chan.basic_cancel, tag))

    deadline = time.monotonic() + DRAIN_DEADLINE
    while len(fenced) < len(queues):
        if time.monotonic() > deadline:
            pytest.fail(
                f"seed={SEED}: only {len(fenced)}/{len(queues)} queues drained "
                f"within {DRAIN_DEADLINE}s"
            )
        chan.connection.process_data_events(time_limit=0.1)
    return routed


def describe(differences: list[str], what: str) -> str:
    shown = "\n  ".join(differences[:SHOW])
    return (
        f"{len(differences)} {what} differ from RabbitMQ (seed={SEED}, "
        f"replay with LOGBUS_PARITY_SEED={SEED}); first ones:\n  {shown}"
    )


def test_topic_routing_matches_rabbitmq(
    channel: BlockingChannel, cleanup: list[Callable[[], object]], unique_name: str
) -> None:
    """For hundreds of generated patterns and keys, TopicTable and topic_matches agree."""
    rng = random.Random(SEED)
    patterns = _distinct(partial(_words, rng, PATTERN_WORDS), CORNER_PATTERNS, 300)
    keys = _distinct(partial(_words, rng, KEY_WORDS), CORNER_KEYS, 300)

    routed = broker_routes(
        channel,
        cleanup,
        (f"{unique_name}-topic", "topic"),
        [(pattern, {}) for pattern in patterns],
        [(key, None) for key in keys],
    )

    table: TopicTable[int] = TopicTable()
    for index, pattern in enumerate(patterns):
        table.add(pattern, {}, index)
    differences = []
    for key, broker in zip(keys, routed, strict=True):
        by_table = table.route(key)
        by_matcher = {i for i, pattern in enumerate(patterns) if topic_matches(pattern, key)}
        for i in sorted(broker ^ by_table | broker ^ by_matcher):
            differences.append(
                f"pattern {patterns[i]!r} key {key!r}: rabbitmq={i in broker} "
                f"table={i in by_table} topic_matches={i in by_matcher}"
            )
    assert sum(map(len, routed)) > 0, f"seed={SEED}: the broker routed nothing"
    assert not differences, describe(differences, "topic decisions")


def test_headers_routing_matches_rabbitmq(
    channel: BlockingChannel, cleanup: list[Callable[[], object]], unique_name: str
) -> None:
    """For hundreds of generated argument and header sets, HeadersTable and headers_match agree."""
    rng = random.Random(SEED)
    bindings = [_binding_arguments(rng) for _ in range(200)]
    header_sets = [{}, *(_headers(rng) for _ in range(249))]

    routed = broker_routes(
        channel,
        cleanup,
        (f"{unique_name}-headers", "headers"),
        [("", args) for args in bindings],
        [("", headers) for headers in header_sets],
    )

    table: HeadersTable[int] = HeadersTable()
    for index, args in enumerate(bindings):
        table.add("", args, index)
    differences = []
    for headers, broker in zip(header_sets, routed, strict=True):
        by_table = table.route("", headers)
        by_matcher = {i for i, args in enumerate(bindings) if headers_match(args, headers)}
        for i in sorted(broker ^ by_table | broker ^ by_matcher):
            differences.append(
                f"arguments {bindings[i]!r} headers {headers!r}: rabbitmq={i in broker} "
                f"table={i in by_table} headers_match={i in by_matcher}"
            )
    assert sum(map(len, routed)) > 0, f"seed={SEED}: the broker routed nothing"
    assert not differences, describe(differences, "headers decisions")
