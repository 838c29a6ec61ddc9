"""Joining an existing deployment, on the shared RabbitMQ: issue 13, parts 3 and 4.

- emit targets that need not reach a queue, and a partly routed emit that names the
  targets and is retried to the missing ones only (``--target``);
- ``logbus worker --queue`` creating an absent queue with the topology's type, and
  consuming one that someone else declared, whatever its arguments;
- mismatch hints naming the vhost;
- ``logbus topology apply --policies``: bounds as RabbitMQ policies, after which a
  plain client declares the queue with plain flags.

Names are unique per test in ``/``; what needs fixed names (the tutorial config, a
vhost in a hint) runs in a throwaway vhost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest

from logbus.emitter import AsyncEmitter, PartlyRouted
from logbus.management import ManagementApi, management_api
from logbus.policies import delete_policies
from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, dumps
from logbus.worker.retry import RetryPolicy, retry_queues
from tests.e2e.support import management_env, one_error_line, remove
from tests.peers.harness import throwaway_vhost
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[2]
Runner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def api(amqp_url: str) -> ManagementApi:
    """The shared broker's management API (the test fails without it under
    LOGBUS_REQUIRE_BROKER=1)."""
    management_env(amqp_url, "management")
    found = management_api(amqp_url)
    assert found is not None
    return found


@pytest.fixture
def written(tmp_path: Path, amqp_url: str) -> Iterator[Callable[[Topology], Path]]:
    """Write a topology to a file; its entities are deleted from the broker after."""
    made: list[Topology] = []

    def write(topology: Topology) -> Path:
        made.append(topology)
        path = tmp_path / f"topology-{len(made)}.toml"
        path.write_text(dumps(topology))
        return path

    yield write
    for topology in reversed(made):
        remove(amqp_url, topology)


def _channel_do(url: str, action: Callable[[Any], object]) -> object:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return action(connection.channel())
    finally:
        connection.close()


def _depth(url: str, queue: str) -> int:
    ok = _channel_do(url, lambda ch: ch.queue_declare(queue, passive=True))
    return int(ok.method.message_count)  # type: ignore[attr-defined]


# -- mandatory and partly routed ---------------------------------------------------------


@pytest.mark.parametrize(("mandatory", "status"), [(False, 0), (True, 75)])
def test_a_lone_topic_exchange_nobody_bound_exits_0_unless_mandatory(
    logbus: Runner,
    written: Callable[[Topology], Path],
    amqp_url: str,
    unique_name: str,
    mandatory: bool,
    status: int,
) -> None:
    """As the tutorial publisher: only a topic exchange and nobody subscribed is fine with
    mandatory = false (exit 0); the old default, mandatory, exits 75 saying why."""
    exchange = f"{unique_name}.topic"
    config = written(
        Topology(
            exchanges=(Exchange(name=exchange, type="topic", durable=False),),
            emit=(EmitTarget(exchange=exchange, mandatory=mandatory),),
        )
    )
    done = logbus(
        "emit", "kern.critical", "disk failed", "--url", amqp_url, "--config", str(config)
    )
    assert done.returncode == status, done.stderr
    if mandatory:
        assert "no queue is bound" in one_error_line(done.stderr)
    else:
        assert done.stderr == ""


def test_four_targets_three_unroutable_name_which_took_it_and_retry_only_the_missing(
    logbus: Runner, written: Callable[[Topology], Path], amqp_url: str, unique_name: str
) -> None:
    """Exit 75 with one line: taken by the bound target, not by the three others, and the
    --target options; once queues are bound, those options deliver one copy to each of
    the three and none more to the first."""
    names = [f"{unique_name}.{n}" for n in "abcd"]
    queues = [f"{unique_name}.q{n}" for n in "abcd"]
    topology = Topology(
        exchanges=tuple(Exchange(name=n, type="fanout") for n in names),
        queues=tuple(Queue(name=q) for q in queues),
        bindings=(Binding(source=names[0], destination=queues[0]),),
        emit=tuple(EmitTarget(exchange=n) for n in names),
    )
    config = written(topology)
    args = ["--url", amqp_url, "--config", str(config)]
    first = logbus("emit", "kern.critical", "disk failed", *args)
    assert first.returncode == 75, first.stderr
    line = one_error_line(first.stderr)
    assert f"taken by {names[0]}; not by {names[1]}, {names[2]}, {names[3]} (" in line
    retry = re.search(r"emit again with (.*)$", line)
    assert retry is not None, line
    assert retry[1].split() == ["--target", names[1], "--target", names[2], "--target", names[3]]

    def bind(channel: Any) -> None:
        for exchange, queue in zip(names[1:], queues[1:], strict=True):
            channel.queue_declare(queue, durable=True)  # emit declared only what it reached
            channel.queue_bind(queue, exchange)

    _channel_do(amqp_url, bind)
    again = logbus("emit", "kern.critical", "disk failed", *retry[1].split(), *args)
    assert again.returncode == 0, again.stderr
    assert [_depth(amqp_url, q) for q in queues] == [1, 1, 1, 1]


def test_an_unknown_target_name_is_a_configuration_error(
    logbus: Runner, written: Callable[[Topology], Path], amqp_url: str, unique_name: str
) -> None:
    """--target naming no emit target exits 78 listing the targets there are."""
    exchange = f"{unique_name}.x"
    config = written(
        Topology(exchanges=(Exchange(name=exchange, type="topic"),), emit=(EmitTarget(exchange),))
    )
    done = logbus(
        "emit", "kern.info", "m", "--target", "nope", "--url", amqp_url, "--config", str(config)
    )
    assert done.returncode == 78
    assert f"no emit target called 'nope' (the targets are: {exchange})" in one_error_line(
        done.stderr
    )


def test_the_async_emitter_names_the_targets_that_took_a_record(
    amqp_url: str, written: Callable[[Topology], Path], unique_name: str
) -> None:
    """AsyncEmitter: two targets, one unroutable: PartlyRouted, as the sync emitter says."""
    bound, empty, queue = f"{unique_name}.bound", f"{unique_name}.empty", f"{unique_name}.q"
    topology = Topology(
        exchanges=(Exchange(name=bound, type="fanout"), Exchange(name=empty, type="fanout")),
        queues=(Queue(name=queue),),
        bindings=(Binding(source=bound, destination=queue),),
        emit=(EmitTarget(exchange=bound), EmitTarget(exchange=empty)),
    )
    written(topology)

    async def emit() -> PartlyRouted:
        async with AsyncEmitter(amqp_url, topology=topology) as emitter:
            with pytest.raises(PartlyRouted) as caught:
                await emitter.emit("kern.info", "half way")
            return caught.value

    exc = asyncio.run(emit())
    assert ([t.label for t in exc.taken], [t.label for t in exc.missed]) == ([bound], [empty])
    assert _depth(amqp_url, queue) == 1


# -- the worker's queue --------------------------------------------------------------------


@contextlib.contextmanager
def _worker(url: str, config: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``logbus worker ARGS`` up (it said "consuming" within 30 s); stopped with SIGTERM
    after, and then it must have exited 0 without meeting PRECONDITION_FAILED."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "logbus", "worker", *args, "--url", url, "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(proc.stderr or ()), daemon=True)
    reader.start()

    def up() -> bool:
        assert proc.poll() is None, "".join(seen)
        return any("consuming" in line for line in seen)

    try:
        wait_until(up, 30, "the worker to say it is consuming")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(10)
    text = "".join(seen)
    assert proc.returncode == 0, text
    assert "PRECONDITION_FAILED" not in text


def _forget(url: str, queue: str) -> None:
    """Delete ``queue`` and the delay and dead-letter queues a worker declared for it."""

    def delete(channel: Any) -> None:
        for name in (queue, *retry_queues(queue, RetryPolicy())):
            channel.queue_delete(name)

    _channel_do(url, delete)


def _queue_type(api: ManagementApi, name: str) -> tuple[str, dict[str, Any]]:
    found = api.get(f"/api/queues/%2F/{quote(name, safe='')}")
    return found["type"], found["arguments"]


@pytest.mark.parametrize("how", ["topology", "--queue-type"])
def test_worker_creates_an_absent_queue_with_the_type_it_is_given(
    amqp_url: str,
    api: ManagementApi,
    written: Callable[[Topology], Path],
    unique_name: str,
    how: str,
) -> None:
    """An absent --queue is created quorum when the topology declares it so, or when
    --queue-type quorum says so for a queue the topology does not know."""
    queue = f"{unique_name}.task_queue"
    declared = (Queue(name=queue, queue_type="quorum"),) if how == "topology" else ()
    other = Exchange(name=f"{unique_name}.x", type="topic")
    config = written(Topology(exchanges=(other,), queues=declared))
    extra = ["--queue-type", "quorum"] if how == "--queue-type" else []
    try:
        with _worker(amqp_url, config, "--queue", queue, *extra):
            kind, arguments = _queue_type(api, queue)
    finally:
        _forget(amqp_url, queue)
    assert (kind, arguments) == ("quorum", {"x-queue-type": "quorum"})


def test_worker_consumes_a_queue_someone_else_declared_as_it_is(
    amqp_url: str, written: Callable[[Topology], Path], unique_name: str
) -> None:
    """The tutorials' worker declared task_queue quorum with no other argument; a topology
    that says classic and bounded does not make logbus's worker die on PRECONDITION_FAILED:
    it consumes the queue as it is."""
    queue = f"{unique_name}.task_queue"
    _channel_do(
        amqp_url,
        lambda ch: ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"}),
    )
    bounded = Queue(name=queue, max_length=10, overflow="reject-publish")
    config = written(Topology(queues=(bounded,)))
    try:
        with _worker(amqp_url, config, "--queue", queue, "--prefetch", "1"):
            _channel_do(amqp_url, lambda ch: ch.basic_publish("", queue, b"resize photo 42"))
            wait_until(lambda: _depth(amqp_url, queue) == 0, 20, "the worker to take the message")
    finally:
        _forget(amqp_url, queue)


# -- hints name the vhost; the tutorial config in a vhost of its own ---------------------------


@pytest.fixture(scope="module")
def vhost_url(amqp_url: str) -> Iterator[str]:
    """A URL to a throwaway vhost of this module's, deleted after."""
    yield from throwaway_vhost(amqp_url, f"logbus-joining-{secrets.token_hex(4)}")


