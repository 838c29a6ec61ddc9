"""The demo's topology: the default one renamed and made non-durable, its bounds kept whole."""

from __future__ import annotations

from logbus.demo import demo_topology
from logbus.topology import default


def test_the_work_queue_keeps_its_bound_and_what_happens_at_it():
    """A bound without its overflow is drop-head: the oldest records lost silently."""
    (queue,) = demo_topology("d.").queues
    base = default().queue("logbus.tasks")
    assert queue.name == "d." + base.name
    assert (queue.max_length, queue.overflow) == (base.max_length, base.overflow)
    assert queue.overflow == "reject-publish"
    assert not queue.durable and not queue.auto_delete


def test_the_demo_leaves_the_history_stream_out():
    """A stream is durable by nature: the demo, which leaves nothing behind, has none."""
    demo = demo_topology("d.")
    assert "d.logbus.history" not in {q.name for q in demo.queues}
    assert all(b.destination != "d.logbus.history" for b in demo.bindings)
