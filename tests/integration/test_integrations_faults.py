"""The logging handler while the broker is stopped and started again (the private node).

A real program (``integrations_app.py``, a subprocess configured by ``dictConfig``)
logs 100,000 lines; between its first and second phase the test stops the private
RabbitMQ, and starts it again while the program goes on logging. The records are
then counted in a durable queue, by line number (at least once: a record re-sent
after the restart may arrive twice, with the same id and line).

- ``policy="block"``: every line arrives, and nothing is counted as dropped.
- ``policy="drop"``: the lines that arrived and the handler's ``dropped`` counter add
  up to 100,000 exactly, the outage did drop some, and every line logged after the
  broker was back (the third phase) arrived: the handler reconnected by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pika
import pytest

from logbus.topology import dumps
from tests.integration.test_integrations import own_topology
from tests.private_broker import PrivateBroker

# Two restarts of a node and 100,000 records each way: minutes, not the default two.
pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(600)]

APP = Path(__file__).with_name("integrations_app.py")
TOTAL = 100_000
LAST_PHASE = range(70_000, TOTAL)  # logged once the broker is back (integrations_app.PHASES)


def line_of(stream: IO[str], proc: subprocess.Popen[str]) -> str:
    """The program's next line on stdout; fails with its stderr if it ended instead."""
    line = stream.readline()
    if not line:
        proc.wait(30)
        assert proc.stderr is not None
        raise AssertionError(f"the program ended ({proc.returncode}): {proc.stderr.read()[-2000:]}")
    return line.strip()


def delivered_lines(url: str, queue: str) -> list[int]:
    """The line number of every record in ``queue`` (duplicates included), emptying it."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        depth = channel.queue_declare(queue, passive=True).method.message_count
        channel.basic_qos(prefetch_count=2000)
        lines: list[int] = []
        for _method, _properties, body in channel.consume(
            queue, auto_ack=True, inactivity_timeout=10
        ):
            if body is None:
                break
            lines.append(int(json.loads(body)["message"].removeprefix("line ")))
            if len(lines) == depth:
                break
        channel.cancel()
        return lines
    finally:
        connection.close()


@pytest.fixture
def durable_bus(private_broker: PrivateBroker, unique_name: str, tmp_path: Path) -> Iterator[Path]:
    """A durable exchange and queue of this test's on the private node (they outlive the
    restart), as a topology file the program's handler declares; deleted afterwards."""
    path = tmp_path / "topology.toml"
    path.write_text(dumps(own_topology(unique_name, durable=True)))
    yield path
    connection = pika.BlockingConnection(pika.URLParameters(private_broker.url))
    try:
        channel = connection.channel()
        channel.queue_delete(unique_name)
        channel.exchange_delete(f"{unique_name}.topic")
    finally:
        connection.close()


def run_through_outage(
    broker: PrivateBroker, topology: Path, policy: str, buffer_size: int
) -> dict[str, Any]:
    """Run the program, stopping the broker after its first phase and starting it again
    while it logs the second; its counters."""
    proc = subprocess.Popen(
        [sys.executable, str(APP), broker.url, str(topology), policy, str(buffer_size)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert line_of(proc.stdout, proc) == "ready"
        broker.stop()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        broker.start()  # the program logs phase 2 meanwhile, into a broker that is away
        assert line_of(proc.stdout, proc) == "logged"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        counters: dict[str, Any] = json.loads(line_of(proc.stdout, proc))
        assert proc.wait(120) == 0
        return counters
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        broker.start()  # idempotent when it runs; never leave the node stopped


def test_block_policy_delivers_every_line_through_a_restart(
    private_broker: PrivateBroker, durable_bus: Path, unique_name: str
) -> None:
    """Under "block" the program waits while the buffer is full; nothing is lost."""
    counters = run_through_outage(private_broker, durable_bus, "block", 5_000)
    lines = delivered_lines(private_broker.url, unique_name)
    missing = set(range(TOTAL)) - set(lines)
    assert not missing, f"{len(missing)} lines never arrived, e.g. {sorted(missing)[:5]}"
    assert counters == {"sent": TOTAL, "dropped": 0, "failed": 0}
    print(f"block: {len(lines) - TOTAL} duplicates after the restart")


def test_drop_policy_counts_exactly_what_it_dropped(
    private_broker: PrivateBroker, durable_bus: Path, unique_name: str
) -> None:
    """Under "drop" the program never waits; delivered + dropped is every line."""
    counters = run_through_outage(private_broker, durable_bus, "drop", 30_000)
    lines = set(delivered_lines(private_broker.url, unique_name))
    assert counters["failed"] == 0
    assert counters["dropped"] > 0, "the outage dropped nothing: the broker was not away"
    assert len(lines) + counters["dropped"] == TOTAL
    assert counters["sent"] == len(lines)
    assert set(LAST_PHASE) <= lines, "lines logged after the restart are missing"
