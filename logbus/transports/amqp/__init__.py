"""AMQP 0-9-1 to RabbitMQ: what both AMQP drivers share, and the pika driver.

The shared modules (``errors``, ``reconnect``, ``tls``, ``window``) import
neither pika nor aio-pika: the aio-pika driver (:mod:`logbus.transports.aio`)
reads them too. The ``pika_*`` modules are the sync driver, whose public face is
:class:`AmqpTransport` (``amqp://`` and ``amqps://``).

``from logbus.transports.amqp import AmqpTransport`` loads the pika driver on
first use, not when this package is imported: the aio driver and the emitter,
importing a shared module, would otherwise pay for pika's import too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from logbus.transports.amqp.pika_transport import AmqpConsumer, AmqpTransport

__all__ = ["AmqpConsumer", "AmqpTransport"]


def __getattr__(name: str) -> Any:
    """The pika driver's public names, imported when first asked for."""
    if name in __all__:
        return getattr(importlib.import_module("logbus.transports.amqp.pika_transport"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
