"""``logbus subscribe`` end to end: real subprocesses against the real RabbitMQ.

Subscribers are started first and waited for until they say on stderr that
their queue is bound ("logbus: subscribed: ..."): no sleeps. Each test has a
topology of its own (see ``test_emit``), deleted after it.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pika
import pytest

from tests.e2e.support import Deployment, connection_args, emit

READY = "logbus: subscribed:"


class Subscription:
    """A running ``logbus subscribe`` whose stdout and stderr are read as they come."""

    def __init__(self, amqp_url: str, deployment: Deployment, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "logbus",
                "subscribe",
                *args,
                *connection_args(amqp_url, deployment),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._err_lines: queue.Queue[str | None] = queue.Queue()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, None), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self._err_lines)),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, lines: queue.Queue[str | None] | None) -> None:
        for line in stream:
            (self.err if lines is not None else self.out).append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)

    def wait_ready(self, timeout: float = 15) -> None:
        """Return once the queue is bound; fail if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._err_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no ready line within {timeout}s: {''.join(self.err)}")
            if line is None:
                pytest.fail(f"exited {self.proc.wait()} before subscribing: {''.join(self.err)}")
            if line.startswith(READY):
                return

    def finish(self, timeout: float = 15) -> int:
        """Wait for the process to end (killing it if it does not); its exit status."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"still running after {timeout}s: {''.join(self.err)}")
        for reader in self._readers:
            reader.join(5)
        return code

    @property
    def records(self) -> list[dict[str, Any]]:
        """The JSON records printed so far."""
        return [json.loads(line) for line in self.out]

    @property
    def stderr(self) -> str:
        return "".join(self.err)


def start(amqp_url: str, deployment: Deployment, *args: str) -> Subscription:
    """Start ``logbus subscribe ARGS`` and wait until it is bound."""
    subscription = Subscription(amqp_url, deployment, *args)
    subscription.wait_ready()
    return subscription


def publish(amqp_url: str, exchange: str, routing_key: str, body: bytes) -> None:
    """Publish as the tutorial's emit_log_topic.py does: no logbus involved."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.basic_publish(exchange=exchange, routing_key=routing_key, body=body)
    connection.close()


def test_one_emit_reaches_topic_direct_fanout_and_headers_subscribers(amqp_url, deployment):
    """A record emitted once is printed by a topic, a direct, a fanout and a headers subscriber."""
    host = f"{deployment.prefix}host"
    subscriptions = [
        Subscription(amqp_url, deployment, *selector, "--count", "1", "--json")
        for selector in (
            ("kern.*",),
            ("--exact", "kern.critical"),
            ("--all",),
            ("--header", f"host={host}", "--header", "app=nobody", "--match", "any"),
        )
    ]
    for subscription in subscriptions:
        subscription.wait_ready()
    proc = emit(amqp_url, deployment, "kern.critical", "disk failed", "--host", host)
    assert proc.returncode == 0, proc.stderr
    for subscription in subscriptions:
        assert subscription.finish() == 0, subscription.stderr
        [record] = subscription.records
        assert (record["message"], record["host"]) == ("disk failed", host)


def test_a_plain_pika_publishers_text_is_printed_as_a_record(amqp_url, deployment):
    """A plain-text body published with key kern.critical prints as that record."""
    subscription = start(amqp_url, deployment, "*.critical", "--count", "1", "--json")
    publish(amqp_url, deployment.name("logbus.topic"), "kern.critical", b"disk /dev/sda1 failed")
    assert subscription.finish() == 0, subscription.stderr
    [record] = subscription.records
    assert (record["facility"], record["severity"]) == ("kern", "critical")
    assert record["message"] == "disk /dev/sda1 failed"


def test_plain_bodies_print_as_records_with_their_key(amqp_url, deployment):
    """Invalid UTF-8, text starting with '{' and a bare number each print as a record,
    its routing key in "key", the exact bytes of the first in fields.body_base64."""
    subscription = start(amqp_url, deployment, "kern.*", "--count", "3", "--json")
    topic = deployment.name("logbus.topic")
    publish(amqp_url, topic, "kern.info", b"\xff\xfe not text")
    publish(amqp_url, topic, "kern.Error", b"{worker-3} crashed")
    publish(amqp_url, topic, "kern.warn", b"42")
    assert subscription.finish() == 0, subscription.stderr
    got = [(r["message"], r["key"], r["severity"]) for r in subscription.records]
    assert got == [
        ("\\xff\\xfe not text", "kern.info", "info"),
        ("{worker-3} crashed", "kern.Error", "error"),
        ("42", "kern.warn", "warning"),
    ]
    assert subscription.records[0]["fields"] == {"body_base64": "//4gbm90IHRleHQ="}
    assert "Traceback" not in subscription.stderr


