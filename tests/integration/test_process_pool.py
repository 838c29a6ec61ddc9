"""The process pool on ``memory://``: real worker processes, CPU- and I/O-bound sinks.

The sink under test is the probe sink of :mod:`tests.pool_probe`, loaded by each
worker process from its spec ``probe:DIR`` exactly as an installed plugin would be.
These tests start processes, so they are integration tests; the thread pool's and
what every pool refuses before starting one are in ``tests/unit/test_pools.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from logbus.errors import ConfigError
from logbus.message import Message, Properties
from logbus.transports import Transport, connect
from logbus.worker import Worker
from tests.pool_probe import (
    DEADLINE,
    Running,
    alive,
    pids,
    publish,
    ready,
    stored,
    wait_until,
)


def process_worker(transport: Transport, directory: Path, **options: Any) -> Worker:
    """A process-pool worker on ``tasks`` writing to the probe sink in ``directory``."""
    return Worker(transport, "tasks", f"probe:{directory}", pool="process", **options)


def test_process_pool_stores_every_record_of_a_cpu_bound_sink_once(
    transport, probe_plugin, probe_dir
):
    """40 CPU-heavy records through two worker processes: each stored once, all acked."""
    sent = publish(transport, ["cpu"] * 40)
    running = Running(process_worker(transport, probe_dir, concurrency=2))
    wait_until(lambda: len(stored(probe_dir)) == 40, DEADLINE, "40 records stored")
    summary = running.stop()
    assert sorted(s.id for s in stored(probe_dir)) == sorted(sent)
    assert os.getpid() not in {s.pid for s in stored(probe_dir)}
    assert (summary.handled, summary.failed, summary.requeued) == (40, 0, 0)
    assert ready(transport) == 0


def test_process_pool_writes_an_io_bound_sink_in_every_process_at_once(
    transport, probe_plugin, probe_dir
):
    """Three waiting records are written by three worker processes together (they meet)."""
    publish(transport, ["meet 3"] * 3)
    running = Running(process_worker(transport, probe_dir, concurrency=3, prefetch=3))
    wait_until(lambda: len(stored(probe_dir)) == 3, DEADLINE, "3 records stored")
    summary = running.stop()
    writers = {s.pid for s in stored(probe_dir)}
    assert len(writers) == 3 and os.getpid() not in writers
    assert writers == set(pids(probe_dir, "opened"))
    assert summary.handled == 3


def test_each_worker_process_opens_and_closes_its_own_sink(transport, probe_plugin, probe_dir):
    """Two worker processes: two opens, two closes, in two processes other than this one."""
    running = Running(process_worker(transport, probe_dir, concurrency=2))
    opened = pids(probe_dir, "opened")
    running.stop()
    assert len(set(opened)) == 2 and os.getpid() not in opened
    assert sorted(pids(probe_dir, "closed")) == sorted(opened)


def test_a_sigkilled_worker_process_loses_nothing_and_is_replaced(
    transport, probe_plugin, probe_dir
):
    """SIGKILL mid-batch: its records are requeued and stored by a new process; counted."""
    sent = publish(transport, ["hang-once"] + ["sleep 0.01"] * 30)
    running = Running(process_worker(transport, probe_dir, concurrency=2))
    hung = probe_dir / "hung"
    wait_until(lambda: hung.exists() and hung.read_text() != "", DEADLINE, "the hanging write")
    victim = int(hung.read_text())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: {s.id for s in stored(probe_dir)} == set(sent), DEADLINE, "every record")
    summary = running.stop()
    assert victim not in {s.pid for s in stored(probe_dir)}
    assert summary.handled == 31
    assert summary.requeued >= 1 and summary.replaced == 1
    assert "; 1 worker process died and was replaced, " in str(summary)
    assert ready(transport) == 0


def test_a_sigtermed_worker_process_finishes_its_batch_then_is_replaced(
    transport, probe_plugin, probe_dir
):
    """SIGTERM mid-write: the worker process stores and acks its record, exits, is replaced."""
    publish(transport, ["gate"])
    running = Running(process_worker(transport, probe_dir))
    [first] = pids(probe_dir, "opened")
    wait_until((probe_dir / "writing").exists, DEADLINE, "the worker process writing")
    os.kill(first, signal.SIGTERM)
    (probe_dir / "open").touch()
    wait_until(lambda: running.worker.summary().handled == 1, DEADLINE, "the ack")
    wait_until(lambda: not alive(first), DEADLINE, "the worker process to exit")
    publish(transport, ["store"])
    wait_until(lambda: len(stored(probe_dir)) == 2, DEADLINE, "the next record")
    summary = running.stop()
    before, after = stored(probe_dir)
    assert before.pid == first and after.pid != first
    assert (summary.handled, summary.replaced) == (2, 1)
    assert ready(transport) == 0


def test_a_record_is_acked_only_after_the_worker_process_reported_it(
    transport, probe_plugin, probe_dir
):
    """While the worker process writes, the record is unacked: a closed connection requeues it."""
    consumer_side = connect(transport.url)
    publish(transport, ["gate"])
    running = Running(process_worker(consumer_side, probe_dir))
    wait_until((probe_dir / "writing").exists, DEADLINE, "the worker process writing it")
    assert ready(transport) == 0  # taken (and this applies any settlement made so far)
    consumer_side.close()  # the worker's session: what it has not acked is requeued
    wait_until(lambda: ready(transport) == 1, DEADLINE, "the unacked record back")
    (probe_dir / "open").touch()
    wait_until(lambda: len(stored(probe_dir)) == 1, DEADLINE, "the write to finish")
    running.stop()
    assert ready(transport) == 1  # its ack came too late: the record waits for another worker


def test_a_plain_body_is_a_record_in_the_process_pool(transport, probe_plugin, probe_dir):
    """A body that is not logbus JSON is decoded in the worker process and stored."""
    transport.publish(Message(b"[1, 2]", Properties(message_id="plain"), "", "tasks"))
    publish(transport, ["store"])
    running = Running(process_worker(transport, probe_dir))
    wait_until(lambda: len(stored(probe_dir)) == 2, DEADLINE, "both records")
    summary = running.stop()
    assert (summary.handled, summary.undecodable) == (2, 0)
    assert "plain" in {one.id for one in stored(probe_dir)}
    assert ready(transport) == 0


def test_a_failure_for_good_in_a_worker_process_rejects_the_record(
    transport, probe_plugin, probe_dir
):
    """A non-recoverable sink error crosses the pipe and the record is rejected, not retried."""
    publish(transport, ["fail"])
    running = Running(process_worker(transport, probe_dir))
    wait_until(lambda: running.worker.summary().rejected == 1, DEADLINE, "the rejection")
    summary = running.stop()
    assert (summary.handled, summary.failed, summary.rejected) == (0, 1, 1)
    assert ready(transport) == 0


def test_a_recoverable_failure_in_a_worker_process_brings_the_record_back(
    transport, probe_plugin, probe_dir
):
    """An OSError in the worker process requeues the record; its second attempt is stored."""
    [sent] = publish(transport, ["oserror-once"])
    running = Running(process_worker(transport, probe_dir))
    wait_until(lambda: [s.id for s in stored(probe_dir)] == [sent], DEADLINE, "the retry")
    summary = running.stop()
    assert (summary.handled, summary.failed, summary.rejected) == (1, 1, 0)


def test_worker_processes_share_one_jsonl_file_in_whole_lines(transport, tmp_path):
    """Two worker processes appending large batches to one jsonl file never split a line."""
    target = tmp_path / "out.jsonl"
    sent = publish(transport, [f"record {i} " + "x" * 3000 for i in range(400)])
    worker = Worker(transport, "tasks", f"jsonl:{target}", pool="process", concurrency=2)
    running = Running(worker)
    wait_until(lambda: running.worker.summary().handled == 400, DEADLINE, "400 records")
    running.stop()
    lines = target.read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == sorted(sent)


def test_stop_lets_worker_processes_finish_their_batch_then_exit(
    transport, probe_plugin, probe_dir
):
    """stop() while a worker process writes: the record is stored and acked, the processes end."""
    publish(transport, ["gate"])
    worker = process_worker(transport, probe_dir, concurrency=2)
    running = Running(worker)
    wait_until((probe_dir / "writing").exists, DEADLINE, "a worker process writing it")
    worker.stop()
    threading.Timer(0.3, (probe_dir / "open").touch).start()  # the write ends after stop()
    summary = running.stop()
    assert summary.handled == 1 and len(stored(probe_dir)) == 1
    assert ready(transport) == 0
    assert not any(alive(pid) for pid in pids(probe_dir, "opened"))
    assert sorted(pids(probe_dir, "closed")) == sorted(pids(probe_dir, "opened"))


def test_a_sink_that_cannot_open_in_the_worker_processes_fails_start(
    transport, probe_plugin, tmp_path
):
    """The worker process's ConfigError (a missing directory) is start()'s, and none is left."""
    worker = process_worker(transport, tmp_path / "missing", concurrency=2)
    with pytest.raises(ConfigError, match="missing"):
        worker.start()
    assert transport.declare_queue("tasks", passive=True).consumer_count == 0


def test_importing_the_worker_pools_and_cli_imports_no_gevent():
    """gevent is loaded only for --pool gevent (or gevent://), never by importing logbus."""
    code = "import sys, logbus.worker, logbus.cli\nprint('gevent' in sys.modules)\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert proc.stdout.strip() == "False"
