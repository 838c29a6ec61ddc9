"""Plain producers' bodies through the default topology: every one arrives as a record.

A plain pika publisher (no logbus on its side) sends each body of issue 13,
"Found 1", to ``logbus.topic`` under routing keys of "Found 2"; a
:class:`~logbus.subscriber.Subscriber` and a worker writing a jsonl file get each
one intact, its routing key with it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from logbus.record import BODY_BASE64, LogRecord, decode
from logbus.sinks import load_sink
from logbus.subscriber import Subscriber
from logbus.transports.amqp import AmqpTransport
from logbus.worker import Worker
from logbus.worker.retry import RetryPolicy, remove_retry_queues
from tests.support import RunningWorker, wait_until

#: Issue 13's "Found 1" bodies, each under a key of "Found 2".
BODIES = [
    (b"{worker-3} crashed", "Kern.Critical"),
    (b"42", "error"),
    (b"true", "warning"),
    (b'"a quoted string"', "crit"),
    (b"[1, 2]", "kern.error.extra"),
    (b"caf\xe9", "foo"),
    (b'{"msg": "pino says hi", "level": 30}', "user.info"),
]
KEYS = [key for _, key in BODIES]
POLICY = RetryPolicy(max_attempts=2, delay=0.05)


def _publish_plainly(url: str, tag: str) -> None:
    """What a tutorial publisher does (one connection, basic_publish), plus a message id
    of this test's, so that its records are told from others' under the same keys."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for number, (body, key) in enumerate(BODIES):
            props = pika.BasicProperties(message_id=f"{tag}-{number}")
            channel.basic_publish("logbus.topic", key, body, props)
    finally:
        connection.close()


def _check(records: dict[str, LogRecord], tag: str) -> None:
    """Each record is the one decode makes of what was published, its key kept."""
    for number, (body, key) in enumerate(BODIES):
        record = records[f"{tag}-{number}"]
        assert record.key == key
        expected = decode(body, None, key)
        assert {**record.to_dict(), "id": 0, "ts": 0} == {**expected.to_dict(), "id": 0, "ts": 0}
        if BODY_BASE64 in record.fields:
            assert base64.b64decode(record.fields[BODY_BASE64]) == body


@pytest.fixture
def tag(unique_name: str) -> str:
    """This test's mark on the message ids it publishes."""
    return unique_name


def test_a_subscriber_gets_every_plain_body_intact(amqp_url: str, tag: str) -> None:
    """Each Found-1 body published by plain pika reaches Subscriber as its record."""
    mine: dict[str, LogRecord] = {}
    with Subscriber(amqp_url, keys=KEYS) as sub:
        _publish_plainly(amqp_url, tag)
        while len(mine) < len(BODIES):
            record = sub.get(timeout=10)
            assert record is not None, f"only {sorted(mine)} arrived"
            if record.id.startswith(tag):
                mine[record.id] = record
    _check(mine, tag)


@pytest.fixture
def bound_queue(amqp_url: str, unique_name: str) -> Iterator[str]:
    """A durable queue bound to logbus.topic with the bodies' keys, removed afterwards."""
    name = f"{unique_name}.plain"
    with AmqpTransport(amqp_url, connection_name=f"admin-{unique_name}") as admin:
        admin.declare_queue(name, durable=True)
        for key in KEYS:
            admin.bind_queue(name, "logbus.topic", key)
        yield name
        admin.delete_queue(name)
        remove_retry_queues(admin, name, POLICY)


def test_a_worker_writes_every_plain_body_to_jsonl(
    amqp_url: str, bound_queue: str, tag: str, tmp_path: Path
) -> None:
    """Each Found-1 body reaches a worker's jsonl file as a line of its record."""
    path = tmp_path / "out.jsonl"
    running = RunningWorker(Worker(amqp_url, bound_queue, load_sink(f"jsonl:{path}"), retry=POLICY))
    _publish_plainly(amqp_url, tag)

    def mine() -> dict[str, LogRecord]:
        lines = path.read_bytes().splitlines() if path.exists() else []
        records = (decode(line) for line in lines)
        return {record.id: record for record in records if record.id.startswith(tag)}

    wait_until(lambda: len(mine()) == len(BODIES), 10, "every body in the file")
    summary = running.stop()
    assert (summary.undecodable, summary.failed) == (0, 0)
    _check(mine(), tag)
