"""logbus and the RabbitMQ tutorials (pika, amqplib) and rabbitmq-c, on one broker, both ways.

Issue 13: logbus joins a deployment built from the tutorials through
``config/tutorial.toml``. Real third-party programs (``tests/peers/tutorials``, run
by ``tests/peers/harness``) publish and consume beside the real ``logbus`` command:

- ``logbus emit`` reaches each tutorial consumer (fanout, direct, topic, worker);
- each tutorial publisher, and ``amqp-publish``, feeds ``logbus subscribe`` and
  ``logbus worker``, with a logbus record body and with a plain-text body (both
  are records under today's decoding rule);
- ``logbus worker`` and the tutorial workers compete on ``task_queue``: each gets a
  share, every message is handled once, nobody meets PRECONDITION_FAILED.

The tutorials use fixed names, so the module runs in a vhost of its own, made for it
and deleted after; each test starts from an empty vhost. ``pytest -m peers`` selects it.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from logbus.record import LogRecord
from tests.peers.harness import LANGS, Peers, Running, lines_of, throwaway_vhost
from tests.support import wait_until

pytestmark = pytest.mark.peers

PUBLISHERS = (*LANGS, "amqp-publish")
#: Tutorial style -> (the routing key its publisher uses, the logbus subscribe selector).
SUBSCRIBE = {
    "fanout": ("", ["--all"]),
    "direct": ("critical", ["--exact", "critical"]),
    "topic": ("kern.critical", ["kern.*"]),
}
TEXT = b"disk /dev/sda1 failed"


@pytest.fixture(scope="module")
def vhost(amqp_url: str) -> Iterator[str]:
    """A URL to this module's own vhost on the shared broker."""
    yield from throwaway_vhost(amqp_url, f"logbus-peers-{secrets.token_hex(4)}")


@pytest.fixture
def peers(vhost: str, tmp_path: Path) -> Iterator[Peers]:
    """This test's processes, in an empty vhost (what earlier tests left is deleted)."""
    _empty(vhost)
    running = Peers(vhost, tmp_path)
    yield running
    running.close()


def _empty(url: str) -> None:
    """Delete every queue and every tutorial exchange of the vhost at ``url``."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for queue in ("task_queue", *_worker_queues()):
            channel.queue_delete(queue)
        for exchange in ("logs", "direct_logs", "topic_logs"):
            channel.exchange_delete(exchange)
    finally:
        connection.close()


def _worker_queues() -> list[str]:
    """The delay and dead-letter queues a logbus worker on task_queue declares."""
    from logbus.worker.retry import RetryPolicy, retry_queues

    return list(retry_queues("task_queue", RetryPolicy()))


def _queue(url: str, name: str) -> tuple[int, int]:
    """(messages, consumers) of queue ``name``, as a passive declare reports them."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        ok = connection.channel().queue_declare(name, passive=True).method
        return int(ok.message_count), int(ok.consumer_count)
    finally:
        connection.close()


def _record(key: str, message: str) -> tuple[LogRecord, bytes]:
    """A logbus record and its wire body, as a tutorial publisher would send it."""
    record = LogRecord.from_key(key, message, host="web1", app="tutorial")
    return record, record.to_bytes()


def _publish(peers: Peers, publisher: str, style: str, bodies: list[bytes], key: str) -> None:
    """Publish ``bodies`` in order with a tutorial publisher or amqp-publish."""
    if publisher == "amqp-publish":
        for body in bodies:
            peers.amqp_publish(style, body, key)
    else:
        peers.publish(publisher, style, bodies, key)


def _no_precondition_failed(*procs: Running) -> None:
    for proc in procs:
        for text in (proc.out(), proc.err()):
            assert "PRECONDITION_FAILED" not in text, f"{proc.name}: {text}"


@pytest.mark.parametrize("lang", LANGS)
def test_logbus_emit_reaches_every_tutorial_consumer(peers: Peers, lang: str) -> None:
    """One ``logbus emit`` with config/tutorial.toml reaches the tutorial's fanout, direct
    (by severity), topic (by pattern) consumers and its worker, each with the record."""
    consumers = {
        "logs": peers.consumer(lang, "receive_logs", count=1),
        "direct_logs": peers.consumer(lang, "receive_logs_direct", "critical", count=1),
        "topic_logs": peers.consumer(lang, "receive_logs_topic", "kern.*", count=1),
        "": peers.consumer(lang, "worker", "--dot-seconds", "0", count=1),
    }
    done = peers.run_logbus("emit", "kern.critical", "disk", "failed", "--host", "web1")
    assert done.returncode == 0, done.stderr

    keys = {"logs": "kern.critical", "direct_logs": "critical", "topic_logs": "kern.critical"}
    bodies = set()
    for exchange, consumer in consumers.items():
        assert consumer.finish() == 0, consumer.err()
        [got] = consumer.received()
        assert got.exchange == exchange
        assert got.routing_key == keys.get(exchange, "task_queue")
        bodies.add(got.body)
        record = json.loads(got.body)
        assert (record["facility"], record["severity"]) == ("kern", "critical")
        assert (record["message"], record["host"]) == ("disk failed", "web1")
    assert len(bodies) == 1, "every target got the same record"


