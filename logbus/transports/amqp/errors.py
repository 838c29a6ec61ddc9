"""The words of AMQP failures: broker replies and failed connects as logbus errors.

Shared by the pika transport (through ``pika_convert``) and the one-shot
publisher of ``logbus emit`` (``_oneshot``), so that both say exactly the same
thing; nothing here imports pika.
"""

from __future__ import annotations

import re

from logbus.errors import (
    AccessRefused,
    BrokerUnavailable,
    ChannelError,
    ConnectionLost,
    InvalidExpiration,
    NotConfirmed,
    NotFound,
    NotImplementedByBroker,
    PreconditionFailed,
    RecordTooLarge,
    ResourceLocked,
    TransportError,
    Unroutable,
)

__all__ = [
    "INVALID_EXPIRATION",
    "RABBITMQ_MAX_MESSAGE_SIZE",
    "blocked",
    "login_refused",
    "nacked",
    "named_exchange",
    "no_answer",
    "not_confirmed",
    "record_too_large",
    "reply_error",
    "tls_refused",
    "too_large",
    "unconfirmed_in_time",
    "unreachable",
    "unroutable",
]

#: RabbitMQ's words (406) for a per-message expiration that is not decimal digits.
INVALID_EXPIRATION = "PRECONDITION_FAILED - invalid expiration"
_EXCHANGE_IN_TEXT = re.compile(r"exchange '(.*)' in vhost")
#: The largest message any RabbitMQ 3.x accepts, whatever its max_message_size says
#: (the setting's own maximum): a record over it is refused before it is sent.
RABBITMQ_MAX_MESSAGE_SIZE = 512 * 1024**2
# RabbitMQ's words (406) for a message over its max_message_size.
_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")
_INEQUIVALENT_HINT = (
    " (the broker keeps the existing declaration: declare it with the current value, "
    "or delete it first)"
)


def reply_error(code: int, text: str) -> TransportError:
    """The logbus error for an AMQP reply code, keeping the broker's text (it names
    the entity and, for 406, the property that differs)."""
    if code == PreconditionFailed.reply_code:
        oversized = too_large(text)
        if oversized is not None:
            return oversized
    if code == PreconditionFailed.reply_code and INVALID_EXPIRATION in text:
        return InvalidExpiration(text)
    if code == NotFound.reply_code:
        return NotFound(text)
    if code == PreconditionFailed.reply_code:
        return PreconditionFailed(text + _INEQUIVALENT_HINT if "inequivalent" in text else text)
    if code == ResourceLocked.reply_code:
        return ResourceLocked(text)
    if code == NotImplementedByBroker.reply_code:
        return NotImplementedByBroker(text)
    if code == 403:
        hint = " (grant the user permissions on this vhost)" if "refused for user" in text else ""
        return AccessRefused(text + hint)
    return ChannelError(f"the broker refused the operation ({code}): {text}")


def too_large(text: str) -> RecordTooLarge | None:
    """The error for a broker reply refusing a message over its ``max_message_size``.

    RabbitMQ does not announce the limit to clients (neither ``connection.start``
    nor ``connection.tune`` carries it), so it is learnt from this refusal.
    """
    found = _TOO_LARGE.search(text)
    if found is None:
        return None
    return record_too_large(int(found[1]), int(found[2]))


def record_too_large(size: int, limit: int) -> RecordTooLarge:
    """A record of ``size`` bytes is over the broker's ``limit`` (its max_message_size)."""
    if limit >= RABBITMQ_MAX_MESSAGE_SIZE:
        how = "the most max_message_size can be"
        fix = "send smaller records"
    else:
        how = "its max_message_size"
        fix = "send smaller records, or raise max_message_size in rabbitmq.conf"
    return RecordTooLarge(
        f"a record of {size:,} bytes is larger than the broker accepts ({how} is "
        f"{_bytes(limit)}); {fix}",
        size=size,
        limit=limit,
    )


def _bytes(count: int) -> str:
    for unit, scale in (("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale and not count % scale:
            return f"{count:,} bytes = {count // scale} {unit}"
    return f"{count:,} bytes"


def named_exchange(text: str) -> str | None:
    """The exchange a broker reply text names (``... exchange 'x' in vhost ...``)."""
    found = _EXCHANGE_IN_TEXT.search(text)
    return found.group(1) if found else None


def login_refused(address: str, user: str, vhost: str, why: str, shown: str) -> AccessRefused:
    """A broker at ``address`` refused the login (``why``); ``shown`` is the redacted URL."""
    return AccessRefused(
        f"the broker at {address} refused user {user!r} on vhost {vhost!r}: {why}; check the "
        "user name and password in the URL, that the vhost exists and that the user may use "
        f"it ({shown})"
    )


def unreachable(tried: str) -> BrokerUnavailable:
    """No broker could be reached; ``tried`` says ``host:port: why`` for each."""
    return BrokerUnavailable(
        f"cannot reach RabbitMQ ({tried}); check the host and port in the URL, that "
        "RabbitMQ is running there and that no firewall blocks the port"
    )


def tls_refused(tried: str) -> BrokerUnavailable:
    """Every broker's TLS certificate was refused; ``tried`` says ``host:port: why`` for each."""
    return BrokerUnavailable(
        f"the broker's TLS certificate was refused ({tried}); trust the CA that signed it "
        "(?cafile=/path/ca.pem in the URL) and dial the host name it was issued for"
    )


def no_answer(what: str, address: str, timeout: float) -> ConnectionLost:
    """The broker took no notice of ``what`` (a declaration ...) within ``timeout`` seconds."""
    return ConnectionLost(f"{what}: RabbitMQ at {address} did not answer in {timeout:g}s")


def unroutable(exchange: str, key: str, count: int) -> Unroutable:
    """``count`` mandatory messages came back: no queue is bound for ``key``."""
    return Unroutable(
        f"no queue is bound to exchange {exchange!r} for key {key!r}: the broker returned "
        "the message (bind a queue, or check the key)",
        exchange=exchange,
        routing_key=key,
        unconfirmed=count,
    )


def nacked(exchange: str, count: int) -> NotConfirmed:
    """The broker refused ``count`` messages (``basic.nack``)."""
    return NotConfirmed(
        f"the broker refused {count} message(s) published to exchange {exchange!r} "
        "(basic.nack: a queue at its x-max-length with reject-publish, or a broker fault); "
        "retry later",
        unconfirmed=count,
    )


def blocked(reason: str) -> str:
    """Why messages were not confirmed, when RabbitMQ blocked publishing."""
    return (
        f"RabbitMQ blocked publishing ({reason}: a memory or disk alarm); free resources on "
        "the broker or retry later"
    )


def unconfirmed_in_time(address: str) -> str:
    """Why messages were not confirmed, when the broker was merely silent."""
    return f"RabbitMQ at {address} did not confirm them in time"


def not_confirmed(count: int, timeout: float, why: str) -> NotConfirmed:
    """``count`` messages were given up after ``timeout`` seconds without a confirm."""
    return NotConfirmed(
        f"{count} message(s) not confirmed within {timeout:g}s: {why}", unconfirmed=count
    )
