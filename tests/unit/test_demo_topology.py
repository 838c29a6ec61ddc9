"""The demo's topology: the default one renamed and made non-durable, its bounds kept whole."""

from __future__ import annotations

from logbus.demo import demo_topology
from logbus.topology import default


def test_the_work_queue_keeps_its_bound_and_what_happens_at_it():
    """A bound without its overflow is drop-head: the oldest records lost silently."""
    (queue,) = demo_topology("d.").queues
    (base,) = default().queues
    assert queue.name == "d." + base.name
    assert (queue.max_length, queue.overflow) == (base.max_length, base.overflow)
    assert queue.overflow == "reject-publish"
    assert not queue.durable and not queue.auto_delete
