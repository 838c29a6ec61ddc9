"""Transports by URL scheme, imported on first use.

``connect("memory://")`` gives a :class:`~logbus.transports.base.Transport`;
each scheme maps to a ``"module:Class"`` string so that importing logbus never
imports pika, aio-pika or gevent until a URL asks for them.
"""

from __future__ import annotations

import importlib
from typing import Any, cast

from logbus._urls import parse_url, split_urls
from logbus.errors import ConfigError
from logbus.transports.base import DEFAULT_PREFETCH, Consumer, Delivery, Transport

__all__ = [
    "DEFAULT_PREFETCH",
    "TRANSPORTS",
    "Consumer",
    "Delivery",
    "Transport",
    "connect",
    "transport_class",
]

#: URL scheme -> "module:Class" of its transport.
TRANSPORTS: dict[str, str] = {
    "memory": "logbus.transports.inprocess.memory:MemoryTransport",
    "local": "logbus.transports.inprocess.local:LocalTransport",
    "process": "logbus.transports.inprocess.process:ProcessTransport",
    "gevent": "logbus.transports.inprocess.green:GreenTransport",
    "amqp": "logbus.transports.amqp.pika_transport:AmqpTransport",
    "amqps": "logbus.transports.amqp.pika_transport:AmqpTransport",
}


def scheme_of(url: str) -> str:
    """The URL's scheme (of its first host, for a comma-separated failover list).

    Every URL of the list is read first: a malformed one is a ``ConfigError``.
    """
    parts = [parse_url(part.strip()) for part in split_urls(url) if part.strip()]
    return parts[0].scheme.lower() if parts else ""


def transport_class(url: str) -> type:
    """The transport class for ``url``, imported now; ``ConfigError`` for an unknown scheme."""
    scheme = scheme_of(url)
    target = TRANSPORTS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(TRANSPORTS))
        raise ConfigError(f"unknown transport URL scheme {scheme!r}; use one of: {known}")
    module_name, _, class_name = target.partition(":")
    return cast(type, getattr(importlib.import_module(module_name), class_name))


def connect(url: str, **options: Any) -> Transport:
    """Open a transport for ``url``; raises ``ConfigError`` for an unknown scheme."""
    return cast(Transport, transport_class(url)(url, **options))