@pytest.mark.parametrize("style", sorted(SUBSCRIBE))
@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_tutorial_publishers_feed_logbus_subscribe(
    peers: Peers, publisher: str, style: str
) -> None:
    """What a tutorial publisher (or amqp-publish) sends to logs, direct_logs or topic_logs
    reaches ``logbus subscribe`` bound the matching way: a logbus record as it was sent,
    and a plain-text body as a record whose message is the text."""
    key, selector = SUBSCRIBE[style]
    sub = peers.logbus("subscribe", *selector, "--count", "2", "--timeout", "60", "--json")
    sub.wait_for("logbus: subscribed", stderr=True)
    sent, body = _record("kern.critical", f"from {publisher} via {style}")

    _publish(peers, publisher, style, [body, TEXT], key)

    assert sub.finish() == 0, sub.err()
    record, text = (json.loads(line) for line in sub.out().splitlines())
    assert record["id"] == sent.id
    assert (record["facility"], record["severity"]) == ("kern", "critical")
    assert (record["message"], record["host"], record["app"]) == (sent.message, "web1", "tutorial")
    assert text["message"] == TEXT.decode()
    if style == "topic":  # a facility.severity key: what the record says under any rule
        assert (text["facility"], text["severity"]) == ("kern", "critical")


@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_tutorial_publishers_feed_logbus_worker(
    peers: Peers, publisher: str, tmp_path: Path
) -> None:
    """What new_task (or amqp-publish, persistent, to task_queue) sends is handed by
    ``logbus worker --queue task_queue`` to its sink: the record intact, the text as a
    record's message; nothing is left in the queue or dead-lettered."""
    sink = tmp_path / "sink.jsonl"
    worker = peers.logbus(
        "worker", "--queue", "task_queue", "--prefetch", "1", "--sink", f"jsonl:{sink}"
    )
    worker.wait_for("consuming task_queue", stderr=True)
    sent, body = _record("daemon.warning", f"task from {publisher}")

    _publish(peers, publisher, "work", [body, TEXT], "")

    wait_until(lambda: len(list(lines_of(sink))) >= 2, 30, "the worker's sink to hold 2 records")
    assert worker.interrupt() == 0, worker.err()
    record, text = lines_of(sink)
    assert record["id"] == sent.id
    assert (record["facility"], record["severity"], record["message"]) == (
        "daemon",
        "warning",
        sent.message,
    )
    assert text["message"] == TEXT.decode()
    assert _queue(peers.url, "task_queue")[0] == 0
    assert _queue(peers.url, "task_queue.dead")[0] == 0
    _no_precondition_failed(worker)


def _acked_ids(logbus_sink: Path, tutorial_workers: list[Running]) -> dict[str, list[str]]:
    """The record ids each worker finished: logbus's from its sink, the tutorials' from
    their JSON lines (printed after the ack)."""
    done = {"logbus": [str(r["id"]) for r in lines_of(logbus_sink)]}
    for proc in tutorial_workers:
        done[proc.name] = [json.loads(r.body)["id"] for r in proc.received()]
    return done


