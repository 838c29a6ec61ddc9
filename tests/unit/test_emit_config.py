"""Emitters refuse a configuration that cannot work at once, alike on the sync and async paths."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from logbus import AsyncEmitter, Emitter
from logbus.errors import ConfigError, RecordTooLarge
from logbus.settings import Settings
from logbus.topology import EmitTarget, Topology, loads

NO_EMIT = """
[[exchanges]]
name = "audit"
type = "topic"
"""
MISSING_CA = "amqps://guest:s3cret@127.0.0.1:1/%2F?cafile=/nonexistent/ca.pem"


def test_an_emitter_without_emit_targets_is_a_config_error():
    """A topology with no [[emit]] table would publish nowhere: ConfigError naming the fix."""
    with pytest.raises(ConfigError, match=r"no \[\[emit\]\] table") as caught:
        Emitter("memory://", topology=loads(NO_EMIT))
    assert "targets=" in str(caught.value)


def test_an_async_emitter_without_emit_targets_is_a_config_error():
    """AsyncEmitter refuses the same topology with the same words."""
    with pytest.raises(ConfigError, match=r"no \[\[emit\]\] table"):
        AsyncEmitter("amqp://guest:guest@127.0.0.1:1/%2F", topology=loads(NO_EMIT))


def test_the_error_names_the_topology_file(tmp_path: Path):
    """A topology file from the settings is named in the error."""
    config = tmp_path / "no-emit.toml"
    config.write_text(NO_EMIT)
    with pytest.raises(ConfigError, match=r"no-emit\.toml"):
        Emitter(settings=Settings(url="memory://", config=config))


def test_explicit_targets_make_up_for_a_topology_without_emit():
    """With targets= the topology is only what gets declared, and that is fine."""
    topology = Topology(exchanges=loads(NO_EMIT).exchanges)
    with Emitter("memory://", topology=topology, targets=[EmitTarget(exchange="audit")]) as e:
        assert [t.exchange for t in e.targets] == ["audit"]


def test_a_missing_cafile_is_the_same_config_error_on_both_paths():
    """?cafile= naming no file: ConfigError at once from Emitter and AsyncEmitter, same words."""
    with Emitter(MISSING_CA) as emitter, pytest.raises(ConfigError) as sync:
        emitter.emit("kern.info", "x")

    async def emit_async() -> None:
        async with AsyncEmitter(MISSING_CA) as emitter:
            await emitter.emit("kern.info", "x")

    with pytest.raises(ConfigError) as async_:
        asyncio.run(emit_async())
    assert str(sync.value) == str(async_.value)
    assert "/nonexistent/ca.pem" in str(sync.value)
    assert "s3cret" not in str(sync.value)


def test_a_record_no_rabbitmq_takes_is_refused_before_it_is_sent(monkeypatch):
    """Over the most max_message_size can be: RecordTooLarge (65), nothing published."""
    monkeypatch.setattr("logbus._targets.MAX_MESSAGE_SIZE", 1024)  # as if 512 MiB
    with Emitter("memory://h3-size") as emitter:
        queue = emitter.transport.declare_queue("", exclusive=True).name
        emitter.transport.bind_queue(queue, "logbus.topic", "#")
        with pytest.raises(RecordTooLarge) as caught:
            emitter.emit("kern.info", "x" * 2000)
        assert emitter.transport.get(queue) is None
    assert (caught.value.limit, caught.value.exit_code) == (1024, 65)
    assert "1,024 bytes = 1 KiB" in str(caught.value)
