"""End-to-end tests run the real ``logbus`` command in subprocesses."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from logbus.demo import demo_topology
from logbus.topology import Queue, declare, dumps
from logbus.transports import connect
from logbus.worker.retry import RetryPolicy, retry_queues
from tests.e2e.support import Deployment, Scratch, management_env, remove

Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def logbus() -> Runner:
    """Run ``python -m logbus ARGS`` and return the completed process (text mode)."""

    def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None, **kw):
        return subprocess.run(
            [sys.executable, "-m", "logbus", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
            **kw,
        )

    return run


@pytest.fixture
def admin(amqp_url: str) -> Iterator[Any]:
    """A plain pika channel, to inspect and clean up as any AMQP client would."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    yield connection.channel()
    connection.close()


@pytest.fixture
def deploy(
    tmp_path: Path, unique_name: str, amqp_url: str, admin: Any
) -> Iterator[Callable[..., Deployment]]:
    """Make a deployment (optionally with a bounded work queue); all are deleted after."""
    made: list[Deployment] = []

    def make(*, max_length: int | None = None) -> Deployment:
        prefix = f"{unique_name}-{len(made)}."
        topology = demo_topology(prefix)
        if max_length is not None:
            tasks = Queue(
                name=prefix + "logbus.tasks",
                durable=False,
                max_length=max_length,
                overflow="reject-publish",
            )
            topology = dataclasses.replace(topology, queues=(tasks,))
        config = tmp_path / f"{prefix}toml"
        config.write_text(dumps(topology))
        with connect(amqp_url) as transport:
            declare(transport, topology)
        deployment = Deployment(config, topology, prefix, admin)
        made.append(deployment)
        return deployment

    yield make
    for deployment in reversed(made):
        for queue in [*deployment.extra_queues, *(q.name for q in deployment.topology.queues)]:
            admin.queue_delete(queue)
        for q in deployment.topology.queues:
            # The delay and dead-letter queues a worker on it declared (deleting none is fine).
            for name in retry_queues(q.name, RetryPolicy()):
                admin.queue_delete(name)
        for exchange in reversed(deployment.topology.exchanges):
            admin.exchange_delete(exchange.name)


@pytest.fixture
def deployment(deploy: Callable[..., Deployment]) -> Deployment:
    """This test's own copy of the default topology."""
    return deploy()


@pytest.fixture
def scratch(amqp_url: str, tmp_path: Path, unique_name: str) -> Iterator[Scratch]:
    """The default topology under this test's prefix, written to a TOML file; removed after."""
    topology = demo_topology(f"{unique_name}-")
    path = tmp_path / "logbus.toml"
    path.write_text(dumps(topology))
    yield Scratch(path, topology, {"LOGBUS_URL": amqp_url, "LOGBUS_CONFIG": str(path)})
    remove(amqp_url, topology)


@pytest.fixture(params=["management", "amqp"])
def via(request: pytest.FixtureRequest, amqp_url: str) -> tuple[str, dict[str, str]]:
    """Each way of looking at the broker: the management API, or AMQP passive declares."""
    return request.param, management_env(amqp_url, request.param)


@pytest.fixture
def served() -> Iterator[str]:
    """A ``logbus broker serve --listen SOCK`` subprocess, ready; its ``local://`` URL."""
    directory = tempfile.mkdtemp(prefix="lb-e2e-")  # short: AF_UNIX paths are limited
    sock = os.path.join(directory, "broker.sock")
    server = subprocess.Popen(
        [sys.executable, "-m", "logbus", "broker", "serve", "--listen", sock],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    listening = threading.Event()

    def read() -> None:
        assert server.stderr is not None
        for line in server.stderr:
            if "listening on" in line:
                listening.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert listening.wait(30), "the broker never said it was listening"
        yield f"local://{sock}"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        finally:
            if server.poll() is None:
                server.kill()
            shutil.rmtree(directory, ignore_errors=True)
