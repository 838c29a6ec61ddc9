"""Joining an existing deployment, without I/O: vhost-aware hints, policies, queue types.

The broker side (policies through the management API, a worker creating a quorum
queue, hints in a vhost) is in ``tests/e2e/test_joining.py``.
"""

from __future__ import annotations

import re

import pytest
import typer

from logbus.cli.worker import QueueTypeChoice, _queue_type
from logbus.errors import InvalidTopology, PreconditionFailed
from logbus.management import QueueState
from logbus.policies import policy_drift
from logbus.topology import (
    POLICY_PRIORITY,
    Exchange,
    Policy,
    Queue,
    Topology,
    default,
    dumps,
    loads,
    mismatch,
    policies,
    with_policies,
)

REFUSAL = PreconditionFailed(
    "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'task_queue' in vhost "
    "'v1': received the value 'classic' of type 'longstr' but current is none"
)
EXCHANGE_REFUSAL = PreconditionFailed(
    "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'logs' in vhost 'v1': "
    "received 'true' but current is 'false'"
)


@pytest.mark.parametrize(
    ("url", "command"),
    [
        ("amqp://u:s3cret@mq1:5672/v1", "rabbitmqctl -p v1 delete_queue task_queue"),
        ("amqp://u:s3cret@mq1:5672/%2F", "rabbitmqctl delete_queue task_queue"),
        ("amqp://u:s3cret@mq1:5672/", "rabbitmqctl delete_queue task_queue"),
        ("amqp://u:s3cret@mq1:5672/team%20a", "rabbitmqctl -p 'team a' delete_queue task_queue"),
        ("amqp://u:s3cret@mq1/v1,amqp://u:s3cret@mq2/v1", "rabbitmqctl -p v1 delete_queue"),
    ],
)
def test_a_queue_mismatch_hint_names_the_vhost_unless_it_is_the_root(
    url: str, command: str
) -> None:
    """The suggested rabbitmqctl command has -p VHOST for any vhost but /; no password."""
    said = str(mismatch(REFUSAL, url))
    assert command in said
    assert "s3cret" not in said
    if "-p" not in command:
        assert "-p " not in said


def test_an_exchange_mismatch_hint_names_the_vhost_too() -> None:
    """rabbitmqadmin's command for an exchange gets --vhost=VHOST."""
    said = str(mismatch(EXCHANGE_REFUSAL, "amqp://guest:guest@localhost/v1"))
    assert "rabbitmqadmin --vhost=v1 delete exchange name=logs" in said


def test_a_mismatch_without_a_url_keeps_the_plain_command() -> None:
    """Called without a URL (a caller that has none), the hint is as it always was."""
    assert "— rabbitmqctl delete_queue task_queue —" in str(mismatch(REFUSAL))


def test_a_queue_with_bounds_in_a_policy_is_declared_without_them() -> None:
    """bounds = "policy": the declare keeps only what a policy cannot carry (the type)."""
    queue = Queue(
        name="jobs",
        queue_type="quorum",
        max_length=10,
        overflow="reject-publish",
        message_ttl=60_000,
        arguments={"x-max-length-bytes": 1 << 20, "x-single-active-consumer": True},
        bounds="policy",
    )
    assert queue.amqp_arguments() == {"x-queue-type": "quorum", "x-single-active-consumer": True}
    assert queue.all_arguments()["x-max-length"] == 10
    [policy] = policies(Topology(queues=(queue,)))
    assert policy == Policy(
        name="logbus-jobs",
        pattern="^jobs$",
        definition={
            "max-length-bytes": 1 << 20,
            "max-length": 10,
            "overflow": "reject-publish",
            "message-ttl": 60_000,
        },
    )
    assert policy.body() == {
        "pattern": "^jobs$",
        "definition": policy.definition,
        "priority": POLICY_PRIORITY,
        "apply-to": "queues",
    }


@pytest.mark.parametrize("name", ["logbus.tasks", "a+b (1)", "x|y", "q$", "[weird]*"])
def test_a_policy_pattern_matches_exactly_its_queue(name: str) -> None:
    """The pattern is the escaped name, anchored: it matches that name and no other."""
    [policy] = policies(Topology(queues=(Queue(name=name, max_length=1, bounds="policy"),)))
    assert policy.name == f"logbus-{name}"
    assert re.fullmatch(policy.pattern, name)
    for other in (f"{name}.retry.1000", f"x{name}", name[:-1], name.replace(".", "X")):
        if other != name:
            assert re.search(policy.pattern, other) is None


