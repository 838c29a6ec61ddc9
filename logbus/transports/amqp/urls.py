"""Broker URLs as both AMQP drivers take them: a failover list, each URL amqp:// or amqps://.

URL parsing and redaction are :mod:`logbus._urls`'s (the one parser); this is the
AMQP glue on top that the pika and the aio-pika drivers share, so that a list
one of them accepts the other does not refuse, and both say the same when it is
wrong. What each driver builds from a URL (pika parameters, a yarl URL and TLS
context) stays with the driver.

*Failover order.* A fleet given the same list of cluster nodes would all connect
to the first one, and all move together to the second when it goes. So each
process puts the list in an order of its own (:func:`failover_order`): the URLs
sorted by a hash keyed with 16 bytes from ``os.urandom``, drawn at import and again
in a forked child. Within a process the order is fixed, so every connection of a
process agrees, and reconnecting still starts from the URL that worked last.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

from logbus._urls import parse_url, redact_url, split_urls
from logbus.errors import ConfigError

__all__ = ["SCHEMES", "broker_urls", "failover_order"]

#: The URL schemes of RabbitMQ: AMQP 0-9-1, in the clear or over TLS.
SCHEMES = ("amqp", "amqps")

# This process's key for failover_order; a forked child draws its own, or a pre-fork
# server's workers would all share their parent's order.
_key = [os.urandom(16)]


def _draw_key() -> None:
    _key[0] = os.urandom(16)


os.register_at_fork(after_in_child=_draw_key)


def failover_order(urls: Sequence[str]) -> list[str]:
    """``urls`` in this process's order: a shuffle that is random per process and the same
    for every call within it (see the module docstring)."""
    key = _key[0]
    return sorted(urls, key=lambda url: hashlib.blake2b(url.encode(), key=key).digest())


def broker_urls(url: str, driver: str) -> list[str]:
    """The URLs of ``url`` (one, or a comma-separated failover list), stripped, in this
    process's :func:`failover_order`.

    ``ConfigError`` when there is none, or when one is not amqp:// or amqps://
    (the message names the ``driver`` and shows the URL without its password).
    """
    urls = [part.strip() for part in split_urls(url) if part.strip()]
    if not urls:
        raise ConfigError("no broker URL given (set LOGBUS_URL or pass a URL)")
    for one in urls:
        if parse_url(one).scheme.lower() not in SCHEMES:
            raise ConfigError(
                f"the {driver} transport needs amqp:// or amqps:// URLs, not {redact_url(one)!r}"
            )
    return failover_order(urls)
