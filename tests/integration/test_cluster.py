"""Failover on the local 3-node cluster: kill -9 of a queue's leader under a running fleet.

Each test names its own exchange and quorum queue (declared fresh, so RabbitMQ's
client-local leader locator puts the leader on the node of the client that declared
it), runs logbus's own CLI processes against the cluster, and kills a node with
``kill -9``; the ``cluster_healthy`` fixture starts every node again after.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from time import monotonic

import pytest

from tests.cluster_broker import NODES, LocalCluster

# Each test's own waits (DEADLINE and less) end before pytest-timeout does, so a failure
# says what it was waiting for, with the emitter's stderr, rather than a thread dump.
pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.timeout(420)]

RECORDS = 20_000
DEADLINE = 150.0


@pytest.fixture
def cluster_healthy(local_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The cluster with every node running after the test (the session fixture started it)."""
    yield local_cluster
    for node in set(NODES) - set(local_cluster.running()):
        local_cluster.start(node)


def _topology(path: Path, name: str) -> Path:
    """A topic exchange and a quorum work queue as config/cluster.toml has it, named ``name``."""
    path.write_text(
        f"""
[[exchanges]]
name = "{name}.topic"
type = "topic"

[[queues]]
name = "{name}.tasks"
queue_type = "quorum"
max_length = 200000
overflow = "reject-publish"
dead_letter_strategy = "at-least-once"

[[bindings]]
source = "{name}.topic"
destination = "{name}.tasks"
routing_key = "#"

[[emit]]
exchange = "{name}.topic"
key = "{{facility}}.{{severity}}"
"""
    )
    return path


def _logbus(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LOGBUS_URL", None)
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "logbus", *args], text=True, env=env, **kwargs
    )


def _wait(what: str, condition: object, timeout: float = DEADLINE) -> None:
    deadline = monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        threading.Event().wait(0.1)


#: What the kill test shows of the work queue when the workers stop storing.
_QUEUE_STATE = ("leader", "members", "messages_ready", "messages_unacknowledged", "consumers")


def _stored(paths: list[Path]) -> set[str]:
    """The messages the workers' jsonl sinks hold (a redelivered record counts once)."""
    found: set[str] = set()
    for path in paths:
        if path.exists():
            for line in path.read_text().splitlines():
                if line.endswith("}"):  # a line being appended is read next time
                    found.add(json.loads(line)["message"])
    return found


def _node_of_process(cluster: LocalCluster, pid: int) -> int:
    """The node the process ``pid``'s AMQP connection is on (its name carries the pid)."""
    found: list[int] = []

    def located() -> bool:
        connections = cluster.api("connections")
        assert isinstance(connections, list)
        for one in connections:
            name = str((one.get("client_properties") or {}).get("connection_name", ""))
            if f"-{pid}-" in name:
                found.append(cluster.node_of(one["node"]))
                return True
        return False

    _wait(f"a connection of process {pid}", located, timeout=60.0)
    return found[0]


@contextlib.contextmanager
def _paced_stdin(
    count: int, *, chunk: int, pause: float, hold: threading.Event | None = None
) -> Iterator[int]:
    """The read end of a pipe that a thread fills with ``count`` lines, ``chunk`` at a
    time with ``pause`` seconds between, then closes. With ``hold``, the second half waits
    until it is set."""
    read, write = os.pipe()

    def feed() -> None:
        with os.fdopen(write, "w") as sink:
            for start in range(0, count, chunk):
                if hold is not None and start >= count // 2:
                    hold.wait(DEADLINE)
                end = min(count, start + chunk)
                sink.write("".join(f"rec-{i:05d}\n" for i in range(start, end)))
                sink.flush()
                threading.Event().wait(pause)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        yield read
    finally:
        os.close(read)


