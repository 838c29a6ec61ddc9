"""TLS for ``amqps://``, in one place for the pika and the aio-pika transports.

:func:`client_context` builds the context both use: the broker's certificate
and host name are always verified, against the system's CAs or the files the
URL names (``cafile=``, ``capath=``, a client ``certfile=``/``keyfile=``); a
file that cannot be loaded is a :class:`~logbus.errors.ConfigError` at once,
never a connect failure retried for a while. :func:`verify_failure` words a
refused certificate the same way on both paths. Nothing here imports a driver.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from logbus.errors import ConfigError

__all__ = ["TLS_QUERY", "TLS_REFUSED", "client_context", "verify_failure"]

#: Query parameters of an ``amqps://`` URL that logbus reads itself (hidden from the drivers).
TLS_QUERY = ("cafile", "ca_certs", "capath", "certfile", "keyfile", "server_hostname")
_FILES = ("cafile", "ca_certs", "capath", "certfile", "keyfile")
#: How :func:`verify_failure` starts, so that callers can tell a refused certificate.
TLS_REFUSED = "TLS certificate verify failed"


def client_context(
    query: Mapping[str, str], shown: str, *, cafile: str | None = None
) -> ssl.SSLContext:
    """A verifying client context for an ``amqps://`` URL whose query is ``query``.

    ``cafile`` (an option) wins over the URL's ``cafile=``/``ca_certs=``; ``shown``
    is the URL with its password hidden, for the error.
    """
    try:
        # create_default_context: CERT_REQUIRED and host name checking, system CAs.
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=cafile or query.get("cafile") or query.get("ca_certs") or None,
            capath=query.get("capath") or None,
        )
        if query.get("certfile"):
            context.load_cert_chain(query["certfile"], query.get("keyfile") or None)
    except (OSError, ssl.SSLError, ValueError, TypeError) as exc:
        files = {key: query[key] for key in _FILES if query.get(key)}
        if cafile:
            files["cafile"] = cafile
        named = ", ".join(f"{key}={value}" for key, value in files.items())
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"cannot load the TLS files for {shown} ({named}): {why}; check those paths"
        ) from None
    return context


def verify_failure(exc: BaseException) -> str | None:
    """Why the broker's certificate was refused, if ``exc`` (or what it wraps) says so."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        found = pending.pop()
        if not isinstance(found, BaseException) or id(found) in seen:
            continue
        seen.add(id(found))
        if isinstance(found, ssl.SSLCertVerificationError):
            detail = found.verify_message or found.reason or "refused"
            return f"{TLS_REFUSED}: {str(detail).rstrip('.')}"
        pending.extend([found.__cause__, found.__context__, *found.args])
    return None
