"""Single acks fold into one multiple-ack only when that acks exactly the same deliveries."""

from __future__ import annotations

from types import SimpleNamespace

from logbus.transports._amqp_io import Core
from logbus.transports.base import Settlement

ACK, NACK = Settlement.ACK, Settlement.NACK


def acks(target, *tags, epoch=1):
    """Plain single acks of ``tags`` on ``target``."""
    return [(target, epoch, ACK, tag, False, False) for tag in tags]


def test_a_run_covering_every_unacked_tag_becomes_one_multiple_ack():
    """Acks of 1, 2, 3 with nothing else unacked below 3 become ack(3, multiple)."""
    consumer = SimpleNamespace(unacked={1, 2, 3, 7})
    assert Core._coalesce(acks(consumer, 1, 2, 3)) == [(consumer, 1, ACK, 3, True, False)]


def test_a_run_with_a_gap_stays_single_acks():
    """Acks of 1 and 3 while 2 is still held must not ack 2 by accident."""
    consumer = SimpleNamespace(unacked={1, 2, 3})
    batch = acks(consumer, 1, 3)
    assert Core._coalesce(batch) == batch


def test_a_nack_breaks_the_run():
    """A nack between acks keeps its place and its meaning."""
    consumer = SimpleNamespace(unacked={1, 2, 3})
    batch = [*acks(consumer, 1), (consumer, 1, NACK, 2, False, True), *acks(consumer, 3)]
    assert Core._coalesce(batch) == batch


def test_runs_on_different_consumers_are_kept_apart():
    """Acks for two consumers are never folded together."""
    a, b = SimpleNamespace(unacked={1, 2}), SimpleNamespace(unacked={1, 2})
    batch = [*acks(a, 1), *acks(b, 1), *acks(a, 2)]
    assert Core._coalesce(batch) == batch
