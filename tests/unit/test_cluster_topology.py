"""The topology of a cluster: quorum work queues, at-least-once dead-lettering, retry queues
that follow the work queue (config/cluster.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from logbus.errors import ConfigError, InvalidTopology
from logbus.topology import Queue, dumps, load, loads
from logbus.transports.base import Transport
from logbus.worker.retry import RetryPolicy, declare_retry_queues

CLUSTER_TOML = Path(__file__).resolve().parents[2] / "config" / "cluster.toml"


class _Recorder:
    """Records queue declarations, as a transport's ``declare_queue`` takes them."""

    url = "memory://"

    def __init__(self) -> None:
        self.declared: dict[str, dict[str, Any]] = {}

    def declare_queue(self, name: str, *, durable: bool, arguments: Any = None) -> None:
        assert durable
        self.declared[name] = dict(arguments or {})


def test_cluster_file_declares_a_quorum_work_queue_dead_lettering_at_least_once() -> None:
    """config/cluster.toml's work queue is quorum, bounded, reject-publish, at-least-once."""
    queue = load(CLUSTER_TOML).queue("logbus.tasks")
    assert queue.amqp_arguments() == {
        "x-queue-type": "quorum",
        "x-max-length": 100000,
        "x-overflow": "reject-publish",
        "x-dead-letter-strategy": "at-least-once",
    }


def test_cluster_file_survives_dumps_then_loads() -> None:
    """The strategy is written back out by dumps and read again by loads."""
    top = load(CLUSTER_TOML)
    assert loads(dumps(top)) == top


def test_at_least_once_on_a_classic_queue_is_refused() -> None:
    """RabbitMQ refuses x-dead-letter-strategy on a classic queue: so does the topology."""
    with pytest.raises(InvalidTopology, match="needs a quorum queue") as caught:
        Queue("q", dead_letter_strategy="at-least-once", overflow="reject-publish")
    assert caught.value.loc == ("dead_letter_strategy",)


def test_at_least_once_without_reject_publish_is_refused() -> None:
    """A quorum queue without reject-publish would fall back to at-most-once quietly."""
    with pytest.raises(InvalidTopology, match="reject-publish") as caught:
        Queue("q", queue_type="quorum", dead_letter_strategy="at-least-once")
    assert caught.value.loc == ("overflow",)


def test_at_least_once_through_raw_arguments_is_checked_too() -> None:
    """The rule reads the x-arguments, so raw ``arguments`` cannot slip past it."""
    with pytest.raises(InvalidTopology, match="needs a quorum queue"):
        Queue("q", arguments={"x-dead-letter-strategy": "at-least-once"})


def test_unknown_strategy_in_a_file_names_its_line() -> None:
    """A misspelt strategy is a one-line error with the file's line."""
    text = '[[queues]]\nname = "q"\nqueue_type = "quorum"\ndead_letter_strategy = "twice"\n'
    with pytest.raises(ConfigError, match=r"t.toml:4: .*dead_letter_strategy = \"twice\""):
        loads(text, source="t.toml")


def test_at_most_once_needs_no_quorum() -> None:
    """The broker's default strategy may be written out on any queue."""
    assert Queue("q", dead_letter_strategy="at-most-once").all_arguments() == {
        "x-dead-letter-strategy": "at-most-once"
    }


def test_retry_queues_follow_a_quorum_at_least_once_work_queue() -> None:
    """Delay queues become quorum, at-least-once, reject-publish; the dead queue quorum."""
    policy = RetryPolicy(max_attempts=2).following(load(CLUSTER_TOML).queue("logbus.tasks"))
    recorder = _Recorder()
    names = declare_retry_queues(cast(Transport, recorder), "logbus.tasks", policy)
    assert names == ["logbus.tasks.retry.1000", "logbus.tasks.dead"]
    assert recorder.declared["logbus.tasks.retry.1000"] == {
        "x-message-ttl": 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "logbus.tasks",
        "x-queue-type": "quorum",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert recorder.declared["logbus.tasks.dead"] == {"x-queue-type": "quorum"}


def test_retry_queues_of_a_plain_quorum_queue_are_quorum_at_most_once() -> None:
    """A quorum work queue without the strategy gets quorum retry queues, broker default."""
    policy = RetryPolicy(max_attempts=2).following(Queue("w", queue_type="quorum"))
    assert (policy.queue_type, policy.dead_letter_strategy) == ("quorum", "at-most-once")
    recorder = _Recorder()
    declare_retry_queues(cast(Transport, recorder), "w", policy)
    assert "x-dead-letter-strategy" not in recorder.declared["w.retry.1000"]
    assert recorder.declared["w.retry.1000"]["x-queue-type"] == "quorum"


@pytest.mark.parametrize("work_queue", [None, Queue("w"), Queue("w", queue_type="classic")])
def test_retry_queues_of_a_classic_or_unknown_work_queue_stay_classic(
    work_queue: Queue | None,
) -> None:
    """Without a quorum work queue in the topology the policy is unchanged."""
    policy = RetryPolicy(max_attempts=2)
    assert policy.following(work_queue) is policy
    recorder = _Recorder()
    declare_retry_queues(cast(Transport, recorder), "w", policy)
    assert recorder.declared["w.dead"] == {}
    assert "x-queue-type" not in recorder.declared["w.retry.1000"]


def test_retry_policy_refuses_at_least_once_on_classic_queues() -> None:
    """The policy cannot be built in a shape the broker would refuse."""
    with pytest.raises(ConfigError, match="needs quorum"):
        RetryPolicy(dead_letter_strategy="at-least-once")
