"""The in-process broker: RabbitMQ's model (exchanges, queues, bindings, acks) in one process.

Transports (``memory://``, and later the process and gevent ones) drive it;
it never does I/O itself. See :mod:`logbus.broker.core`.
"""

from __future__ import annotations

import threading

from logbus.broker.core import Broker, PublishOutcome
from logbus.broker.queues import Delivered
from logbus.broker.sessions import Session, open_session

__all__ = ["Broker", "Delivered", "PublishOutcome", "Session", "named", "open_session"]

_named: dict[str, Broker] = {}
_named_lock = threading.Lock()


def named(name: str) -> Broker:
    """The process-wide broker called ``name``, created on first use."""
    with _named_lock:
        broker = _named.get(name)
        if broker is None:
            broker = _named[name] = Broker(name)
        return broker
