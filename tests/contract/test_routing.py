"""Contract: routing through each exchange type, exchange-to-exchange bindings, returns."""

from __future__ import annotations

import pytest

from logbus.errors import NotFound, PreconditionFailed, Unroutable
from logbus.message import Message, Properties
from logbus.transports import Transport


def drain(transport: Transport, queue: str) -> list[str]:
    """Every routing key waiting in ``queue``, acked, in order."""
    keys = []
    while (delivery := transport.get(queue)) is not None:
        keys.append(delivery.routing_key)
        delivery.ack()
    return keys


def publish(transport: Transport, exchange: str, key: str, headers: dict | None = None) -> None:
    """Publish a small confirmed message (not mandatory)."""
    transport.publish(
        Message(b"x", Properties(headers=headers or {}), exchange, key), mandatory=False
    )


def test_topic_exchange_routes_by_pattern(make, transport):
    """A topic queue gets the keys its pattern matches: * one word, # zero or more."""
    ex = make.exchange("topic", "topic", auto_delete=False)
    star, hash_ = make.queue("star"), make.queue("hash")
    transport.bind_queue(star, ex, "kern.*")
    transport.bind_queue(hash_, ex, "kern.#")
    for key in ("kern", "kern.critical", "kern.a.b", "auth.critical"):
        publish(transport, ex, key)
    assert drain(transport, star) == ["kern.critical"]
    assert drain(transport, hash_) == ["kern", "kern.critical", "kern.a.b"]


def test_direct_exchange_routes_by_exact_key(make, transport):
    """A direct queue gets only its exact key."""
    ex = make.exchange("direct", "direct")
    q = make.queue("q")
    transport.bind_queue(q, ex, "kern.critical")
    for key in ("kern.critical", "kern.error", "kern.*"):
        publish(transport, ex, key)
    assert drain(transport, q) == ["kern.critical"]


def test_fanout_exchange_routes_everything_to_every_queue(make, transport):
    """Every queue bound to a fanout gets every message, whatever the key."""
    ex = make.exchange("fanout", "fanout")
    a, b = make.queue("a"), make.queue("b")
    transport.bind_queue(a, ex, "ignored")
    transport.bind_queue(b, ex)
    publish(transport, ex, "kern.critical")
    publish(transport, ex, "")
    assert drain(transport, a) == ["kern.critical", ""]
    assert drain(transport, b) == ["kern.critical", ""]


def test_headers_exchange_matches_all_or_any(make, transport):
    """x-match all needs every header, any needs one; x- arguments are ignored."""
    ex = make.exchange("headers", "headers")
    all_q, any_q = make.queue("all"), make.queue("any")
    transport.bind_queue(all_q, ex, "", {"x-match": "all", "host": "web1", "app": "api"})
    transport.bind_queue(any_q, ex, "", {"x-match": "any", "host": "web1", "app": "api"})
    publish(transport, ex, "both", {"host": "web1", "app": "api"})
    publish(transport, ex, "host", {"host": "web1"})
    publish(transport, ex, "none", {"host": "db1"})
    assert drain(transport, all_q) == ["both"]
    assert drain(transport, any_q) == ["both", "host"]


def test_default_exchange_routes_to_the_queue_named_by_the_key(make, transport):
    """Publishing to '' with a queue's name as key puts it in that queue."""
    q = make.queue("work")
    publish(transport, "", q)
    assert drain(transport, q) == [q]


def test_exchange_to_exchange_binding_keeps_the_routing_key(make, transport):
    """A topic -> direct binding with '#' forwards with the original key."""
    topic = make.exchange("topic", "topic")
    direct = make.exchange("direct", "direct")
    transport.bind_exchange(direct, topic, "#")
    q = make.queue("q")
    transport.bind_queue(q, direct, "kern.critical")
    publish(transport, topic, "kern.critical")
    publish(transport, topic, "kern.error")
    assert drain(transport, q) == ["kern.critical"]


