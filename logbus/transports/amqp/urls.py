"""Broker URLs as both AMQP drivers take them: a failover list, each URL amqp:// or amqps://.

URL parsing and redaction are :mod:`logbus._urls`'s (the one parser); this is the
AMQP glue on top that the pika and the aio-pika drivers share, so that a list
one of them accepts the other does not refuse, and both say the same when it is
wrong. What each driver builds from a URL (pika parameters, a yarl URL and TLS
context) stays with the driver.
"""

from __future__ import annotations

from logbus._urls import parse_url, redact_url, split_urls
from logbus.errors import ConfigError

__all__ = ["SCHEMES", "broker_urls"]

#: The URL schemes of RabbitMQ: AMQP 0-9-1, in the clear or over TLS.
SCHEMES = ("amqp", "amqps")


def broker_urls(url: str, driver: str) -> list[str]:
    """The URLs of ``url`` (one, or a comma-separated failover list), stripped.

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
    return urls
