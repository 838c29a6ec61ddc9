"""Sender-selected distribution: the ``CC`` and ``BCC`` headers, as RabbitMQ 3.10 reads them.

A message's ``CC`` and ``BCC`` headers, when they are arrays, add their string
elements to the routing keys its exchange matches (on the default exchange,
more queue names); ``BCC`` is taken off the message before any queue gets it.
Either header as anything but an array is a 406 on the channel, in RabbitMQ's
words; non-string elements are skipped. Lower-case ``cc``/``bcc`` are plain headers.
"""

from __future__ import annotations

from dataclasses import replace

from logbus.broker.arguments import amqp_type
from logbus.errors import PreconditionFailed
from logbus.message import Message

__all__ = ["carbon_copies", "without_bcc"]


def carbon_copies(message: Message) -> tuple[str, ...]:
    """The extra routing keys of ``message`` (``CC`` then ``BCC``); raises 406 if malformed."""
    headers = message.properties.headers
    keys: list[str] = []
    for name in ("CC", "BCC"):
        if name not in headers:
            continue
        value = headers[name]
        if not isinstance(value, list | tuple):
            raise PreconditionFailed(
                f'PRECONDITION_FAILED - invalid message: {{unacceptable_type_in_header,"{name}",'
                f"{amqp_type(value)}}}"
            )
        keys.extend(key for key in value if isinstance(key, str))
    return tuple(keys)


def without_bcc(message: Message) -> Message:
    """``message`` with its ``BCC`` header taken off (the one queues get)."""
    headers = dict(message.properties.headers)
    del headers["BCC"]
    return replace(message, properties=replace(message.properties, headers=headers))
