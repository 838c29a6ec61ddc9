"""logbus: route log records through RabbitMQ, or the same routing in-process.

The public surface is small: :class:`Emitter` and :class:`Subscriber` over any
transport URL (``amqp://``, ``memory://``, ...), their async twins
:class:`AsyncEmitter` and :class:`AsyncSubscriber` (aio-pika), :class:`LogRecord` and
:class:`Severity`, the topology loader, and the :mod:`logbus.errors` tree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Public name -> the module it lives in. Imported on first use, so that the command
# line (and anything importing one submodule) does not pay for all of logbus.
_LAZY = {
    "AsyncEmitter": "logbus.emitter",
    "Emitter": "logbus.emitter",
    "AsyncSubscriber": "logbus.subscriber",
    "Subscriber": "logbus.subscriber",
    "LogRecord": "logbus.record",
    "Severity": "logbus.record",
    "decode": "logbus.record",
    "parse_routing_key": "logbus.record",
    "LogbusError": "logbus.errors",
    "Settings": "logbus.settings",
    "connect": "logbus.transports",
}


def __getattr__(name: str) -> Any:
    if name in ("errors", "topology"):
        return importlib.import_module(f"logbus.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'logbus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
