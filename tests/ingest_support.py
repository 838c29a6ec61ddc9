"""Helpers for the ingest tests: a ``logbus ingest`` subprocess, a topology, a plain consumer.

The gateway runs as the real command line (``python -m logbus ingest``) with
every listener on port 0; its "listening on" lines say where each one is. The
records are read back with plain pika, as any other AMQP client would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import monotonic
from typing import Any

import pika

from logbus.demo import demo_topology
from logbus.topology import Topology, declare, dumps
from logbus.transports import connect


class Gateway:
    """A running ``logbus ingest``: its listeners' addresses, and stopping it."""

    def __init__(self, process: subprocess.Popen[str], addresses: dict[str, tuple[str, int]]):
        self.process = process
        self.addresses = addresses

    def port(self, kind: str) -> int:
        return self.addresses[kind][1]

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit status once it drained."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


def start_gateway(
    config: Path, url: str, *listeners: str, extra: tuple[str, ...] = (), log: Path | None = None
) -> Gateway:
    """Start ``logbus ingest`` with ``listeners`` (``"tcp"``, ``"udp"``, ``"unix:/path"``...),
    each on a free port, and wait until all of them listen."""
    args = []
    for spec in listeners:
        kind, _, where = spec.partition(":")
        args += [f"--{kind}", where or "127.0.0.1:0"]
    stderr = open(log, "w") if log is not None else None  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "logbus",
            "ingest",
            "--config",
            str(config),
            "--url",
            url,
            *args,
            *list(extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    addresses: dict[str, tuple[str, int]] = {}
    seen: list[str] = []
    assert process.stderr is not None
    while len(addresses) < len(listeners):
        line = process.stderr.readline()
        if not line:
            raise AssertionError(f"logbus ingest exited: {''.join(seen)}")
        seen.append(line)
        if "listening on" in line:
            kind, where = line.split("listening on ", 1)[1].split()
            host, _, port = where.rpartition(":")
            addresses[kind] = (host, int(port)) if kind != "unix" else (where, 0)
    if stderr is not None:
        _copy_in_background(process, stderr)
    else:
        _copy_in_background(process, None)
    return Gateway(process, addresses)


def _copy_in_background(process: subprocess.Popen[str], sink: Any) -> None:
    """Keep reading the gateway's stderr, so it never blocks on a full pipe."""
    import threading

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if sink is not None:
                sink.write(line)
                sink.flush()

    threading.Thread(target=pump, daemon=True).start()


@contextmanager
def ingest_topology(
    url: str, prefix: str, tmp_path: Path, *, durable: bool = False
) -> Iterator[tuple[Path, Topology]]:
    """The default topology under ``prefix``, declared and written to a TOML file; removed
    after. ``durable``: exchanges and queues that survive a broker restart, and a work queue
    with no length bound (fault tests count duplicates: a bound would drop the oldest lines)."""
    topology = demo_topology(prefix)
    if durable:
        topology = dataclasses.replace(
            topology,
            exchanges=tuple(dataclasses.replace(e, durable=True) for e in topology.exchanges),
            queues=tuple(
                dataclasses.replace(q, durable=True, max_length=None) for q in topology.queues
            ),
        )
    path = tmp_path / "ingest-topology.toml"
    path.write_text(dumps(topology))
    with connect(url) as transport:
        declare(transport, topology)
    try:
        yield path, topology
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        for queue in topology.queues:
            channel.queue_delete(queue.name)
        for exchange in reversed(topology.exchanges):
            channel.exchange_delete(exchange.name)
        connection.close()


def tasks_queue(topology: Topology) -> str:
    return next(q.name for q in topology.queues if q.name.endswith("logbus.tasks"))


class Consumer:
    """A plain pika consumer of one queue: bodies as JSON, with their routing keys."""

    def __init__(self, url: str, queue: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.queue = queue
        self.records: list[dict[str, Any]] = []
        self.keys: list[str] = []

    def take(
        self,
        count: int,
        timeout: float = 30.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` records arrived in all (deadline ``timeout`` without progress);
        with ``where``, only the records it accepts are kept and counted."""
        progress = monotonic()
        self.channel.basic_qos(prefetch_count=5000)
        for method, _props, body in self.channel.consume(self.queue, inactivity_timeout=0.2):
            if method is not None:
                record = json.loads(body)
                if where is None or where(record):
                    self.records.append(record)
                    self.keys.append(method.routing_key)
                self.channel.basic_ack(method.delivery_tag)
                progress = monotonic()
            if len(self.records) >= count or monotonic() - progress > timeout:
                break
        self.channel.cancel()  # unacked ones go back to the queue
        return self.records

    def close(self) -> None:
        self.connection.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for localhost/127.0.0.1, made with openssl(1)."""
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def stream_in_batches(
    emit_many: Callable[[list[Any]], int],
    take: Callable[[int], tuple[list[Any], bool]],
    progress: Callable[[int], None],
) -> int:
    """A fake link's ``emit_stream``: each take published as one batch, then counted as
    confirmed (what a broker that confirms a batch at once would do)."""
    count, more = 0, True
    while more:
        records, more = take(1000)
        if records:
            emit_many(records)
            count += len(records)
            progress(len(records))
    return count