def test_timeout_before_count_exits_75(amqp_url, deployment):
    """--timeout passing before --count records arrived exits 75 saying how many came."""
    subscription = start(amqp_url, deployment, "kern.*", "--count", "2", "--timeout", "1")
    assert subscription.finish() == 75
    assert "timed out after 1s with 0 of 2 records" in subscription.stderr


def test_timeout_without_count_exits_0(amqp_url, deployment):
    """Without --count, --timeout is a listening window: it ends with exit 0."""
    subscription = start(amqp_url, deployment, "kern.*", "--timeout", "0.5", "--json")
    assert subscription.finish() == 0, subscription.stderr


def test_a_durable_subscription_keeps_records_while_the_subscriber_is_away(amqp_url, deployment):
    """--queue NAME --durable: a record emitted between two runs is printed by the second."""
    name = deployment.name("audit")
    deployment.extra_queues.append(name)
    args = ("auth.*", "--queue", name, "--durable", "--count", "1", "--json")
    first = start(amqp_url, deployment, *args)
    assert emit(amqp_url, deployment, "auth.info", "before").returncode == 0
    assert first.finish() == 0, first.stderr
    assert emit(amqp_url, deployment, "auth.info", "while away").returncode == 0
    second = start(amqp_url, deployment, *args)
    assert second.finish() == 0, second.stderr
    assert [r["message"] for r in first.records + second.records] == ["before", "while away"]


def test_a_deleted_queue_ends_the_subscription_with_75(amqp_url, deployment, admin):
    """When the broker deletes the subscription's queue, subscribe exits 75 saying so."""
    name = deployment.name("doomed")
    subscription = start(amqp_url, deployment, "kern.*", "--queue", name, "--json")
    admin.queue_delete(name)
    assert subscription.finish() == 75
    assert "the broker ended the subscription" in subscription.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_an_open_subscription_cleanly(amqp_url, deployment, signum):
    """SIGINT or SIGTERM without --count stops the subscriber with exit 0 and no traceback."""
    subscription = start(amqp_url, deployment, "kern.*", "--json")
    subscription.proc.send_signal(signum)
    assert subscription.finish() == 0, subscription.stderr
    assert "Traceback" not in subscription.stderr


def test_a_signal_before_count_exits_128_plus_its_number(amqp_url, deployment):
    """SIGINT before --count records arrived exits 130, saying how many came."""
    subscription = start(amqp_url, deployment, "kern.*", "--count", "3", "--json")
    subscription.proc.send_signal(signal.SIGINT)
    assert subscription.finish() == 130
    assert "stopped by SIGINT after 0 of 3 records" in subscription.stderr
    assert "Traceback" not in subscription.stderr


def test_nothing_to_bind_is_a_usage_error(amqp_url, deployment):
    """No key, severity, exact key, header or --all: exit 2 with one line naming --help."""
    subscription = Subscription(amqp_url, deployment, "--json")
    assert subscription.finish() == 2
    assert subscription.stderr.startswith("logbus subscribe: error: ")
    assert len(subscription.stderr.strip().splitlines()) == 1  # one line, naming --help
    assert "logbus subscribe --help" in subscription.stderr
    assert "nothing to subscribe to" in subscription.stderr


def test_on_a_terminal_a_record_is_one_human_line(amqp_url, deployment):
    """On a TTY the record is a coloured line with key and message, not JSON."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "logbus", "subscribe", "--severity", "crit", "--count", "1"),
            *connection_args(amqp_url, deployment),
        ],
        stdout=follower,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    assert proc.stderr is not None
    assert proc.stderr.readline().startswith(READY)
    assert emit(amqp_url, deployment, "kern.crit", "disk failed", "--field", "n:=1").returncode == 0
    screen = b""
    while b"\n" not in screen:
        try:
            screen += os.read(leader, 4096)
        except OSError:
            break
    assert proc.wait(15) == 0
    os.close(leader)
    line = screen.decode()
    assert "\x1b[" in line  # coloured
    assert "kern.critical" in line
    assert "disk failed" in line
    assert "n=1" in line
    assert not line.lstrip().startswith("{")
