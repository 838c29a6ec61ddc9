"""Broker URLs as they may be shown: :func:`redact_url` hides every password.

It lives apart from :mod:`logbus.settings` (which re-exports it) so that code
which only shows URLs, such as error messages on the fast ``logbus emit`` path,
does not import pydantic.
"""

from __future__ import annotations

import re

__all__ = ["redact_url", "split_urls"]

# A comma starts a new URL only where a scheme follows, so a raw comma inside a
# password stays inside its URL (and gets redacted with it).
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")


def split_urls(url: str) -> list[str]:
    """A comma-separated failover list as its URLs (a comma in a password stays put)."""
    return _NEXT_URL.split(url)


def redact_url(url: str) -> str:
    """``url`` (one URL or a comma-separated list) with every password replaced by ``***``.

    ``amqp://guest:guest@host:5672/%2F`` becomes ``amqp://guest:***@host:5672/%2F``.
    """
    return ",".join(_redact_one(part) for part in _NEXT_URL.split(url))


def _redact_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    # The credentials end at the *last* "@": a password with a raw "@", "/", "?" or
    # "#" in it is then still hidden whole. The price, an "@" in a vhost or query,
    # is that more than the password is hidden; never less.
    userinfo, at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (sep and at and colon and password):
        return url
    return f"{scheme}{sep}{user}:***@{host}"
