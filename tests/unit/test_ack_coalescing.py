"""Acks fold into one multiple-ack only when that acks exactly the same deliveries: the plan.

How the I/O thread applies the plan to a consumer's channel needs a real pika I/O loop
(it opens a socket pair), so those tests are in ``tests/integration/test_ack_coalescing.py``.
"""

from __future__ import annotations

from logbus.transports.amqp.pika_settle import plan_acks


def test_acking_every_unacked_tag_is_one_multiple_ack():
    """Acks of 1, 2, 3 while only those are unacked become ack(3, multiple)."""
    assert plan_acks({1, 2, 3}, {3, 1, 2}) == (3, [])


def test_a_run_of_the_lowest_unacked_tags_becomes_one_multiple_ack():
    """Acks of 1, 2, 3 with 7 still held become ack(3, multiple); 7 is untouched."""
    assert plan_acks({1, 2, 3, 7}, {1, 2, 3}) == (3, [])


def test_tags_behind_one_still_held_go_one_by_one():
    """Acks of 1, 2, 4, 5 while 3 is held: ack(2, multiple), then 4 and 5 alone."""
    assert plan_acks({1, 2, 3, 4, 5}, {1, 2, 4, 5}) == (2, [4, 5])


def test_a_run_with_a_gap_stays_single_acks():
    """Acks of 1 and 3 while 2 is still held must not ack 2 by accident."""
    assert plan_acks({1, 2, 3}, {1, 3}) == (None, [1, 3])


def test_acks_above_the_lowest_unacked_tag_are_never_multiple():
    """Acks of 4, 5, 6 while 1 is held (another thread's batch) go one by one."""
    assert plan_acks({1, 4, 5, 6}, {4, 5, 6}) == (None, [4, 5, 6])


def test_tags_settled_earlier_do_not_break_a_run():
    """Acks of 10 and 20 while 11..19 were settled before: one ack(20, multiple)."""
    assert plan_acks({10, 20, 30}, {10, 20}) == (20, [])


def test_a_lone_ack_is_a_plain_ack():
    """One tag is one plain ack, whatever else is held."""
    assert plan_acks({5}, {5}) == (None, [5])
    assert plan_acks({5, 6}, {5}) == (None, [5])
