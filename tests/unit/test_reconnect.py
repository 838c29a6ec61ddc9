"""The one reconnect policy: capped exponential backoff, full jitter, failover order, restore."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from logbus.transports.amqp.reconnect import ReconnectPolicy


def test_the_bound_doubles_from_first_up_to_the_cap():
    """Attempt bounds go 0.1, 0.2, 0.4 ... and stop at the cap."""
    policy = ReconnectPolicy(first=0.1, cap=1.0)
    assert [policy.bound(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_a_huge_attempt_count_stays_at_the_cap():
    """A broker gone for days does not overflow the doubling."""
    assert ReconnectPolicy(first=0.1, cap=30.0).bound(10**6) == 30.0


@given(attempt=st.integers(min_value=0, max_value=200), seed=st.integers())
def test_a_delay_is_a_draw_between_none_and_its_bound(attempt: int, seed: int):
    """Full jitter: every pause lies in [0, bound(attempt)]."""
    policy = ReconnectPolicy(first=0.1, cap=5.0, rng=random.Random(seed))
    assert 0.0 <= policy.delay(attempt) <= policy.bound(attempt)


def test_delays_are_spread_over_the_window_not_bunched_at_its_edge():
    """A fleet's pauses for one attempt cover the whole window (no lockstep)."""
    policy = ReconnectPolicy(first=1.0, cap=1.0, rng=random.Random(7))
    draws = [policy.delay(0) for _ in range(1000)]
    assert min(draws) < 0.1 and max(draws) > 0.9


def test_a_round_starts_at_the_url_that_worked_last():
    """After URL 2 of 4 answered, a round tries 2, 3, 0, 1."""
    attempts = ReconnectPolicy().attempts(4)
    assert attempts.round() == [0, 1, 2, 3]
    attempts.connected(2)
    assert attempts.round() == [2, 3, 0, 1]


def test_each_failed_round_raises_the_bound_of_the_next_pause():
    """next_delay counts the failed rounds: the n-th pause is drawn under bound(n)."""
    policy = ReconnectPolicy(first=0.1, cap=10.0, rng=random.Random(1))
    attempts = policy.attempts(1)
    for n in range(5):
        assert attempts.next_delay() <= policy.bound(n)
    assert attempts.failed == 5


def test_a_restore_starts_the_backoff_over():
    """Once the connection is restored, the next drop waits no more than ``first`` again."""
    attempts = ReconnectPolicy(first=0.1, cap=10.0).attempts(1)
    for _ in range(6):
        attempts.next_delay()
    attempts.restored()
    assert attempts.failed == 0
    assert attempts.next_delay() <= 0.1


def test_a_spread_interval_stays_within_a_fifth_of_it():
    """aio-pika's fixed reconnect interval is jittered by at most 20% each way."""
    policy = ReconnectPolicy(rng=random.Random(3))
    assert all(0.8 <= policy.spread(1.0) <= 1.2 for _ in range(200))


@pytest.mark.parametrize(("first", "cap"), [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_a_policy_needs_a_positive_first_no_larger_than_the_cap(first: float, cap: float):
    """A zero, negative or inverted policy is refused when it is made."""
    with pytest.raises(ValueError, match="0 < first <= cap"):
        ReconnectPolicy(first=first, cap=cap)
