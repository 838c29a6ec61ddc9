"""Worker pools on ``memory://`` in this process: the thread pool, and what every pool
refuses before it would start a process.

The sink under test is the probe sink of :mod:`tests.pool_probe`. The process pool's
own tests start worker processes, so they are in ``tests/integration/test_process_pool.py``;
the gevent pool's are in ``tests/gevent/`` (a monkey-patched process); against RabbitMQ,
in ``tests/integration/test_pools.py``.
"""

from __future__ import annotations

import os

import pytest

from logbus.errors import ConfigError
from logbus.worker import Worker
from logbus.worker.pools import GeventPool, gevent_patched
from tests.pool_probe import (
    DEADLINE,
    ProbeSink,
    Running,
    pids,
    publish,
    ready,
    stored,
    wait_until,
)

# -- the thread pool ------------------------------------------------------------------------


def test_thread_pool_stores_every_record_of_a_cpu_bound_sink_once(transport, probe_dir):
    """40 CPU-heavy records through two threads: each stored once, all acked."""
    sent = publish(transport, ["cpu"] * 40)
    running = Running(Worker(transport, "tasks", ProbeSink(probe_dir), concurrency=2))
    wait_until(lambda: len(stored(probe_dir)) == 40, DEADLINE, "40 records stored")
    summary = running.stop()
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    assert {s.pid for s in stored(probe_dir)} == {os.getpid()}
    assert (summary.handled, summary.failed, summary.replaced) == (40, 0, 0)
    assert ready(transport) == 0


def test_thread_pool_writes_an_io_bound_sink_on_every_thread_at_once(transport, probe_dir):
    """Four waiting records are written by four threads together (they meet)."""
    publish(transport, ["meet 4"] * 4)
    sink = ProbeSink(probe_dir)
    running = Running(Worker(transport, "tasks", sink, concurrency=4, prefetch=4))
    wait_until(lambda: len(stored(probe_dir)) == 4, DEADLINE, "4 records stored")
    summary = running.stop()
    assert len({s.ident for s in stored(probe_dir)}) == 4
    assert (summary.handled, summary.failed) == (4, 0)


def test_thread_pool_opens_a_sink_given_by_its_spec(transport, probe_plugin, probe_dir):
    """Worker(..., 'probe:DIR') loads and opens the sink in this process, once."""
    publish(transport, ["store"])
    running = Running(Worker(transport, "tasks", f"probe:{probe_dir}"))
    wait_until(lambda: len(stored(probe_dir)) == 1, DEADLINE, "the record")
    running.stop()
    assert pids(probe_dir, "opened") == pids(probe_dir, "closed") == [os.getpid()]


# -- refused before any process starts --------------------------------------------------------


def test_an_unknown_sink_spec_fails_before_any_process_starts(transport):
    """A misspelt sink is a ConfigError naming the closest, raised when the Worker is made."""
    with pytest.raises(ConfigError, match="did you mean 'jsonl'"):
        Worker(transport, "tasks", "jsnol:/tmp/x", pool="process")


def test_the_process_pool_refuses_a_sink_object(transport, probe_dir):
    """A sink object cannot cross to worker processes: the error asks for its spec."""
    with pytest.raises(ConfigError, match="spec"):
        Worker(transport, "tasks", ProbeSink(probe_dir), pool="process")


@pytest.mark.parametrize("pool", ["thread", "process", "gevent"])
def test_default_prefetch_follows_the_concurrency_of_every_pool(transport, pool):
    """Two records per thread, process or greenlet, at least two thousand."""
    one = Worker(transport, "tasks", "console", pool=pool, concurrency=1)
    many = Worker(transport, "tasks", "console", pool=pool, concurrency=1024)
    assert (one.prefetch, many.prefetch) == (2000, 2048)


def test_an_unknown_pool_is_a_config_error(transport):
    """pool='fork' names the pools there are."""
    with pytest.raises(ConfigError, match="thread, process, gevent"):
        Worker(transport, "tasks", "console", pool="fork")


@pytest.mark.parametrize("url", ["process://x", "local:///tmp/x.sock"])
def test_the_gevent_pool_refuses_transports_that_block_a_patched_process(url):
    """local:// and process:// are refused for the gevent pool with the URLs that work."""
    with pytest.raises(ConfigError, match="memory://, gevent:// or amqp://"):
        Worker(url, "tasks", "console", pool="gevent")


def test_the_gevent_pool_refuses_to_open_in_an_unpatched_process(probe_dir):
    """GeventPool never patches on its own: unpatched, open() says how to patch."""
    assert not gevent_patched()
    with pytest.raises(ConfigError, match=r"gevent\.monkey\.patch_all\(\)"):
        GeventPool(ProbeSink(probe_dir)).open(1, "tasks")
    assert not (probe_dir / "opened").exists()
