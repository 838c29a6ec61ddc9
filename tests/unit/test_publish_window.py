"""The publish window both AMQP transports use: sized by the confirming pace, cut by reconnects."""

from __future__ import annotations

from logbus.transports.amqp.window import (
    BUDGET,
    DEEP_BUDGET,
    DEEP_START,
    INITIAL,
    PublishWindow,
)


def _round_trip(window: PublishWindow, now: float, *, limited: bool = True) -> None:
    """A whole window's publishes confirmed at ``now``, in one multiple ack."""
    window.confirmed(window.limit, now, limited=limited)


def test_a_fresh_window_starts_small_and_doubles_per_round_trip() -> None:
    """Slow start: the window begins at INITIAL and doubles with each round trip's confirms."""
    window = PublishWindow(5000)
    assert window.limit == INITIAL
    _round_trip(window, 0.01)
    _round_trip(window, 0.02)
    assert window.limit == 4 * INITIAL


def test_the_window_does_not_grow_while_the_publisher_is_what_is_slow() -> None:
    """Confirms of a window nobody waits for room in do not widen it."""
    window = PublishWindow(5000)
    for step in range(1, 20):
        _round_trip(window, step * 0.01, limited=False)
    assert window.limit == INITIAL


def test_the_window_holds_at_most_the_budget_of_the_confirming_pace() -> None:
    """At 2,000 confirms a second, the window settles at 2,000 x BUDGET, not the ceiling."""
    window = PublishWindow(5000)
    for step in range(1, 400):  # 20 confirms every 10 ms for 4 s
        window.confirmed(20, step * 0.01, limited=True)
    assert window.limit == int(2000 * BUDGET)


def test_a_deep_budget_holds_that_many_seconds_of_the_pace() -> None:
    """With the ingest gateway's budget the same pace keeps DEEP_BUDGET seconds in flight."""
    window = PublishWindow(5000, budget=DEEP_BUDGET)
    for step in range(1, 400):
        window.confirmed(20, step * 0.01, limited=True)
    assert window.limit == int(2000 * DEEP_BUDGET) > int(2000 * BUDGET)


def test_the_window_never_exceeds_its_ceiling() -> None:
    """However fast the broker confirms, no more than publish_window are in flight."""
    window = PublishWindow(100)
    for step in range(1, 400):
        window.confirmed(1000, step * 0.01, limited=True)
    assert window.limit == 100


def test_a_reconnect_starts_it_small_and_it_grows_back_slowly() -> None:
    """After a reconnect: INITIAL again, slow start only to a quarter of the old size,
    then a few more per round trip."""
    window = PublishWindow(5000)
    for step in range(1, 400):  # 2,000 confirms a second: settles at 2,000 x BUDGET
        window.confirmed(20, step * 0.01, limited=True)
    before = window.limit
    window.restart()
    assert window.limit == INITIAL
    now = 4.0
    while window.limit < before // 4:
        now += 0.01
        _round_trip(window, now)
    quarter = window.limit
    for _ in range(5):
        now += 0.01
        _round_trip(window, now)
    assert quarter <= window.limit <= quarter + 5 * 8 + 1
    assert window.limit < before


def test_a_deep_budget_starts_deep_and_only_on_its_first_connection() -> None:
    """The gateway's window skips slow start on its first connection (nothing was sent
    yet, so nothing is re-sent); after a reconnect it starts small like any other, and a
    slow broker still shrinks it to the budget of its pace."""
    window = PublishWindow(15_000, budget=DEEP_BUDGET)
    assert window.limit == DEEP_START > INITIAL
    assert PublishWindow(15_000).limit == INITIAL
    assert PublishWindow(1000, budget=DEEP_BUDGET).limit == 1000  # never above the ceiling
    for step in range(1, 400):  # 2,000 confirms a second
        window.confirmed(20, step * 0.01, limited=True)
    assert window.limit == int(2000 * DEEP_BUDGET) < DEEP_START
    window.restart()
    assert window.limit == INITIAL