@pytest.mark.parametrize("first", ["logbus", "python", "node"])
def test_mixed_work_queue(peers: Peers, tmp_path: Path, first: str) -> None:
    """``logbus worker`` and the tutorial's worker.py and worker.js, all at prefetch 1,
    compete on the quorum task_queue, whoever declares it first: each gets a share, every
    message is handled exactly once, nothing is left, and nobody meets PRECONDITION_FAILED."""
    sink = tmp_path / "logbus.jsonl"
    started: dict[str, Running] = {}
    order = [first, *(w for w in ("logbus", "python", "node") if w != first)]
    for who in order:
        if who == "logbus":
            started[who] = peers.logbus(
                *("worker", "--queue", "task_queue", "--prefetch", "1", "--sink", f"jsonl:{sink}")
            )
            started[who].wait_for("consuming task_queue", stderr=True)
        else:
            started[who] = peers.consumer(who, "worker", "--dot-seconds", "0")
    wait_until(lambda: _queue(peers.url, "task_queue")[1] == 3, 30, "three consumers")

    sent: list[LogRecord] = []
    for lang in ("python", "node"):
        records = [_record("user.info", f"task {lang} {i}")[0] for i in range(30)]
        peers.publish(lang, "work", [r.to_bytes() for r in records])
        sent += records
    tutorial = [started["python"], started["node"]]

    def all_done() -> bool:
        return sum(len(v) for v in _acked_ids(sink, tutorial).values()) >= len(sent)

    wait_until(all_done, 60, f"{len(sent)} messages handled")
    for proc in started.values():
        assert proc.interrupt() == 0, proc.err()
    done = _acked_ids(sink, tutorial)
    counted = Counter(i for ids in done.values() for i in ids)
    assert counted == Counter(r.id for r in sent), "each message handled exactly once"
    shares = {who: len(ids) for who, ids in done.items()}
    assert all(n > 0 for n in shares.values()), f"every worker gets a share: {shares}"
    assert _queue(peers.url, "task_queue") == (0, 0)
    _no_precondition_failed(*started.values())


#: Issue 13's "Found 1" bodies and the message each record must carry.
FOUND_1 = [
    (b"{worker-3} crashed", "{worker-3} crashed"),
    (b"42", "42"),
    (b"true", "true"),
    (b'"a quoted string"', '"a quoted string"'),
    (b"[1, 2]", "[1, 2]"),
    (b"caf\xe9", "caf\\xe9"),
    (b'{"msg": "pino says hi", "level": 30}', "pino says hi"),
]
#: (tutorial style, routing key, logbus subscribe selector, facility and severity it gives).
KEYED = {
    "topic": ("Kern.Critical", ["#"], ("kern", "critical")),
    "direct": ("error", ["--exact", "error"], ("user", "error")),
}


def _found_1_intact(records: list[dict[str, object]], key: str) -> None:
    """Every Found-1 body arrived, in order, as its record, with the key it was sent with."""
    assert [r["message"] for r in records] == [message for _, message in FOUND_1]
    assert {r["key"] for r in records} == {key}
    latin1 = records[5]["fields"]
    assert isinstance(latin1, dict)
    assert base64.b64decode(str(latin1["body_base64"])) == b"caf\xe9"
    assert records[6]["severity"] == "info"  # pino's level 30, whatever the key says


@pytest.mark.parametrize("style", sorted(KEYED))
@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_found_1_bodies_reach_logbus_subscribe(peers: Peers, publisher: str, style: str) -> None:
    """Each plain body of issue 13, sent by a tutorial publisher (or amqp-publish) under a
    key that is not logbus's, prints from ``logbus subscribe --json`` as a record whose
    message is what was sent, the key kept and read (Kern.Critical, a lone severity)."""
    key, selector, (facility, severity) = KEYED[style]
    count = str(len(FOUND_1))
    sub = peers.logbus("subscribe", *selector, "--count", count, "--timeout", "60", "--json")
    sub.wait_for("logbus: subscribed", stderr=True)

    _publish(peers, publisher, style, [body for body, _ in FOUND_1], key)

    assert sub.finish() == 0, sub.err()
    records = [json.loads(line) for line in sub.out().splitlines()]
    _found_1_intact(records, key)
    assert {(r["facility"], r["severity"]) for r in records[:6]} == {(facility, severity)}


@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_found_1_bodies_reach_logbus_worker(peers: Peers, publisher: str, tmp_path: Path) -> None:
    """Each plain body of issue 13 sent to task_queue is written by ``logbus worker --sink
    jsonl:`` as its record; nothing is dead-lettered."""
    sink = tmp_path / "sink.jsonl"
    worker = peers.logbus(
        "worker", "--queue", "task_queue", "--prefetch", "1", "--sink", f"jsonl:{sink}"
    )
    worker.wait_for("consuming task_queue", stderr=True)

    _publish(peers, publisher, "work", [body for body, _ in FOUND_1], "")

    wait_until(lambda: len(list(lines_of(sink))) >= len(FOUND_1), 30, "every body in the sink")
    assert worker.interrupt() == 0, worker.err()
    _found_1_intact(list(lines_of(sink)), "task_queue")
    assert _queue(peers.url, "task_queue.dead")[0] == 0
