"""Failover URLs in a shuffled order per process, so a fleet spreads over a cluster's nodes."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from logbus.transports.amqp import urls as amqp_urls
from logbus.transports.amqp.urls import broker_urls, failover_order

NODES = [f"amqp://guest:guest@rabbit-{i}:5672/%2F" for i in range(1, 4)]
LIST = ",".join(NODES)


@given(st.lists(st.text(min_size=1), max_size=8))
def test_the_order_is_a_permutation_of_the_urls(urls: list[str]) -> None:
    """Nothing is added, dropped or repeated: only the order changes."""
    assert sorted(failover_order(urls)) == sorted(urls)


def test_the_order_is_the_same_for_every_call_in_a_process() -> None:
    """Every connection of one process agrees on the order (reconnects start where it left)."""
    first = broker_urls(LIST, "pika")
    assert all(broker_urls(LIST, "aio-pika") == first for _ in range(20))


def test_a_single_url_is_left_alone() -> None:
    """One URL is one URL, stripped."""
    assert broker_urls(f" {NODES[0]} ", "pika") == [NODES[0]]


def test_new_keys_spread_the_first_pick_evenly() -> None:
    """Over 3,000 keys (as 3,000 processes draw), each node comes first about 1,000 times."""
    saved = amqp_urls._key[0]
    firsts: Counter[str] = Counter()
    try:
        for _ in range(3000):
            amqp_urls._draw_key()
            firsts[failover_order(NODES)[0]] += 1
    finally:
        amqp_urls._key[0] = saved
    # Binomial(3000, 1/3): sd about 26; 850..1150 is over 5.7 sd each side.
    assert all(850 <= firsts[node] <= 1150 for node in NODES), firsts