def test_a_mismatch_in_a_vhost_suggests_the_command_with_p(
    logbus: Runner, vhost_url: str, tmp_path: Path
) -> None:
    """task_queue exists classic in vhost V; applying it quorum exits 78 and the hint
    says rabbitmqctl -p V delete_queue task_queue — never the command for /."""
    queue = f"hint-{secrets.token_hex(4)}"
    _channel_do(vhost_url, lambda ch: ch.queue_declare(queue, durable=True))
    config = tmp_path / "quorum.toml"
    config.write_text(dumps(Topology(queues=(Queue(name=queue, queue_type="quorum"),))))
    vhost = vhost_url.rsplit("/", 1)[1]
    try:
        done = logbus("topology", "apply", "--url", vhost_url, "--config", str(config))
    finally:
        _channel_do(vhost_url, lambda ch: ch.queue_delete(queue))
    assert done.returncode == 78
    line = one_error_line(done.stderr)
    assert f"rabbitmqctl -p {vhost} delete_queue {queue}" in line
    assert "guest:guest" not in line


def test_subscribe_in_a_vhost_suggests_the_command_with_p(logbus: Runner, vhost_url: str) -> None:
    """A subscriber's own queue exists in vhost V with other flags: exit 78, and the
    hint names V (-p), as emit's and topology apply's do."""
    queue = f"hint-sub-{secrets.token_hex(4)}"
    _channel_do(vhost_url, lambda ch: ch.queue_declare(queue, durable=False))
    vhost = vhost_url.rsplit("/", 1)[1]
    try:
        args = ("subscribe", "--url", vhost_url, "--queue", queue, "--durable", "--count", "1")
        done = logbus(*args, "--timeout", "5", "#")
    finally:
        _channel_do(vhost_url, lambda ch: ch.queue_delete(queue))
    assert done.returncode == 78, done.stderr
    line = one_error_line(done.stderr)
    assert f"rabbitmqctl -p {vhost} delete_queue {queue}" in line
    assert "guest:guest" not in line


