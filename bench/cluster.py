"""What replication costs: the local 3-node cluster against one node, in one run.

Run as ``python bench/cluster.py`` after ``scripts/local-cluster up``. Every figure
is measured in this run and printed next to its baseline as a ratio:

emit (records/s, logbus.Emitter.emit_many: confirmed, persistent, pipelined):
  classic-1       a classic durable queue, the client on node 1 only (one node's disk)
  quorum-3        a quorum queue (config/cluster.toml's), the client given all three nodes:
                  a confirm means a majority (2 of 3) wrote the record to their Raft logs
drain (records/s, acking each, default prefetch):
  classic-1       two logbus consumers on node 1, one classic queue
  quorum-3        three logbus consumers, one per node, one quorum queue: the leader hands
                  out every delivery, whichever node a consumer is on

What bounds each: quorum-3 emit is bound by the leader's Raft round trips (replicating
to a follower and both fsyncing) and by three VMs sharing two cores; classic-1 emit by
one node's fsync and its single scheduler. Drain on a quorum queue is bound by the
leader (every ack is a Raft command too), not by the number of consumers. The nodes run
one scheduler each (+S 1:1, scripts/local-cluster), so on bigger machines both rise.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from logbus import Emitter, LogRecord
from logbus.settings import Settings
from logbus.topology import EmitTarget, Queue, Topology
from logbus.transports import DEFAULT_PREFETCH, connect

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local-cluster"
COUNT = 20_000
RECORDS = [
    LogRecord(facility="kern", severity="info", message=f"disk check {i}") for i in range(COUNT)
]


def cluster_urls() -> dict[str, str]:
    """The cluster's URLs, as ``scripts/local-cluster env`` prints them (started if needed)."""
    subprocess.run([str(SCRIPT), "up"], check=True, capture_output=True)
    env = subprocess.run([str(SCRIPT), "env"], check=True, capture_output=True, text=True)
    return dict(line.split("=", 1) for line in env.stdout.splitlines() if "=" in line)


def topology_for(queue: str, quorum: bool) -> Topology:
    """Records go through the default exchange straight into ``queue``."""
    if quorum:
        made = Queue(
            name=queue,
            queue_type="quorum",
            overflow="reject-publish",
            dead_letter_strategy="at-least-once",
        )
    else:
        made = Queue(name=queue)
    return Topology(exchanges=(), queues=(made,), bindings=(), emit=(EmitTarget("", queue),))


def emit(url: str, queue: str, quorum: bool) -> float:
    """Records/s of one confirmed emit_many of COUNT records into ``queue``."""
    topology = topology_for(queue, quorum)
    with Emitter(url, topology=topology, settings=Settings(url=url)) as emitter:
        started = time.perf_counter()
        emitter.emit_many(RECORDS)
        return COUNT / (time.perf_counter() - started)


def drain(urls: list[str], queue: str) -> float:
    """Records/s of one consumer per URL draining COUNT records from ``queue``, acking each."""
    got = [0] * len(urls)
    done = threading.Event()

    def consume(i: int) -> None:
        transport = connect(urls[i])
        consumer = transport.consume(queue, prefetch=DEFAULT_PREFETCH)
        while not done.is_set():
            delivery = consumer.get(timeout=0.05)
            if delivery is None:
                continue
            delivery.ack()
            got[i] += 1
            if sum(got) >= COUNT:
                done.set()
        consumer.cancel()
        transport.close()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(urls))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    done.wait(300)
    elapsed = time.perf_counter() - started
    for thread in threads:
        thread.join(30)
    return sum(got) / elapsed


def main() -> None:
    """Emit then drain on one node and on the cluster; print the rates and their ratios."""
    env = cluster_urls()
    node1, everyone = env["LOGBUS_CLUSTER_URL_1"], env["LOGBUS_CLUSTER_URLS"]
    per_node = [env[f"LOGBUS_CLUSTER_URL_{i}"] for i in (1, 2, 3)]
    classic, quorum = (
        f"bench-classic-{uuid.uuid4().hex[:6]}",
        f"bench-quorum-{uuid.uuid4().hex[:6]}",
    )
    try:
        print(f"# confirmed emit of {COUNT:,} persistent records")
        emit_classic = emit(node1, classic, quorum=False)
        emit_quorum = emit(everyone, quorum, quorum=True)
        print(f"classic-1  {emit_classic:>10,.0f} records/s")
        print(f"quorum-3   {emit_quorum:>10,.0f} records/s")
        print(f"quorum-3 / classic-1 = {emit_quorum / emit_classic:.2f}x (the price of a majority)")
        print()
        print(f"# drain of {COUNT:,} records, acking each")
        drain_classic = drain([node1, node1], classic)
        drain_quorum = drain(per_node, quorum)
        print(f"classic-1  {drain_classic:>10,.0f} records/s (2 consumers on node 1)")
        print(f"quorum-3   {drain_quorum:>10,.0f} records/s (1 consumer per node)")
        print(f"quorum-3 / classic-1 = {drain_quorum / drain_classic:.2f}x (bound by the leader)")
    finally:
        transport = connect(node1)
        for queue in (classic, quorum):
            transport.delete_queue(queue)
        transport.close()


if __name__ == "__main__":
    sys.exit(main())
