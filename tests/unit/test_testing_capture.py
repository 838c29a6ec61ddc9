"""logbus.testing.Capture on the in-process broker: what it catches, and how it fails.

Each test has a ``memory://`` broker of its own (the plugin's ``logbus_inprocess_url``).
"""

from __future__ import annotations

import re

import pytest

from logbus.errors import ConfigError
from logbus.testing import Capture, prefixed
from logbus.topology import Binding, EmitTarget, Exchange, Queue, Topology, default


def two_targets() -> Topology:
    """A topic exchange and a headers exchange, each an emit target; a DLX'd queue."""
    return Topology(
        exchanges=(
            Exchange(name="app.topic", type="topic"),
            Exchange(name="app.headers", type="headers"),
            Exchange(name="app.dead", type="fanout"),
        ),
        queues=(Queue(name="app.work", dead_letter_exchange="app.dead"),),
        bindings=(Binding(source="app.topic", destination="app.work", routing_key="#"),),
        emit=(EmitTarget(exchange="app.topic"), EmitTarget(exchange="app.headers")),
    )


def test_prefixed_renames_every_name_and_every_reference():
    """Exchanges, queues, bindings, targets and dead-letter exchanges all get the prefix."""
    topology = prefixed(two_targets(), "t1.")
    assert [e.name for e in topology.exchanges] == ["t1.app.topic", "t1.app.headers", "t1.app.dead"]
    assert topology.queues[0].name == "t1.app.work"
    assert topology.queues[0].dead_letter_exchange == "t1.app.dead"
    assert (topology.bindings[0].source, topology.bindings[0].destination) == (
        "t1.app.topic",
        "t1.app.work",
    )
    assert [t.exchange for t in topology.emit] == ["t1.app.topic", "t1.app.headers"]


def test_prefixed_keeps_the_default_exchange_and_key_templates():
    """A default-exchange target keeps ``""``; its queue-name key is prefixed, a template is not."""
    base = Topology(
        queues=(Queue(name="jobs"),),
        emit=(EmitTarget(exchange="", key="jobs"), EmitTarget(exchange="", key="{facility}")),
    )
    topology = prefixed(base, "t2.")
    assert [(t.exchange, t.key) for t in topology.emit] == [("", "t2.jobs"), ("", "{facility}")]


def test_a_capture_finds_what_its_emitter_published(logbus_inprocess_url):
    """find by key pattern, message, attribute and field; records in arrival order."""
    with Capture(logbus_inprocess_url) as capture, capture.emitter() as emitter:
        emitter.emit("auth.info", "signed up", host="web1", user="ada")
        emitter.emit("kern.critical", "disk failed", host="db1")
        assert capture.find(key="auth.*", user="ada").message == "signed up"
        assert capture.find(severity="crit", host="db1").routing_key == "kern.critical"
        assert capture.find(message=re.compile("^disk")).facility == "kern"
        assert [r.message for r in capture.records] == ["signed up", "disk failed"]


def test_select_is_every_match_so_far_and_clear_forgets(logbus_inprocess_url):
    """select never waits; clear empties what was captured."""
    with Capture(logbus_inprocess_url) as capture, capture.emitter() as emitter:
        emitter.emit_many([("kern.info", f"step {i}") for i in range(3)])
        assert len(capture.select(key="kern.#")) == 3
        assert capture.select(key="user.#") == []
        capture.clear()
        assert capture.records == []


def test_a_record_published_to_two_targets_is_captured_once(logbus_inprocess_url):
    """One record, two emit exchanges (topic and headers): one captured record, one duplicate."""
    with Capture(logbus_inprocess_url, topology=two_targets()) as capture:
        with capture.emitter() as emitter:
            emitter.emit("user.info", "hello")
        assert [r.message for r in capture.wait_for(1)] == ["hello"]
        assert capture.duplicates == 1


def test_a_missing_record_fails_listing_what_was_captured(logbus_inprocess_url):
    """The AssertionError names the criteria, the wait, and each captured record."""
    with Capture(logbus_inprocess_url) as capture, capture.emitter() as emitter:
        emitter.emit("auth.info", "signed up", host="web1", user="ada")
        with pytest.raises(AssertionError) as caught:
            capture.find(key="auth.error", user="bob", timeout=0.05)
    assert str(caught.value) == (
        "expected 1 record(s) matching key='auth.error', user='bob', found 0 (waited 0.05s); "
        "1 record(s) captured:\n"
        "  auth.info host=web1 app=logbus 'signed up' {'user': 'ada'}"
    )


def test_wait_for_fails_saying_nothing_was_captured(logbus_inprocess_url):
    """With nothing published, the failure says so rather than listing nothing."""
    with Capture(logbus_inprocess_url) as capture, pytest.raises(AssertionError) as caught:
        capture.wait_for(2, timeout=0.05)
    assert str(caught.value) == (
        "expected 2 record(s) matching anything, found 0 (waited 0.05s); "
        "nothing was captured at all"
    )


def test_captures_on_one_broker_are_isolated_by_their_prefix(logbus_inprocess_url):
    """Two captures sharing a broker get fresh prefixes and only their own records."""
    with Capture(logbus_inprocess_url) as one, Capture(logbus_inprocess_url) as two:
        assert one.prefix != two.prefix
        with one.emitter() as emitter:
            emitter.emit("user.info", "for one")
        assert [r.message for r in one.records] == ["for one"]
        assert two.records == []


def test_closing_deletes_the_prefixed_topology(logbus_inprocess_url):
    """A prefixed capture leaves nothing behind on the broker."""
    from logbus.errors import NotFound
    from logbus.transports import connect

    with Capture(logbus_inprocess_url) as capture:
        topic = capture.topology.emit[0].exchange
    with connect(logbus_inprocess_url) as transport, pytest.raises(NotFound):
        transport.declare_exchange(topic, "topic", passive=True)


def test_the_environment_and_settings_point_at_the_capture(logbus_inprocess_url):
    """environ and settings name the capture's URL and a file holding its topology."""
    from logbus.topology import load

    with Capture(logbus_inprocess_url) as capture:
        assert capture.environ["LOGBUS_URL"] == logbus_inprocess_url
        assert load(capture.environ["LOGBUS_CONFIG"]) == capture.topology
        assert capture.settings.topology() == capture.topology


def test_a_topology_that_cannot_be_bound_to_take_everything_is_refused(logbus_inprocess_url):
    """Emitting only to a direct exchange cannot be captured whole: a ConfigError says why."""
    direct = Topology(
        exchanges=(Exchange(name="d", type="direct"),),
        emit=(EmitTarget(exchange="d", key="{severity}"),),
    )
    with pytest.raises(ConfigError, match="topic, fanout or headers"):
        Capture(logbus_inprocess_url, topology=direct).start()


def test_using_a_capture_before_starting_it_says_so(logbus_inprocess_url):
    """records before start() is a clear error, not an AttributeError."""
    with pytest.raises(RuntimeError, match="not started"):
        _ = Capture(logbus_inprocess_url, topology=default()).records
