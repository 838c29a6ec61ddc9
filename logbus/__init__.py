"""logbus: route log records through RabbitMQ, or the same routing in-process.

The public surface is small: :class:`Emitter` and :class:`Subscriber` over any
transport URL (``amqp://``, ``memory://``, ...), their async twins
:class:`AsyncEmitter` and :class:`AsyncSubscriber` (aio-pika), :class:`LogRecord` and
:class:`Severity`, the topology loader, and the :mod:`logbus.errors` tree.
"""

from __future__ import annotations

from logbus import errors, topology
from logbus.emitter import AsyncEmitter, Emitter
from logbus.errors import LogbusError
from logbus.record import LogRecord, Severity, decode, parse_routing_key
from logbus.settings import Settings
from logbus.subscriber import AsyncSubscriber, Subscriber
from logbus.transports import connect

__all__ = [
    "AsyncEmitter",
    "AsyncSubscriber",
    "Emitter",
    "LogRecord",
    "LogbusError",
    "Settings",
    "Severity",
    "Subscriber",
    "__version__",
    "connect",
    "decode",
    "errors",
    "parse_routing_key",
    "topology",
]

__version__ = "0.1.0"