def test_a_message_reaches_a_queue_once_even_if_several_bindings_match(make, transport):
    """Two matching bindings to one queue still deliver one copy."""
    ex = make.exchange("topic", "topic")
    q = make.queue("q")
    transport.bind_queue(q, ex, "kern.*")
    transport.bind_queue(q, ex, "*.critical")
    publish(transport, ex, "kern.critical")
    assert drain(transport, q) == ["kern.critical"]


def test_mandatory_unroutable_publish_is_returned(make, transport):
    """A mandatory message no queue takes raises Unroutable naming exchange and key."""
    ex = make.exchange("topic", "topic")
    with pytest.raises(Unroutable) as info:
        transport.publish(Message(b"x", Properties(), ex, "nobody.listens"), mandatory=True)
    assert info.value.routing_key == "nobody.listens"
    assert ex in str(info.value)


def test_publishing_to_a_missing_exchange_fails_with_its_name(names, transport):
    """A publish to an exchange that does not exist is NOT_FOUND, naming it."""
    missing = names("missing")
    with pytest.raises(NotFound, match=missing):
        transport.publish(Message(b"x", Properties(), missing, "k"))


def test_passive_declare_of_a_missing_queue_fails_with_its_name(names, transport):
    """A passive declare of an unknown queue is NOT_FOUND, naming it."""
    missing = names("nope")
    with pytest.raises(NotFound, match=missing):
        transport.declare_queue(missing, passive=True)


def test_binding_to_a_missing_exchange_fails_with_its_name(make, names, transport):
    """Binding a queue to an exchange that does not exist is NOT_FOUND."""
    q = make.queue("q")
    with pytest.raises(NotFound, match=names("ghost")):
        transport.bind_queue(q, names("ghost"), "k")


def test_redeclaring_an_exchange_with_another_type_is_a_precondition_failure(make, transport):
    """Redeclaring with another type raises PreconditionFailed naming the property."""
    ex = make.exchange("x", "topic")
    with pytest.raises(PreconditionFailed, match="type"):
        transport.declare_exchange(ex, "direct")


def test_redeclaring_a_queue_with_other_durability_is_a_precondition_failure(make, transport):
    """Redeclaring a durable queue as transient raises PreconditionFailed naming durable."""
    q = make.queue("q", durable=True)
    with pytest.raises(PreconditionFailed, match="durable"):
        transport.declare_queue(q, durable=False)


def test_redeclaring_a_queue_with_other_arguments_is_a_precondition_failure(make, transport):
    """Redeclaring a queue with another x-max-length raises PreconditionFailed naming it."""
    q = make.queue("q", arguments={"x-max-length": 10})
    with pytest.raises(PreconditionFailed, match="x-max-length"):
        transport.declare_queue(q, arguments={"x-max-length": 20})


def test_redeclaring_identically_is_idempotent(make, transport):
    """The same declaration twice is accepted and changes nothing."""
    ex = make.exchange("x", "topic")
    q = make.queue("q", arguments={"x-max-length": 10})
    transport.declare_exchange(ex, "topic")
    info = transport.declare_queue(q, arguments={"x-max-length": 10})
    assert info.name == q
    assert info.message_count == 0


def test_deleting_a_missing_queue_succeeds_with_zero_messages(names, transport):
    """queue.delete of a queue that does not exist is not an error (RabbitMQ 3.x)."""
    assert transport.delete_queue(names("never")) == 0


def test_deleting_a_missing_exchange_succeeds(names, transport):
    """exchange.delete of an exchange that does not exist is not an error."""
    transport.delete_exchange(names("never"))


def test_unbinding_a_binding_that_does_not_exist_succeeds(make, transport):
    """queue.unbind of a binding never made is not an error."""
    ex = make.exchange("topic", "topic")
    q = make.queue("q")
    transport.unbind_queue(q, ex, "never.bound")


def test_an_exclusive_quorum_queue_is_refused(names, transport):
    """A quorum queue must be durable and not exclusive: PRECONDITION_FAILED."""
    with pytest.raises(PreconditionFailed):
        transport.declare_queue(
            names("quorum"), durable=True, exclusive=True, arguments={"x-queue-type": "quorum"}
        )
