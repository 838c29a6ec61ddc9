"""Acks fold into one multiple-ack only when that acks exactly the same deliveries: the I/O side.

A core's settlements drained by hand onto a stand-in channel. The core owns a pika
I/O loop, which opens a socket pair, so these are integration tests; the plan itself
(``plan_acks``) is tested in ``tests/unit/test_ack_coalescing.py``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from logbus.transports.amqp.pika_convert import endpoints
from logbus.transports.amqp.pika_core import Core
from logbus.transports.base import Settlement

ACK, NACK = Settlement.ACK, Settlement.NACK


class FakeChannel:
    """Notes the settlement frames a consumer's channel would send."""

    is_open = True

    def __init__(self) -> None:
        self.frames: list[tuple[Any, ...]] = []

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.frames.append(("ack", tag, multiple))

    def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.frames.append(("nack", tag, multiple, requeue))

    def basic_reject(self, tag: int, requeue: bool = True) -> None:
        self.frames.append(("reject", tag, requeue))


def consumer(*unacked: int) -> SimpleNamespace:
    """A stand-in for a consumer on a live channel (epoch 1) holding ``unacked``."""
    return SimpleNamespace(
        channel=FakeChannel(),
        live_epoch=1,
        unacked=set(unacked),
        describe=lambda: "consumer",
        io_after_settle=lambda: None,
    )


@pytest.fixture
def core() -> Core:
    """A core that is never started: settlements are drained by hand, as the I/O thread would."""
    found = endpoints(
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        heartbeat=60,
        heartbeat_wins=False,
        connect_timeout=1.0,
        connection_name="test-ack-coalescing",
    )
    made = Core(
        found, name="test", connect_timeout=1.0, operation_timeout=1.0, max_delay=1.0, window=10
    )
    made.submit_quietly = lambda _callback: None  # type: ignore[method-assign]
    return made


def test_batches_of_two_threads_drained_together_are_one_multiple_ack(core):
    """Two threads' batches (1-3 and 4-6) settled before the I/O thread ran: one frame."""
    target = consumer(1, 2, 3, 4, 5, 6, 7)
    core.settle_many(target, 1, ACK, [4, 5, 6], False)
    core.settle_many(target, 1, ACK, [1, 2, 3], False)
    core.settlements.io_drain()
    assert target.channel.frames == [("ack", 6, True)]
    assert target.unacked == {7}


def test_single_acks_fold_with_batch_acks(core):
    """Delivery.ack() of each and a batch settle of others, in one pass: one frame."""
    target = consumer(1, 2, 3)
    core.settle(target, 1, ACK, 2, False, False)
    core.settle_many(target, 1, ACK, [1, 3], False)
    core.settlements.io_drain()
    assert target.channel.frames == [("ack", 3, True)]
    assert target.unacked == set()


def test_a_nack_is_sent_after_the_acks_queued_before_it(core):
    """Acks of 1, 2 then a nack of 3: the acks go first, folded; the nack keeps its meaning."""
    target = consumer(1, 2, 3, 4)
    core.settle_many(target, 1, ACK, [1, 2], False)
    core.settle(target, 1, NACK, 3, False, True)
    core.settle(target, 1, ACK, 4, False, False)
    core.settlements.io_drain()
    assert target.channel.frames == [("ack", 2, True), ("nack", 3, False, True), ("ack", 4, False)]
    assert target.unacked == set()


def test_acks_of_different_consumers_are_never_folded_together(core):
    """Each consumer's channel gets only its own acks."""
    a, b = consumer(1, 2), consumer(1, 2)
    core.settle_many(a, 1, ACK, [1], False)
    core.settle_many(b, 1, ACK, [1, 2], False)
    core.settle_many(a, 1, ACK, [2], False)
    core.settlements.io_drain()
    assert a.channel.frames == [("ack", 2, True)]
    assert b.channel.frames == [("ack", 2, True)]


def test_acks_from_a_channel_that_is_gone_send_nothing(core):
    """Deliveries of an earlier channel (epoch) were requeued by the broker: no frame."""
    target = consumer(1, 2)
    core.settle_many(target, 0, ACK, [1, 2], False)
    core.settlements.io_drain()
    assert target.channel.frames == []
    assert target.unacked == {1, 2}


def test_an_unknown_tag_is_refused_and_the_others_acked(core):
    """A tag no longer held (settled twice, somehow) is skipped; the rest are acked."""
    target = consumer(2, 3)
    core.settle_many(target, 1, ACK, [1, 2, 3], False)
    core.settlements.io_drain()
    assert target.channel.frames == [("ack", 3, True)]
    assert target.unacked == set()


def test_acks_above_a_delivery_still_held_wait_and_fold_with_its_ack(core):
    """Thread B acks 4-6 while thread A still holds 1-3: nothing is sent until A's ack,
    then one ack(6, multiple) says both."""
    target = consumer(1, 2, 3, 4, 5, 6, 7)
    core.settle_many(target, 1, ACK, [4, 5, 6], False)
    core.settlements.io_drain()
    assert target.channel.frames == []
    assert target.unacked == {1, 2, 3, 4, 5, 6, 7}  # still unsettled: the channel stays open
    core.settle_many(target, 1, ACK, [1, 2, 3], False)
    core.settlements.io_drain()
    assert target.channel.frames == [("ack", 6, True)]
    assert target.unacked == {7}


def test_held_acks_go_alone_once_the_delay_is_over(core):
    """Thread A never acks 1: after the delay, 2 and 3 go one by one, 1 stays unacked."""
    target = consumer(1, 2, 3)
    core.settle_many(target, 1, ACK, [2, 3], False)
    core.settlements.io_drain()
    assert target.channel.frames == []
    core.settlements.io_release()  # what the timer calls
    assert target.channel.frames == [("ack", 2, False), ("ack", 3, False)]
    assert target.unacked == {1}


def test_held_acks_go_before_a_nack_of_the_same_consumer(core):
    """A nack never overtakes an ack made before it, held or not."""
    target = consumer(1, 2, 3)
    core.settle_many(target, 1, ACK, [3], False)
    core.settlements.io_drain()
    core.settle(target, 1, NACK, 1, False, True)
    core.settlements.io_drain()
    assert target.channel.frames == [("ack", 3, False), ("nack", 1, False, True)]
    assert target.unacked == {2}


def test_an_ack_with_nothing_unacked_below_it_is_not_held(core):
    """The lowest unacked delivery's ack has nothing to wait for: it goes at once."""
    target = consumer(1, 2, 5)
    core.settle_many(target, 1, ACK, [1], False)
    core.settlements.io_drain()
    assert target.channel.frames == [("ack", 1, False)]
