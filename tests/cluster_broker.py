"""The local 3-node RabbitMQ cluster: for tests that kill nodes under a running fleet.

``scripts/local-cluster`` runs three nodes on loopback (logbus-c1..c3@localhost,
own ports, data and cookie), joined into one cluster, beside the shared broker on
5672 and the private node, neither of which it touches. The ``local_cluster``
fixture brings it up once per session and hands tests a :class:`LocalCluster` to
act on it: which node leads a queue, kill -9 a node, start it again. Without
``rabbitmq-server`` those tests skip, or fail under ``LOGBUS_REQUIRE_BROKER=1`` (CI).

Tests using it carry the ``cluster`` and ``faults`` markers.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from time import monotonic

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "local-cluster"
NODES = (1, 2, 3)


def _script(*args: str, timeout: float = 240.0) -> str:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"scripts/local-cluster {' '.join(args)} failed: {done.stderr.strip()[-500:]}"
        )
    return done.stdout


@dataclass(frozen=True)
class LocalCluster:
    """The cluster's URLs per node, and the faults a test can inflict on a node."""

    urls: dict[int, str]
    management_urls: dict[int, str]
    node_names: dict[int, str]

    @property
    def failover_url(self) -> str:
        """Every node's URL, comma-separated: what a client of the whole cluster is given."""
        return ",".join(self.urls[i] for i in NODES)

    def node_of(self, name: str) -> int:
        """The index (1, 2, 3) of the node called ``name`` (``logbus-c2@localhost``)."""
        for index, node_name in self.node_names.items():
            if node_name == name:
                return index
        raise AssertionError(f"no cluster node {name!r}")

    def running(self) -> list[int]:
        """The nodes running now, as the cluster sees them."""
        status = _script("status", timeout=60.0)
        line = next(one for one in status.splitlines() if one.startswith("running:"))
        return sorted(self.node_of(name) for name in line.split()[1:])

    def api(self, path: str, via: int | None = None) -> object:
        """GET ``/api/<path>`` from a running node's management API (``via``, else any)."""
        candidates = [via] if via is not None else list(NODES)
        error: Exception | None = None
        for index in candidates:
            request = urllib.request.Request(f"{self.management_urls[index]}/api/{path}")
            request.add_header(
                "Authorization", "Basic " + base64.b64encode(b"guest:guest").decode()
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return json.load(response)
            except OSError as exc:
                error = exc
        raise AssertionError(f"no cluster node answers /api/{path}: {error}")

    def queue(self, name: str) -> dict[str, object]:
        """The management API's view of queue ``name`` in vhost ``/``."""
        found = self.api(f"queues/%2F/{urllib.parse.quote(name, safe='')}")
        assert isinstance(found, dict)
        return found

    def leader(self, queue: str, timeout: float = 30.0) -> int:
        """The node leading quorum queue ``queue`` (waiting for one to be elected)."""
        deadline = monotonic() + timeout
        while True:
            try:
                leader = self.queue(queue).get("leader")
            except AssertionError:
                leader = None
            if isinstance(leader, str) and leader in self.node_names.values():
                return self.node_of(leader)
            if monotonic() > deadline:
                raise AssertionError(f"quorum queue {queue!r} has no leader after {timeout} s")
            threading.Event().wait(0.2)

    def ctl(self, node: int, *args: str) -> str:
        """``rabbitmqctl`` against node ``node``; its output."""
        return _script("ctl", str(node), *args, timeout=60.0)

    def kill(self, node: int) -> None:
        """kill -9 node ``node``'s VM (its data stays)."""
        _script("kill", str(node))

    def start(self, node: int) -> None:
        """Start node ``node`` on its data and wait until it answers and has rejoined."""
        _script("start", str(node))

    def up(self) -> None:
        """Every node running and joined (a no-op when they are)."""
        _script("up")


def _unavailable(reason: str) -> None:
    if os.environ.get("LOGBUS_REQUIRE_BROKER") == "1":
        pytest.fail(f"LOGBUS_REQUIRE_BROKER=1 but no local cluster: {reason}", pytrace=False)
    pytest.skip(f"no local RabbitMQ cluster: {reason}")


@pytest.fixture(scope="session")
def local_cluster() -> LocalCluster:
    """The local 3-node cluster, started and joined if needed (see the module docstring)."""
    if shutil.which("rabbitmq-server") is None and not Path("/usr/lib/rabbitmq/bin").is_dir():
        _unavailable("rabbitmq-server is not installed")
    try:
        _script("up")
        settings = dict(line.split("=", 1) for line in _script("env").splitlines() if "=" in line)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable skips or fails
    return LocalCluster(
        urls={i: settings[f"LOGBUS_CLUSTER_URL_{i}"] for i in NODES},
        management_urls={i: settings[f"LOGBUS_CLUSTER_MANAGEMENT_URL_{i}"] for i in NODES},
        node_names={i: settings[f"LOGBUS_CLUSTER_NODE_{i}"] for i in NODES},
    )
