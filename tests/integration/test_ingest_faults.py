"""``logbus ingest`` through faults on the private RabbitMQ node: nothing lost.

- the broker killed (``kill -9``) and restarted in the middle of a 100,000-line
  loggen stream over TCP: every line arrives (duplicates counted and printed);
- the broker down for ``LOGBUS_INGEST_OUTAGE`` seconds (default 20; the issue
  measured syslog-ng over 60) with ``--spool``: every line arrives, in order;
- rsyslog forwarding over RELP while the gateway itself is SIGKILLed and
  started again: rsyslog sends again what was not answered, nothing is lost.

Lines are counted by their loggen sequence number at a plain pika consumer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from time import monotonic
from typing import Any

import pika
import pytest

from tests.ingest_support import Consumer, free_port, ingest_topology, start_gateway, tasks_queue
from tests.private_broker import PrivateBroker, _script

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

OUTAGE = float(os.environ.get("LOGBUS_INGEST_OUTAGE", "20"))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("LOGBUS_REQUIRE_BROKER") == "1":
            pytest.fail(f"{name} is not installed: run scripts/ensure-packages", pytrace=False)
        pytest.skip(f"{name} is not installed")
    return path


@pytest.fixture
def bus(
    healthy_private_broker: PrivateBroker, unique_name: str, tmp_path: Path
) -> Iterator[tuple[Path, str, str]]:
    """This test's topology on the private node: (config file, URL, work queue)."""
    url = healthy_private_broker.url
    with ingest_topology(url, unique_name + ".", tmp_path, durable=True) as (config, topology):
        yield config, url, tasks_queue(topology)


def _depth(url: str, queue: str) -> int:
    try:
        connection = pika.BlockingConnection(pika.URLParameters(url))
    except pika.exceptions.AMQPError:
        return -1
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def _wait_for_depth(url: str, queue: str, depth: int, timeout: float = 120.0) -> None:
    deadline = monotonic() + timeout
    while (seen := _depth(url, queue)) < depth:
        assert monotonic() < deadline, f"the queue held {seen}, never {depth} records"
        threading.Event().wait(0.2)


def _loggen(port: int, count: int, rate: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [_tool("loggen"), "-S", "-P", "-n", str(count), "-r", str(rate), "-I", "3600",
         "-s", "150", "-Q", "127.0.0.1", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _sequence(record: dict[str, Any]) -> int:
    return int(record["message"].split(",")[0].split()[1])


def _count(url: str, queue: str, expected: int) -> tuple[list[int], Counter[int]]:
    consumer = Consumer(url, queue)
    try:
        records = consumer.take(expected * 2, timeout=10.0)
    finally:
        consumer.close()
    sequence = [_sequence(r) for r in records]
    return sequence, Counter(sequence)


def test_a_broker_killed_mid_stream_loses_no_line(bus, private_broker: PrivateBroker) -> None:
    """kill -9 of RabbitMQ during 100,000 loggen lines over TCP, then a restart: 0 lost."""
    config, url, queue = bus
    total = 100_000
    gateway = start_gateway(config, url, "tcp")
    try:
        sender = _loggen(gateway.port("tcp"), total, 10_000)
        _wait_for_depth(url, queue, 20_000)
        _script("kill")
        private_broker.start()
        assert sender.wait(300) == 0
        _wait_for_depth(url, queue, total, timeout=300)
    finally:
        assert gateway.stop() == 0
    _, seen = _count(url, queue, total)
    duplicates = sum(n - 1 for n in seen.values())
    missing = sorted(set(range(total)) - set(seen))
    print(f"\nbroker kill -9 mid-stream: {len(seen)} of {total} lines, {duplicates} duplicates")
    print(f"missing: {missing[:20]}, duplicated: {[k for k, n in seen.items() if n > 1][:20]}")
    assert sorted(seen) == list(range(total))


def test_a_broker_down_with_a_spool_loses_no_line_and_keeps_order(
    bus, private_broker: PrivateBroker, tmp_path: Path
) -> None:
    """--spool: the broker stopped for OUTAGE seconds mid-stream; every line, in order."""
    config, url, queue = bus
    total = 30_000
    gateway = start_gateway(
        config, url, "tcp", extra=("--spool", str(tmp_path / "spool"), "--spool-fsync", "second")
    )
    try:
        sender = _loggen(gateway.port("tcp"), total, 2_000)
        _wait_for_depth(url, queue, 2_000)
        private_broker.stop()
        stopped = monotonic()
        spool = tmp_path / "spool"
        while monotonic() - stopped < OUTAGE:  # the outage itself
            threading.Event().wait(0.5)
        assert sum(p.stat().st_size for p in spool.glob("seg-*.log")) > 0, "nothing spooled"
        private_broker.start()
        assert sender.wait(300) == 0
        _wait_for_depth(url, queue, total, timeout=300)
    finally:
        assert gateway.stop() == 0
    sequence, seen = _count(url, queue, total)
    first_seen = list(dict.fromkeys(sequence))
    duplicates = len(sequence) - len(first_seen)
    print(f"\nbroker down {OUTAGE:.0f} s with --spool: {len(seen)} of {total}, {duplicates} dup")
    assert sorted(seen) == list(range(total))
    assert first_seen == sorted(first_seen), "lines arrived out of order"


def test_rsyslog_over_relp_loses_nothing_when_the_gateway_is_killed(bus, tmp_path: Path) -> None:
    """loggen -> rsyslog (imtcp) -> omrelp -> gateway, SIGKILLed mid-stream and restarted."""
    config, url, queue = bus
    rsyslogd = _tool("rsyslogd")
    total = 20_000
    relp_port, in_port = free_port(), free_port()
    work = tmp_path / "rsyslog"
    work.mkdir()
    conf = work / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{work}")\n'
        'module(load="imtcp")\n'
        f'input(type="imtcp" address="127.0.0.1" port="{in_port}")\n'
        'module(load="omrelp")\n'
        f'action(type="omrelp" target="127.0.0.1" port="{relp_port}" '
        'template="RSYSLOG_SyslogProtocol23Format" action.resumeRetryCount="-1" '
        'action.resumeInterval="1" queue.type="LinkedList" queue.size="200000")\n'
    )
    relp = f"relp:127.0.0.1:{relp_port}"
    gateway = start_gateway(config, url, relp)
    rsyslog = subprocess.Popen(
        [rsyslogd, "-n", "-f", str(conf), "-i", str(work / "pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(in_port)
        sender = _loggen(in_port, total, 4_000)
        _wait_for_depth(url, queue, 3_000)
        gateway.kill()
        gateway = start_gateway(config, url, relp)
        assert sender.wait(300) == 0
        _wait_for_depth(url, queue, total, timeout=300)
    finally:
        rsyslog.terminate()
        rsyslog.wait(30)
        gateway.stop()
    sequence, seen = _count(url, queue, total)
    duplicates = len(sequence) - len(seen)
    print(f"\nRELP, gateway SIGKILLed: {len(seen)} of {total} lines, {duplicates} duplicates")
    assert sorted(seen) == list(range(total))


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    import socket

    deadline = monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            assert monotonic() < deadline, f"nothing listens on {port}"
