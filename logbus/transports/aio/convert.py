"""Messages between logbus and AMQP as aiormq and pamqp have them.

Deliveries are read at aiormq's level rather than as aio-pika ``IncomingMessage``
objects: those re-encode ``expiration`` as float seconds and default a missing
``priority`` to 0, and logbus hands properties on exactly as the broker sent them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiormq.abc
from pamqp.commands import Basic

from logbus.message import Message, Properties

__all__ = ["from_amqp", "to_amqp"]


def to_amqp(properties: Properties) -> Basic.Properties:
    """logbus properties as pamqp's ``Basic.Properties``."""
    timestamp = properties.timestamp
    return Basic.Properties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=dict(properties.headers) if properties.headers else None,
        delivery_mode=properties.delivery_mode,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        expiration=properties.expiration,
        message_id=properties.message_id,
        timestamp=None if timestamp is None else datetime.fromtimestamp(timestamp, UTC),
        message_type=properties.type,
        user_id=properties.user_id,
        app_id=properties.app_id,
    )


def from_amqp(delivered: aiormq.abc.DeliveredMessage) -> Message:
    """A delivered (or got) AMQP message as a logbus :class:`Message`."""
    p = delivered.header.properties
    timestamp = p.timestamp
    properties = Properties(
        content_type=p.content_type,
        content_encoding=p.content_encoding,
        delivery_mode=p.delivery_mode,
        priority=p.priority,
        correlation_id=p.correlation_id,
        reply_to=p.reply_to,
        expiration=p.expiration,
        message_id=p.message_id,
        timestamp=None if timestamp is None else int(timestamp.timestamp()),
        type=p.message_type,
        user_id=p.user_id,
        app_id=p.app_id,
        headers=dict(p.headers or {}),
    )
    return Message(
        delivered.body,
        properties,
        exchange=delivered.exchange or "",
        routing_key=delivered.routing_key or "",
    )
