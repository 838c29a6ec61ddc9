"""The gevent pool in a monkey-patched process: greenlets writing to one sink.

The probe sink (see ``tests/pool_probe.py``) runs in this process: its waits
(``time.sleep``) are cooperative here, and ``threading.get_ident()`` names the
greenlet that wrote each record.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from logbus.transports import Transport, connect
from logbus.worker import Worker
from logbus.worker.pools import gevent_patched
from tests.pool_probe import (
    DEADLINE,
    ProbeSink,
    Running,
    publish,
    ready,
    started,
    stored,
    wait_until,
)


@pytest.fixture(params=["memory", "gevent"])
def transport(request: pytest.FixtureRequest) -> Iterator[Transport]:
    """This test's own memory:// or gevent:// broker, with a durable queue ``tasks``."""
    with connect(f"{request.param}://gevent-pool-{secrets.token_hex(4)}") as opened:
        opened.declare_queue("tasks")
        yield opened


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    """A directory for this test's probe sink."""
    directory = tmp_path / "probe"
    directory.mkdir()
    return directory


def gevent_worker(transport: Transport, directory: Path, **options: int) -> Worker:
    """A gevent-pool worker on ``tasks`` writing to a probe sink in ``directory``."""
    return Worker(transport, "tasks", ProbeSink(directory), pool="gevent", **options)


def test_this_process_is_patched_so_the_gevent_pool_opens():
    """The tier's conftest patched everything the gevent pool needs."""
    assert gevent_patched()


def test_gevent_pool_writes_an_io_bound_sink_on_many_greenlets_at_once(transport, probe_dir):
    """Twenty waiting records are written by twenty greenlets of this one thread together."""
    publish(transport, ["meet 20"] * 20)
    running = Running(gevent_worker(transport, probe_dir, concurrency=20, prefetch=20))
    wait_until(lambda: len(stored(probe_dir)) == 20, DEADLINE, "20 records stored")
    summary = running.stop()
    assert len({s.ident for s in stored(probe_dir)}) == 20
    assert {s.pid for s in stored(probe_dir)} == {os.getpid()}
    assert (summary.handled, summary.failed) == (20, 0)
    assert ready(transport) == 0


def test_gevent_pool_stores_every_record_of_a_cpu_bound_sink_once(transport, probe_dir):
    """40 CPU-heavy records through four greenlets: each stored once, all acked."""
    sent = publish(transport, ["cpu"] * 40)
    running = Running(gevent_worker(transport, probe_dir, concurrency=4))
    wait_until(lambda: len(stored(probe_dir)) == 40, DEADLINE, "40 records stored")
    summary = running.stop()
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    assert (summary.handled, summary.failed) == (40, 0)
    assert ready(transport) == 0


def test_gevent_pool_stop_finishes_the_records_in_hand(transport, probe_dir):
    """stop() while greenlets wait in the sink: those records are stored and acked."""
    publish(transport, ["sleep 0.3"] * 3)
    running = Running(gevent_worker(transport, probe_dir, concurrency=3, prefetch=3))
    wait_until(lambda: len(started(probe_dir)) == 3, DEADLINE, "all three being written")
    summary = running.stop()
    assert summary.handled == 3 and len(stored(probe_dir)) == 3
    assert ready(transport) == 0
