"""History on the local 3-node cluster: a stream replicated on every node keeps its history
through the loss of a node that no majority needs.

The test declares a stream of its own (three replicas), emits records into it,
replays them with ``logbus subscribe --since ... --until 0s`` (a real
subprocess given every node's URL), kills -9 a replica that does not lead the
stream, replays again, and compares; ``cluster_healthy`` restarts the node.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from time import monotonic

import pytest

from logbus import Emitter
from logbus.topology import load
from tests.cluster_broker import NODES, LocalCluster
from tests.integration.test_cluster import cluster_healthy  # noqa: F401 - a fixture

pytestmark = [pytest.mark.faults, pytest.mark.cluster]

RECORDS = 300


def _topology(path: Path, name: str) -> Path:
    path.write_text(
        f"""
[[exchanges]]
name = "{name}.topic"
type = "topic"

[[queues]]
name = "{name}.history"
queue_type = "stream"
max_age = "1D"
arguments = {{ "x-initial-cluster-size" = 3 }}

[[bindings]]
source = "{name}.topic"
destination = "{name}.history"
routing_key = "#"

[[emit]]
exchange = "{name}.topic"
"""
    )
    return path


def _replay(url: str, config: Path) -> list[str]:
    """The ids ``logbus subscribe --since 1h --until 0s 'kern.*'`` prints, in order."""
    env = {**os.environ}
    env.pop("LOGBUS_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "logbus", "subscribe", "--since", "1h", "--until", "0s",
         "--json", "kern.*", "--url", url, "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["id"] for line in done.stdout.splitlines()]


def _replicated(cluster: LocalCluster, queue: str, timeout: float = 30.0) -> dict[str, object]:
    """The management API's view of ``queue`` once it lists every node's replica online."""
    deadline = monotonic() + timeout
    while True:
        found = cluster.queue(queue)
        if sorted(found.get("online") or []) == sorted(cluster.node_names.values()):  # type: ignore[call-overload]
            return found
        assert monotonic() < deadline, f"not every replica of {queue} online: {found.get('online')}"
        threading.Event().wait(0.5)


def test_since_after_a_node_loss_replays_the_same_history(
    cluster_healthy: LocalCluster,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    """The kern records replayed before and after kill -9 of a non-leading replica are equal."""
    cluster = cluster_healthy
    name = f"hist-{uuid.uuid4().hex[:8]}"
    config = _topology(tmp_path / "history.toml", name)
    with Emitter(cluster.failover_url, topology=load(config)) as emitter:
        for i in range(RECORDS):
            emitter.emit("kern.info" if i % 3 else "mail.info", f"rec-{i:04d}")
    before = _replay(cluster.failover_url, config)
    assert len(before) == RECORDS - len(range(0, RECORDS, 3))
    stream = _replicated(cluster, f"{name}.history")
    leader = cluster.node_of(str(stream["node"]))  # a stream's writer is its "node"
    victim = next(n for n in NODES if n != leader)
    cluster.kill(victim)
    try:
        assert _replay(cluster.failover_url, config) == before
    finally:
        cluster.start(victim)
        from logbus.transports import connect

        with connect(cluster.urls[leader]) as transport:
            transport.delete_queue(f"{name}.history")
            transport.delete_exchange(f"{name}.topic")