def test_kill_9_of_the_work_queue_leader_mid_emit_loses_no_confirmed_record(
    cluster_healthy: LocalCluster, tmp_path: Path
) -> None:
    """20,000 records emitted with failover URLs while the queue's leader is killed: every
    record is stored, workers on the other nodes drain on, the node rejoins.

    The emit spools (``--spool``): RabbitMQ 3.10 may nack publishes to the quorum queue
    for a while after its leader died (seen for more than 15 s on a busy machine, with
    the new leader elected in under a second), and those records are spooled, not
    lost; the next ``logbus emit --spool`` sends them, as an operator's next run would."""
    cluster = cluster_healthy
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    config = _topology(tmp_path / "topology.toml", name)
    # Fed at a pace, so the emit is still running when the leader is killed however
    # fast it publishes: 40 chunks of 500 lines, a quarter of a second apart.
    said = tmp_path / "emit-stderr.txt"  # a file, not a pipe: nothing blocks on a full pipe
    # The second half is fed only once the leader is killed: records are published after
    # the kill whatever the pace of the steps before it (on a busy machine those steps can
    # outlast a paced input, and then nothing would be left to store after the kill).
    killed = threading.Event()
    paced = _paced_stdin(RECORDS, chunk=500, pause=0.25, hold=killed)
    emitting = ("emit", "kern.info", "--config", str(config), "--url", cluster.failover_url)
    spool = ("--spool", str(tmp_path / "spool"))
    with paced as stdin, said.open("w") as err_file:
        emit = _logbus(*emitting, *spool, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err_file)
    workers: list[subprocess.Popen[str]] = []
    try:
        leader = cluster.leader(f"{name}.tasks", timeout=60.0)
        # The emitter declared the queue: the leader is on the emitter's node, so the kill
        # below takes the emitter's connection too and it must fail over.
        assert _node_of_process(cluster, emit.pid) == leader
        others = [node for node in NODES if node != leader]
        sinks = [tmp_path / f"worker-{node}.jsonl" for node in others]
        logs = [tmp_path / f"worker-{node}.stderr" for node in others]
        for node, sink, log in zip(others, sinks, logs, strict=True):
            queue = ["--queue", f"{name}.tasks", "--config", str(config), "--sink", f"jsonl:{sink}"]
            url = ["--url", cluster.urls[node]]  # that node only: it must drain through the kill
            with log.open("w") as worker_err:  # said at info level, shown if the workers stall
                workers.append(
                    _logbus("--log-level", "info", "worker", *queue, *url, stderr=worker_err)
                )
        _wait("the workers storing records", lambda: len(_stored(sinks)) >= 1000)
        assert emit.poll() is None, "the emit ended before the kill: make it longer"
        cluster.kill(leader)
        at_kill = len(_stored(sinks))
        killed.set()
        try:
            emit.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            emit.kill()
            emit.wait()
            tail = said.read_text()[-3000:]
            raise AssertionError(f"emit running {DEADLINE} s after the kill: {tail}") from None
        err = said.read_text()
        assert emit.returncode == 0, f"emit exited {emit.returncode}: {err[-2000:]}"
        flush = subprocess.run(
            [sys.executable, "-m", "logbus", *emitting, *spool], stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=DEADLINE, check=False,
        )  # fmt: skip
        assert flush.returncode == 0, f"the spool flush exited {flush.returncode}: {flush.stderr}"
        assert "spooled" not in flush.stderr, flush.stderr  # all of it sent this time
        expected = {f"rec-{i:05d}" for i in range(RECORDS)}
        try:
            _wait("the workers storing on after the kill", lambda: len(_stored(sinks)) > at_kill)
            _wait("every record stored", lambda: _stored(sinks) >= expected)
        except AssertionError as exc:  # say what the broker and the workers saw
            state = {k: cluster.queue(f"{name}.tasks").get(k) for k in _QUEUE_STATE}
            said_by = {log.name: log.read_text()[-1500:] for log in logs}
            raise AssertionError(f"{exc}; queue: {state}; workers: {said_by}") from None
        assert _stored(sinks) == expected
        cluster.start(leader)
        assert cluster.running() == list(NODES)
        members = cluster.queue(f"{name}.tasks").get("members")
        assert isinstance(members, list) and cluster.node_names[leader] in members
    finally:
        killed.set()
        for process in [emit, *workers]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [emit, *workers]:
            process.wait(timeout=60)
    assert all(worker.returncode == 0 for worker in workers), [w.returncode for w in workers]


