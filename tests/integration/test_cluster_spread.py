"""Processes spread over a cluster's nodes: each forked child orders the failover list anew."""

from __future__ import annotations

import os
from collections import Counter

from logbus.transports.amqp.urls import broker_urls

NODES = [f"amqp://guest:guest@rabbit-{i}:5672/%2F" for i in range(1, 4)]
LIST = ",".join(NODES)


def test_forked_processes_spread_over_the_nodes() -> None:
    """60 forked children (as a pre-fork server makes) pick each of 3 nodes first
    about a third of the time: a child draws its own key, not its parent's."""
    firsts: Counter[str] = Counter()
    for _ in range(60):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its first URL, then out without pytest's teardown
            os.close(read)
            os.write(write, broker_urls(LIST, "pika")[0].encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            firsts[pipe.read().decode()] += 1
        os.waitpid(pid, 0)
    # Binomial(60, 1/3): mean 20; each node under 6 has a chance below 1e-5.
    assert set(firsts) == set(NODES)
    assert min(firsts.values()) >= 6, firsts
