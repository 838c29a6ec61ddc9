"""TLS for real: ``amqps://`` to the private node's TLS listener, on every path.

The node's certificate is signed by a CA the test run made (unknown to the
system) and names ``DNS:localhost`` only. ``amqps://`` verifies by default: an
unknown CA and a wrong host name are refused in one line naming the cause (69,
BrokerUnavailable), ``?cafile=`` with the right name publishes, confirmed — on
the sync path (Emitter, ``logbus emit``) and the async one (AsyncEmitter) alike.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from logbus import AsyncEmitter, Emitter
from logbus.errors import BrokerUnavailable, LogbusError
from logbus.topology import EmitTarget, Queue, Topology, dumps
from logbus.transports import connect
from tests.private_broker import PrivateBroker

pytestmark = pytest.mark.faults

PASSWORD = "tls-s3cret"  # refused before any login: it must not show either


def _sync(url: str, topology: Topology, _config: Path) -> str | None:
    """Emit one record with Emitter; None when confirmed, else the error line."""
    try:
        with Emitter(url, topology=topology) as emitter:
            emitter.emit("kern.info", "over tls")
    except LogbusError as exc:
        assert isinstance(exc, BrokerUnavailable), repr(exc)
        return str(exc)
    return None


def _async(url: str, topology: Topology, _config: Path) -> str | None:
    """Emit one record with AsyncEmitter; None when confirmed, else the error line."""

    async def run() -> None:
        async with AsyncEmitter(url, topology=topology) as emitter:
            await emitter.emit("kern.info", "over tls")

    try:
        asyncio.run(run())
    except LogbusError as exc:
        assert isinstance(exc, BrokerUnavailable), repr(exc)
        return str(exc)
    return None


def _cli(url: str, _topology: Topology, config: Path) -> str | None:
    """``logbus emit``; None on exit 0, else its one error line (after checking exit 69)."""
    proc = subprocess.run(
        [sys.executable, "-m", "logbus", "emit", "kern.info", "over tls", "--url", url,
         "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "LOGBUS_CONNECT_TIMEOUT": "5"},
    )  # fmt: skip
    if proc.returncode == 0:
        assert proc.stderr == ""
        return None
    assert proc.returncode == 69, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


PATHS: dict[str, Callable[[str, Topology, Path], str | None]] = {
    "emitter": _sync,
    "async-emitter": _async,
    "cli": _cli,
}


@pytest.fixture
def target(private_broker: PrivateBroker, tmp_path: Path) -> Iterator[tuple[Topology, Path, str]]:
    """A queue of its own on the private node, emitted to straight; its topology file."""
    queue = f"test-tls-{secrets.token_hex(4)}"
    topology = Topology(
        queues=(Queue(name=queue, durable=False),), emit=(EmitTarget(exchange="", key=queue),)
    )
    config = tmp_path / "tls.toml"
    config.write_text(dumps(topology))
    yield topology, config, queue
    with connect(private_broker.url) as transport:
        transport.delete_queue(queue)


def _tls_url(broker: PrivateBroker, host: str, *, cafile: str | None, password: str) -> str:
    url = broker.tls_url(host).replace("guest:guest@", f"guest:{password}@")
    return url if cafile is None else f"{url}?cafile={cafile}"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_an_unknown_ca_is_refused_in_one_line(path, private_broker, target):
    """No cafile: the test CA is unknown to the system, so the certificate is refused."""
    topology, config, _queue = target
    url = _tls_url(private_broker, "localhost", cafile=None, password=PASSWORD)
    error = PATHS[path](url, topology, config)
    assert error is not None
    assert "certificate verify failed" in error
    assert "cafile" in error  # says what to do
    assert PASSWORD not in error


@pytest.mark.parametrize("path", sorted(PATHS))
def test_a_wrong_host_name_is_refused_in_one_line(path, private_broker, target):
    """The CA is trusted but 127.0.0.1 is not the name on the certificate: refused."""
    topology, config, _queue = target
    url = _tls_url(private_broker, "127.0.0.1", cafile=private_broker.ca_file, password=PASSWORD)
    error = PATHS[path](url, topology, config)
    assert error is not None
    assert "certificate verify failed" in error and "mismatch" in error
    assert PASSWORD not in error


@pytest.mark.parametrize("path", sorted(PATHS))
def test_cafile_and_the_right_host_name_publish_confirmed(path, private_broker, target):
    """?cafile= with host localhost: accepted, the record confirmed and in the queue."""
    topology, config, queue = target
    url = _tls_url(private_broker, "localhost", cafile=private_broker.ca_file, password="guest")
    assert PATHS[path](url, topology, config) is None
    with connect(private_broker.url) as transport:
        delivery = transport.get(queue)
    assert delivery is not None
    assert b"over tls" in delivery.body