def test_with_policies_moves_every_shared_queue_and_keeps_the_rest() -> None:
    """--policies: the default work queue's bound becomes a policy; nothing else changes."""
    moved = with_policies(default())
    tasks, history = moved.queue("logbus.tasks"), moved.queue("logbus.history")
    assert tasks.bounds == history.bounds == "policy"
    assert tasks.amqp_arguments() == {}
    # A stream's type and age stay in its declaration; its size bound is a policy's too.
    assert history.amqp_arguments() == {"x-queue-type": "stream", "x-max-age": "7D"}
    assert [p.definition for p in policies(moved)] == [
        {"max-length": 100_000, "overflow": "reject-publish"},
        {"max-length-bytes": 1 << 30},
    ]
    assert (moved.exchanges, moved.bindings, moved.emit) == (
        default().exchanges,
        default().bindings,
        default().emit,
    )
    temp = Queue(name="t", durable=False, exclusive=True, max_length=3)
    assert with_policies(Topology(queues=(temp,))).queues == (temp,)


def test_a_queue_without_bounds_needs_no_policy() -> None:
    """A policy-bound queue with nothing to put in a policy gets none."""
    assert policies(Topology(queues=(Queue(name="q", queue_type="quorum", bounds="policy"),))) == ()


def test_bounds_round_trip_through_toml_and_are_checked() -> None:
    """bounds reads and writes; a value other than arguments or policy is refused."""
    topo = Topology(
        exchanges=(Exchange(name="dlx", type="fanout"),),
        queues=(Queue(name="q", max_length=5, dead_letter_exchange="dlx", bounds="policy"),),
    )
    assert loads(dumps(topo)) == topo
    with pytest.raises(InvalidTopology, match="bounds"):
        Queue(name="q", bounds="policies")  # type: ignore[arg-type]


def test_a_policy_dead_letter_exchange_must_still_be_declared() -> None:
    """A dead-letter exchange in a policy is a route too: it must be declared."""
    with pytest.raises(InvalidTopology, match="dead-letter exchange 'nowhere'"):
        Topology(queues=(Queue(name="q", dead_letter_exchange="nowhere", bounds="policy"),))


@pytest.mark.parametrize("flag", ["exclusive", "auto_delete"])
def test_a_stream_queue_is_durable_and_shared(flag: str) -> None:
    """queue_type = "stream" has the quorum queue's rules: durable, not exclusive."""
    with pytest.raises(InvalidTopology, match=f"a stream queue cannot have {flag} = true"):
        Queue(name="s", queue_type="stream", **{flag: True})


def test_policy_drift_names_missing_different_and_outranked_policies() -> None:
    """Missing, a definition that differs, and a queue another policy governs."""
    wanted = policies(
        with_policies(
            Topology(queues=(Queue(name="a", max_length=1), Queue(name="b", max_length=2)))
        )
    )
    assert policy_drift(wanted, {}) == (
        "policy 'logbus-a' is missing on the broker",
        "policy 'logbus-b' is missing on the broker",
    )
    have = {p.name: {"name": p.name, **p.body()} for p in wanted}
    assert policy_drift(wanted, have) == ()
    have["logbus-b"] = {**have["logbus-b"], "definition": {"max-length": 3}}
    queues = {"a": QueueState("a", policy="ops-catch-all"), "b": QueueState("b", policy="logbus-b")}
    assert policy_drift(wanted, have, queues) == (
        "queue 'a' is governed by policy 'ops-catch-all', not 'logbus-a' (a higher priority "
        "wins; only one policy applies)",
        "policy 'logbus-b': definition differs: config has {\"max-length\": 2}, broker has "
        '{"max-length": 3}',
    )


def test_queue_type_must_agree_with_the_topology() -> None:
    """--queue-type for a queue the topology declares as another type is a usage error."""
    topo = Topology(queues=(Queue(name="task_queue", queue_type="quorum"),))
    assert _queue_type(topo, "task_queue", QueueTypeChoice.quorum) == "quorum"
    assert _queue_type(topo, "other", QueueTypeChoice.stream) == "stream"
    assert _queue_type(topo, "task_queue", None) is None
    with pytest.raises(typer.Exit) as caught:
        _queue_type(topo, "task_queue", QueueTypeChoice.classic)
    assert caught.value.exit_code == 2
