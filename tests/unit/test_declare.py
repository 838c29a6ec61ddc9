"""Declaring a topology: idempotent, and a mismatch names the property and the way out."""

from __future__ import annotations

import secrets

import pytest

from logbus.errors import PreconditionFailed, TopologyError
from logbus.topology import declare, default, mismatch
from logbus.transports import connect


def fresh():
    """A connection to a fresh in-process broker."""
    return connect(f"memory://declare-{secrets.token_hex(4)}")


def test_declaring_the_default_topology_twice_is_idempotent():
    """The second declare of the same topology succeeds and changes nothing."""
    transport = fresh()
    declare(transport, default())
    declare(transport, default())
    assert transport.declare_queue("logbus.tasks", passive=True).message_count == 0


def test_an_exchange_with_other_durability_is_a_topology_error_naming_both_values():
    """A transient logbus.topic on the broker is reported as durable: broker false, config true."""
    transport = fresh()
    transport.declare_exchange("logbus.topic", "topic", durable=False)
    with pytest.raises(TopologyError) as info:
        declare(transport, default())
    text = str(info.value)
    assert "exchange 'logbus.topic'" in text
    assert "durable: broker has false, config has true" in text
    assert "change the config" in text
    assert "delete the exchange" in text


def test_a_queue_with_another_bound_is_a_topology_error_naming_the_argument():
    """A work queue declared with another x-max-length is named with both values."""
    transport = fresh()
    transport.declare_queue("logbus.tasks", arguments={"x-max-length": 5})
    with pytest.raises(TopologyError, match="x-max-length: broker has 5, config has 100000"):
        declare(transport, default())


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': "
            "received '100000' but current is '5'",
            "x-max-length: broker has 5, config has 100000",
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': "
            "received none but current is the value '5' of type 'signedint'",
            "x-max-length: broker has 5, config has none",
        ),
        (
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': "
            "received 'true' but current is 'false'",
            "durable: broker has false, config has true",
        ),
    ],
)
def test_rabbitmq_reply_texts_are_read_into_the_property_and_both_values(reply, expected):
    """RabbitMQ 3.10's 406 reply texts (as the live broker words them) are understood."""
    assert expected in str(mismatch(PreconditionFailed(reply)))


def test_an_unrecognised_refusal_still_names_the_broker_reply():
    """A 406 of another shape is passed on whole rather than lost."""
    error = mismatch(PreconditionFailed("PRECONDITION_FAILED - something else"))
    assert "something else" in str(error)
