"""A record over the broker's ``max_message_size`` is bad input (65) naming its size and the limit.

RabbitMQ does not tell clients its limit (``connection.start`` and
``connection.tune`` do not carry it), so logbus learns it from the broker's
refusal and says it in its own words — in ``logbus emit``, Emitter and
AsyncEmitter. The limit is lowered on the private node only.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from logbus import AsyncEmitter, Emitter
from logbus.errors import RecordTooLarge
from logbus.topology import EmitTarget, Queue, Topology, dumps
from logbus.transports import connect
from tests.e2e.test_emit import run_emit
from tests.private_broker import PrivateBroker

pytestmark = pytest.mark.faults

LIMIT = 65536  # 64 KiB
MESSAGE = "x" * 100_000  # fits in one argv string (at most 128 KiB)
RABBITMQ_DEFAULT = 134217728  # 128 MiB


@pytest.fixture
def small_limit(private_broker: PrivateBroker) -> Iterator[PrivateBroker]:
    """The private node with max_message_size 64 KiB, back to RabbitMQ's default after."""
    private_broker.ctl("eval", f"application:set_env(rabbit, max_message_size, {LIMIT}).")
    yield private_broker
    private_broker.ctl(
        "eval", f"application:set_env(rabbit, max_message_size, {RABBITMQ_DEFAULT})."
    )


@pytest.fixture
def target(small_limit: PrivateBroker, tmp_path: Path) -> Iterator[tuple[Topology, Path]]:
    """A queue of its own on the private node, emitted to straight; its topology file."""
    queue = f"test-size-{secrets.token_hex(4)}"
    topology = Topology(
        queues=(Queue(name=queue, durable=False),), emit=(EmitTarget(exchange="", key=queue),)
    )
    config = tmp_path / "size.toml"
    config.write_text(dumps(topology))
    yield topology, config
    with connect(small_limit.url) as transport:
        transport.delete_queue(queue)


def _check(error: str) -> None:
    assert f"{LIMIT:,} bytes = 64 KiB" in error
    assert "a record of 100," in error  # the body's size, a little over the message's


def test_a_record_over_the_limit_exits_65(small_limit, target):
    """One record, argv: 65, one line naming the size and the limit."""
    _topology, config = target
    proc, _imported = run_emit(
        ["kern.info", MESSAGE, "--url", small_limit.url, "--config", str(config)]
    )
    assert proc.returncode == 65, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    _check(line)


def test_a_record_over_the_limit_from_stdin_exits_65(small_limit, target):
    """A JSON line over the limit: 65 too."""
    _topology, config = target
    proc = subprocess.run(
        [sys.executable, "-m", "logbus", "emit", "kern.info", "--json", "-", "--url",
         small_limit.url, "--config", str(config)],
        input=json.dumps({"message": MESSAGE}) + "\n", capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 65, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    _check(line)


def test_emitter_raises_record_too_large(small_limit, target):
    """Emitter: RecordTooLarge with the size and the limit."""
    topology, _config = target
    with (
        Emitter(small_limit.url, topology=topology) as emitter,
        pytest.raises(RecordTooLarge) as caught,
    ):
        emitter.emit("kern.info", MESSAGE)
    assert caught.value.limit == LIMIT and caught.value.size > len(MESSAGE)
    _check(str(caught.value))


def test_async_emitter_raises_record_too_large(small_limit, target):
    """AsyncEmitter: the same error, the same words."""
    topology, _config = target

    async def emit() -> None:
        async with AsyncEmitter(small_limit.url, topology=topology) as emitter:
            await emitter.emit("kern.info", MESSAGE)

    with pytest.raises(RecordTooLarge) as caught:
        asyncio.run(emit())
    assert caught.value.exit_code == 65
    _check(str(caught.value))
