"""The Python API (Emitter, Subscriber, connect) on the in-process memory:// transport."""

from __future__ import annotations

import secrets

import pytest

import logbus
from logbus import Emitter, LogRecord, Subscriber
from logbus.errors import ConfigError, NotConfirmed, RoutingKeyError
from logbus.topology import Topology, default, loads


@pytest.fixture
def url() -> str:
    """A fresh named in-process broker for this test."""
    return f"memory://api-{secrets.token_hex(4)}"


def test_public_names_are_exported():
    """Everything in logbus.__all__ exists."""
    for name in logbus.__all__:
        assert hasattr(logbus, name), name


def test_a_record_reaches_topic_direct_fanout_and_headers_subscribers(url):
    """One emit reaches a subscriber of each style through the default topology."""
    subs = [
        Subscriber(url, keys=["kern.*"]),
        Subscriber(url, exact=["kern.critical"]),
        Subscriber(url, all=True),
        Subscriber(url, headers={"host": "web1"}),
        Subscriber(url, severities=["crit"]),
    ]
    with Emitter(url) as emitter:
        sent = emitter.emit("kern.crit", "disk failed", host="web1", disk="sda1")
    for sub in subs:
        got = sub.get(timeout=2)
        assert got == sent.replace(key="kern.critical"), sub.bindings
        sub.close()
    assert sent.fields == {"disk": "sda1"}
    assert sent.severity == logbus.Severity.CRITICAL


def test_a_subscriber_does_not_get_records_its_bindings_do_not_match(url):
    """A kern.* subscriber does not see auth records."""
    with Subscriber(url, keys=["kern.*"]) as sub, Emitter(url) as emitter:
        emitter.emit("auth.info", "login")
        emitter.emit("kern.info", "boot")
        assert sub.get(timeout=2).message == "boot"
        assert sub.get(timeout=0.1) is None


def test_emit_many_delivers_every_record_in_order(url):
    """A batch of records arrives complete and in order."""
    with Subscriber(url, all=True) as sub, Emitter(url) as emitter:
        count = emitter.emit_many([("user.info", f"line {i}") for i in range(50)])
        assert count == 50
        got = [sub.get(timeout=2) for _ in range(50)]
    assert [r.message for r in got] == [f"line {i}" for i in range(50)]


def test_emitted_records_wait_in_the_work_queue(url):
    """The default topology's work queue keeps records for a later worker."""
    with Emitter(url) as emitter:
        emitter.emit("cron.notice", "backup done")
        delivery = emitter.transport.get("logbus.tasks")
    assert delivery is not None
    assert logbus.decode(delivery.body).message == "backup done"


def test_a_bad_routing_key_is_refused_before_publishing(url):
    """emit with 'kern..critical' raises RoutingKeyError."""
    with Emitter(url) as emitter, pytest.raises(RoutingKeyError):
        emitter.emit("kern..critical", "x")


def test_a_full_work_queue_is_back_pressure_not_a_silent_drop(url):
    """At the work queue's bound the emit raises NotConfirmed."""
    toml = """
[[exchanges]]
name = "t"
type = "topic"
[[queues]]
name = "bounded"
max_length = 2
overflow = "reject-publish"
[[bindings]]
source = "t"
destination = "bounded"
routing_key = "#"
[[emit]]
exchange = "t"
"""
    with Emitter(url, topology=loads(toml)) as emitter:
        emitter.emit("user.info", "1")
        emitter.emit("user.info", "2")
        with pytest.raises(NotConfirmed):
            emitter.emit("user.info", "3")


def test_an_extra_emit_target_renders_its_key_template(url):
    """A severity-only direct target (the tutorial's routing chapter) gets key 'error'."""
    base = default()
    extra = loads(
        """
[[exchanges]]
name = "by-severity"
type = "direct"
[[emit]]
exchange = "by-severity"
key = "{severity}"
"""
    )
    topo = Topology(
        exchanges=base.exchanges + extra.exchanges,
        queues=base.queues,
        bindings=base.bindings,
        emit=base.emit + extra.emit,
    )
    with Emitter(url, topology=topo) as emitter:
        q = emitter.transport.declare_queue("", exclusive=True).name
        emitter.transport.bind_queue(q, "by-severity", "error")
        emitter.emit("mail.err", "bounce")
        delivery = emitter.transport.get(q)
    assert delivery is not None
    assert delivery.routing_key == "error"


def test_a_subscriber_needs_something_to_bind(url):
    """A Subscriber with no keys, severities, exact keys, headers or all is a ConfigError."""
    with pytest.raises(ConfigError):
        Subscriber(url)


def test_a_plain_body_reaches_a_subscriber_as_a_record(url):
    """Bytes that are not UTF-8 arrive as a record keeping them, then the next record."""
    from logbus.message import Message, Properties

    with Subscriber(url, all=True) as sub, Emitter(url) as emitter:
        emitter.transport.publish(Message(b"\xff\xfe", Properties(), "logbus.topic", "x.y"))
        emitter.emit("user.info", "fine")
        plain = sub.get(timeout=2)
        assert (plain.message, plain.fields["body_base64"], plain.key) == (
            "\\xff\\xfe",
            "//4=",
            "x.y",
        )
        assert sub.get(timeout=2).message == "fine"


def test_a_records_ack_happens_when_the_next_is_asked_for(url):
    """Breaking out of the loop before acking leaves the record for redelivery."""
    sub = Subscriber(url, queue="durable-sub", durable=True, keys=["#"])
    with Emitter(url) as emitter:
        emitter.emit("user.info", "one")
    record = sub.get(timeout=2)
    assert isinstance(record, LogRecord)
    sub.transport.close()  # crash before the ack: the record goes back to the queue
    with Subscriber(url, queue="durable-sub", durable=True, keys=["#"]) as again:
        assert again.get(timeout=2).message == "one"
