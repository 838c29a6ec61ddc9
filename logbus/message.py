"""The bytes-level message every engine moves: a body and its AMQP basic properties.

Brokers and transports deal only in :class:`Message`; turning a message into a
:class:`~logbus.record.LogRecord` (and back) is the record module's job. Keeping
this layer free of records is what lets plain AMQP clients publish to logbus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["PERSISTENT", "TRANSIENT", "Message", "Properties", "QueueInfo"]

TRANSIENT = 1
PERSISTENT = 2


@dataclass(frozen=True, slots=True)
class Properties:
    """The AMQP 0-9-1 basic properties logbus reads and writes.

    ``timestamp`` is whole seconds since the epoch (AMQP's resolution);
    ``expiration`` is a per-message TTL in milliseconds, as a string, as AMQP has it.
    """

    content_type: str | None = None
    content_encoding: str | None = None
    delivery_mode: int | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    user_id: str | None = None
    app_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def persistent(self) -> bool:
        """Whether the message asks to survive a broker restart (``delivery_mode=2``)."""
        return self.delivery_mode == PERSISTENT

    def with_headers(self, headers: Mapping[str, Any]) -> Properties:
        """Return a copy whose headers are ``headers``."""
        return replace(self, headers=dict(headers))


@dataclass(frozen=True, slots=True)
class Message:
    """A body with its properties, as published to an exchange under a routing key."""

    body: bytes
    properties: Properties = field(default_factory=Properties)
    exchange: str = ""
    routing_key: str = ""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A queue's name and counts, as ``queue.declare-ok`` reports them."""

    name: str
    message_count: int
    consumer_count: int
