"""Pools ask a transport's declared capabilities, never its URL scheme."""

from __future__ import annotations

import pytest

from logbus.errors import ConfigError
from logbus.transports.base import Capabilities, capabilities_of
from logbus.transports.inprocess.local import LocalTransport
from logbus.transports.inprocess.memory import MemoryTransport
from logbus.transports.inprocess.process import ProcessTransport
from logbus.worker.pools import check_transport


def test_the_local_and_process_transports_declare_they_block_greenlets():
    """local:// and process:// say their connections are not cooperative."""
    assert not capabilities_of(LocalTransport).cooperative
    assert not capabilities_of(ProcessTransport).cooperative


def test_a_transport_that_declares_nothing_is_cooperative():
    """The default capabilities: usable under gevent."""
    assert capabilities_of(MemoryTransport) == Capabilities()


def test_the_gevent_pool_refuses_any_transport_that_declares_it_blocks(monkeypatch):
    """A transport declaring cooperative=False is refused whatever its scheme."""
    monkeypatch.setattr(MemoryTransport, "capabilities", Capabilities(cooperative=False), False)
    with pytest.raises(ConfigError, match="the gevent pool cannot use memory://"):
        check_transport("gevent", "memory://")


def test_the_thread_pool_takes_a_transport_that_blocks_greenlets():
    """Only the gevent pool cares: the thread pool takes local://."""
    check_transport("thread", "local:///tmp/nowhere.sock")
