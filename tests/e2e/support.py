"""What the end-to-end tests share: per-test topologies, runners, and ways to look.

Fixtures built on these live in ``conftest.py``; the tests import the helpers.
"""

from __future__ import annotations

import contextlib
import os
import pty
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from logbus.errors import NotFound
from logbus.management import ManagementUnavailable, management_api
from logbus.topology import Topology
from logbus.transports import connect
from tests.support import require_or_skip

DEAD_URL = "amqp://guest:not-this-s3cret@127.0.0.1:1/%2F"


@dataclass
class Deployment:
    """One test's topology: its TOML file, its names, and a pika channel to look with."""

    config: Path
    topology: Topology
    prefix: str
    channel: Any
    extra_queues: list[str] = field(default_factory=list)

    def name(self, base: str) -> str:
        """The test's name for a default-topology entity, e.g. ``logbus.topic``."""
        return self.prefix + base

    @property
    def tasks(self) -> str:
        return self.name("logbus.tasks")

    def depth(self, queue: str | None = None) -> int:
        """How many messages a queue holds (the work queue by default)."""
        declared = self.channel.queue_declare(queue or self.tasks, passive=True)
        return int(declared.method.message_count)

    def drain(self, queue: str | None = None) -> list[tuple[Any, bytes]]:
        """Take every message from a queue: (properties, body) pairs."""
        out = []
        while True:
            method, properties, body = self.channel.basic_get(queue or self.tasks, auto_ack=True)
            if method is None:
                return out
            out.append((properties, body))


def emit(
    amqp_url: str, deployment: Deployment, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``logbus emit ARGS --url URL --config FILE``; stdin is empty unless given."""
    return subprocess.run(
        [sys.executable, "-m", "logbus", "emit", *args, *connection_args(amqp_url, deployment)],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def connection_args(amqp_url: str, deployment: Deployment) -> list[str]:
    """``--url`` and ``--config`` for this test's broker and topology."""
    return ["--url", amqp_url, "--config", str(deployment.config)]


def one_error_line(stderr: str) -> str:
    """The single error line, asserting there is one and no traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def free_port() -> int:
    """A local TCP port nothing listens on (it was free a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def management_env(amqp_url: str, via: str) -> dict[str, str]:
    """LOGBUS_MANAGEMENT_URL for ``via``: the real API (skip if it does not answer, fail
    under LOGBUS_REQUIRE_BROKER=1 or LOGBUS_REQUIRE_MANAGEMENT=1) or a closed port, so that
    the command falls back to AMQP."""
    if via == "amqp":
        return {"LOGBUS_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}"}
    api = management_api(amqp_url)
    try:
        if api is None:
            raise ManagementUnavailable("not an AMQP URL")
        api.get("/api/overview")
    except ManagementUnavailable as exc:
        require_or_skip(
            f"the management plugin does not answer: {exc}", "LOGBUS_REQUIRE_MANAGEMENT"
        )
    return {"LOGBUS_MANAGEMENT_URL": api.base}  # credentials: the AMQP URL's


def remove(amqp_url: str, topology: Topology) -> None:
    """Delete the topology's queues and exchanges (bindings go with them)."""
    with connect(amqp_url) as transport:
        for q in topology.queues:
            with contextlib.suppress(NotFound):
                transport.delete_queue(q.name)
        for e in reversed(topology.exchanges):
            with contextlib.suppress(NotFound):
                transport.delete_exchange(e.name)


def on_tty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``logbus ARGS`` with stdout on a pseudo-terminal; (exit status, screen)."""
    code, screen, _ = on_terminal(args, env)
    return code, screen


def on_terminal(
    args: list[str], env: dict[str, str], *, stream: Literal["stdout", "stderr"] = "stdout"
) -> tuple[int, str, str]:
    """Run ``logbus ARGS`` with ``stream`` on a pseudo-terminal and the other one piped:
    (exit status, screen, the piped stream's text), so that a test sees both what a
    terminal shows and what stays clean for a pipe."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "logbus", *args],
        stdout=follower if stream == "stdout" else subprocess.PIPE,
        stderr=follower if stream == "stderr" else subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **env},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out, err = proc.communicate(timeout=60)
    os.close(leader)
    other = err if stream == "stdout" else out
    return proc.returncode, b"".join(chunks).decode(errors="replace"), other.decode()


@dataclass
class Scratch:
    """A test's own topology: its file, its model, and the environment that selects both."""

    path: Path
    topology: Topology
    env: dict[str, str]
