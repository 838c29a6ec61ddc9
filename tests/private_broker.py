"""The private RabbitMQ node: for tests that restart, stop, alarm or cut a broker.

``scripts/private-rabbitmq`` starts a node of its own (own name, ports, data and
cookie, distribution on 127.0.0.1) beside the shared broker on 5672, which other
runs use at the same time and which no test may disturb. The ``private_broker``
fixture brings it up once per session and hands tests a :class:`PrivateBroker`
to act on it. Without ``rabbitmq-server`` on this machine those tests skip, or
fail under ``LOGBUS_REQUIRE_BROKER=1`` (CI).

Tests using it carry the ``faults`` marker, so ``pytest -m faults`` runs them alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from time import monotonic

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "private-rabbitmq"


def _script(*args: str, timeout: float = 180.0) -> str:
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"scripts/private-rabbitmq {' '.join(args)} failed: {done.stderr.strip()[-500:]}"
        )
    return done.stdout


@dataclass(frozen=True)
class PrivateBroker:
    """The private node: its URLs, its test CA, and the faults a test can inflict on it."""

    url: str
    amqps_port: int
    management_url: str
    ca_file: str

    def tls_url(self, host: str = "localhost") -> str:
        """An ``amqps://`` URL to the node's TLS listener, dialled as ``host``."""
        return f"amqps://guest:guest@{host}:{self.amqps_port}/%2F"

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` against this node; its output."""
        return _script("ctl", *args, timeout=60.0)

    def close_all_connections(self, reason: str = "test: forced close") -> None:
        """Close every client connection from the broker's side."""
        self.ctl("close_all_connections", reason)

    def close_connection(self, connection_name: str, timeout: float = 20.0) -> str:
        """Close from the broker's side the connection whose ``connection_name`` client
        property is ``connection_name`` (waiting up to ``timeout`` s for it to be listed);
        the pid it had."""
        deadline = monotonic() + timeout
        while True:
            # "<pid>\t[...{"connection_name","<name>"}...]" per line: the JSON formatter
            # prints pids in a form close_connection does not accept.
            listing = self.ctl(
                "-q", "list_connections", "--no-table-headers", "pid", "client_properties"
            )
            for line in listing.splitlines():
                pid, _, properties = line.partition("\t")
                if f'{{"connection_name","{connection_name}"}}' in properties:
                    self.ctl("close_connection", pid, "test: forced close")
                    return pid
            if monotonic() > deadline:
                raise AssertionError(f"the private node lists no connection {connection_name!r}")
            threading.Event().wait(0.1)

    def stop(self) -> None:
        """Stop the node cleanly; its data stays."""
        _script("stop")

    def start(self) -> None:
        """Start the node again on the same data and wait until AMQP answers."""
        _script("start")

    def restart(self) -> None:
        """Stop and start the node: every client connection drops and comes back."""
        self.stop()
        self.start()

    def memory_alarm(self, on: bool) -> None:
        """Raise (watermark 0: every publisher is blocked) or clear the memory alarm."""
        self.ctl("set_vm_memory_high_watermark", "0" if on else "0.4")


def _unavailable(reason: str) -> None:
    if os.environ.get("LOGBUS_REQUIRE_BROKER") == "1":
        pytest.fail(f"LOGBUS_REQUIRE_BROKER=1 but no private RabbitMQ: {reason}", pytrace=False)
    pytest.skip(f"no private RabbitMQ for fault tests: {reason}")


@pytest.fixture(scope="session")
def private_broker() -> PrivateBroker:
    """The private RabbitMQ node, started if needed (see the module docstring)."""
    if shutil.which("rabbitmq-server") is None and not Path("/usr/lib/rabbitmq/bin").is_dir():
        _unavailable("rabbitmq-server is not installed")
    try:
        _script("up")
        settings = dict(line.split("=", 1) for line in _script("env").splitlines() if "=" in line)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable skips or fails
    return PrivateBroker(
        url=settings["LOGBUS_PRIVATE_URL"],
        amqps_port=int(settings["LOGBUS_PRIVATE_AMQPS_PORT"]),
        management_url=settings["LOGBUS_PRIVATE_MANAGEMENT_URL"],
        ca_file=settings["LOGBUS_PRIVATE_CA"],
    )


@pytest.fixture
def healthy_private_broker(private_broker: PrivateBroker) -> Iterator[PrivateBroker]:
    """The private node, up and without an alarm before and after the test."""
    private_broker.start()
    yield private_broker
    private_broker.start()
    private_broker.memory_alarm(False)
