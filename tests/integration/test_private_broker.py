"""The private RabbitMQ node the fault tests use answers, apart from the shared one."""

from __future__ import annotations

import pika
import pytest

from tests.private_broker import PrivateBroker

pytestmark = pytest.mark.faults


def test_private_node_is_not_the_shared_one(private_broker: PrivateBroker) -> None:
    """A queue declared on the private node is not visible on the shared broker's port."""
    connection = pika.BlockingConnection(pika.URLParameters(private_broker.url))
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        assert queue in private_broker.ctl("list_queues", "name")
    finally:
        connection.close()
    assert "5672" not in private_broker.url