def test_the_tutorial_config_emits_with_no_tutorial_consumer_running(
    logbus: Runner, vhost_url: str
) -> None:
    """config/tutorial.toml with no receive_logs running: exit 0, and task_queue (the
    mandatory target) holds the record."""
    config = str(REPO / "config" / "tutorial.toml")
    done = logbus("emit", "kern.critical", "disk failed", "--url", vhost_url, "--config", config)
    try:
        assert done.returncode == 0, done.stderr
        assert _depth(vhost_url, "task_queue") == 1
    finally:
        _channel_do(vhost_url, lambda ch: ch.queue_delete("task_queue"))


# -- policies ---------------------------------------------------------------------------------


def _applied(stdout: str) -> list[tuple[str, str, str]]:
    """(entity, name, state) of each row of ``topology apply --json``."""
    return [(r["entity"], r["name"], r["state"]) for r in json.loads(stdout)["applied"]]


def test_topology_apply_policies_lets_plain_clients_declare_the_queue(
    logbus: Runner,
    amqp_url: str,
    api: ManagementApi,
    written: Callable[[Topology], Path],
    unique_name: str,
) -> None:
    """apply --policies: policy logbus-<queue> (anchored pattern, apply-to queues, priority
    10) holds the bound, dead-lettering and TTL; the queue has no such argument, so a
    pika client's plain durable declare succeeds; diff --policies is then in sync."""
    queue, dead = f"{unique_name}.jobs", f"{unique_name}.dead"
    topology = Topology(
        exchanges=(Exchange(name=dead, type="fanout"),),
        queues=(
            Queue(
                name=queue,
                queue_type="quorum",
                max_length=5,
                overflow="reject-publish",
                message_ttl=60_000,
                dead_letter_exchange=dead,
            ),
        ),
    )
    config = written(topology)
    policy = f"logbus-{queue}"
    env = {"LOGBUS_MANAGEMENT_URL": api.base}
    args = ["--policies", "--json", "--url", amqp_url, "--config", str(config)]
    try:
        before = logbus("topology", "diff", *args, env=env)
        assert before.returncode == 1
        assert json.loads(before.stdout)["policies"] == [
            f"policy '{policy}' is missing on the broker"
        ]
        done = logbus("topology", "apply", *args, env=env)
        assert done.returncode == 0, done.stderr
        rows = _applied(done.stdout)
        assert rows[0] == ("policy", policy, "created")  # first: the queue is never unbounded
        assert ("queue", queue, "created") in rows
        got = api.get(f"/api/policies/%2F/{quote(policy, safe='')}")
        assert (got["pattern"], got["apply-to"], got["priority"]) == (
            f"^{re.escape(queue)}$",
            "queues",
            10,
        )
        assert got["definition"] == {
            "max-length": 5,
            "overflow": "reject-publish",
            "message-ttl": 60_000,
            "dead-letter-exchange": dead,
        }
        assert _queue_type(api, queue) == ("quorum", {"x-queue-type": "quorum"})
        _channel_do(
            amqp_url,
            lambda ch: ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"}),
        )
        wait_until(
            lambda: api.get(f"/api/queues/%2F/{quote(queue, safe='')}").get("policy") == policy,
            20,
            "the policy to govern the queue",
        )
        after = logbus("topology", "diff", *args, env=env)
        assert after.returncode == 0, after.stdout
        assert json.loads(after.stdout)["in_sync"] is True
        again = logbus("topology", "apply", *args, env=env)
        assert _applied(again.stdout)[0] == ("policy", policy, "existed")
        shown = logbus("topology", "show", "--policies", "--json", "--config", str(config))
        assert [p["name"] for p in json.loads(shown.stdout)["policies"]] == [policy]
    finally:
        delete_policies(api, "/", [policy])
    assert policy not in {p["name"] for p in api.get("/api/policies/%2F")}