def test_a_subscriber_on_a_node_that_dies_resumes_on_another(
    cluster_healthy: LocalCluster, tmp_path: Path
) -> None:
    """kill -9 of the subscriber's node: it binds again on another node and prints on."""
    cluster = cluster_healthy
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    config = _topology(tmp_path / "topology.toml", name)
    printed, said = tmp_path / "printed.jsonl", tmp_path / "stderr.txt"
    with printed.open("w") as out, said.open("w") as err:
        subscriber = _logbus(
            "subscribe", "kern.*", "--json", "--config", str(config),
            "--url", cluster.failover_url, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        _wait("the subscriber bound", lambda: "subscribed" in said.read_text())
        node = _node_of_process(cluster, subscriber.pid)
        other = next(n for n in NODES if n != node)

        def emit(message: str) -> None:
            done = subprocess.run(
                [sys.executable, "-m", "logbus", "emit", "kern.warning", message,
                 "--config", str(config), "--url", cluster.urls[other]],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr

        def seen() -> set[str]:
            lines = printed.read_text().splitlines()
            return {json.loads(line)["message"] for line in lines if line.endswith("}")}

        emit("before the kill")
        _wait("the first record printed", lambda: "before the kill" in seen())
        cluster.kill(node)
        _wait("the subscriber on another node", lambda: _moved(cluster, subscriber.pid, node))

        def after_printed() -> bool:
            emit("after the kill")
            return "after the kill" in seen()

        _wait("a record emitted after the kill printed", after_printed, timeout=90.0)
    finally:
        subscriber.send_signal(signal.SIGINT)
        subscriber.wait(timeout=60)


def _moved(cluster: LocalCluster, pid: int, away_from: int) -> bool:
    try:
        return _node_of_process(cluster, pid) != away_from
    except AssertionError:
        return False


def test_retry_queues_of_a_cluster_work_queue_are_quorum_at_least_once_and_deliver_back(
    cluster_healthy: LocalCluster,
) -> None:
    """The cluster accepts the retry queues logbus declares for config/cluster.toml's work
    queue (quorum, at-least-once, reject-publish), and a record whose delay ends while the
    work queue is at its bound reaches it once there is room."""
    from logbus.errors import NotConfirmed
    from logbus.message import Message, Properties
    from logbus.topology import Queue
    from logbus.transports import connect
    from logbus.worker.retry import RetryPolicy, declare_retry_queues, delay_queue

    name = f"cluster-{uuid.uuid4().hex[:8]}.tasks"
    work = Queue(
        name,
        queue_type="quorum",
        max_length=1,
        overflow="reject-publish",
        dead_letter_strategy="at-least-once",
    )
    policy = RetryPolicy(max_attempts=2, delay=0.5).following(work)
    transport = connect(cluster_healthy.urls[1])
    queues = [name]
    try:
        transport.declare_queue(name, durable=True, arguments=work.amqp_arguments())
        queues += declare_retry_queues(transport, name, policy)
        assert queues[1] == delay_queue(name, 500)
        declared = cluster_healthy.queue(queues[1])
        assert declared["type"] == "quorum"
        assert declared["arguments"]["x-dead-letter-strategy"] == "at-least-once"  # type: ignore[index]
        # Quorum queues apply reject-publish once over the bound: fill until one is refused.
        filled = 0
        while filled < 100:
            filled += 1
            try:
                transport.publish(Message(b"fill", Properties(delivery_mode=2), "", name))
            except NotConfirmed:
                break
        transport.publish(Message(b"waits", Properties(delivery_mode=2), "", queues[1]))
        # A negative needs a window: 4 TTLs in which the broker finds the work queue full.
        threading.Event().wait(2.0)
        got: list[bytes] = []

        def arrived() -> bool:  # drain the work queue: room for the waiting record
            delivery = transport.get(name)
            if delivery is not None:
                got.append(delivery.body)
                delivery.ack()
            return b"waits" in got

        _wait("the waiting record in the work queue once it had room", arrived, timeout=30.0)
        assert got.count(b"fill") == filled - 1
    finally:
        for queue in queues:
            transport.delete_queue(queue)
        transport.close()
