"""aio-pika, aiormq and pamqp exceptions turned into :mod:`logbus.errors`, at one place.

Only :mod:`logbus.transports.aio` and its private helpers import the drivers;
everything they raise passes through :func:`translate` (or the publish-specific
:func:`unroutable` / :func:`nacked`, or :func:`connect_refusal` for a first
connect) before it leaves the transport. As kombu lists each transport's
``connection_errors`` and ``channel_errors``, the driver exceptions are listed
here: :data:`CHANNEL_REPLIES` (a broker refusal that closed one channel: the
entity is wrong, retrying does not help) and :data:`RECOVERABLE` (the link went:
the robust connection is restoring it and the call may be retried); the
translation reads those tables. Messages
name the endpoint as ``host:port`` and keep the broker's reply text, which
names the entity and, for PRECONDITION_FAILED, the differing argument; they
never carry a password.
"""

from __future__ import annotations

import asyncio

import aiormq.exceptions as amqp
import pamqp.exceptions

from logbus.errors import (
    AccessRefused,
    ChannelError,
    ConnectionLost,
    InvalidExpiration,
    LogbusError,
    NotConfirmed,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
    TransportClosed,
    TransportError,
    Unroutable,
)
from logbus.message import Message
from logbus.transports.amqp.errors import INVALID_EXPIRATION, too_large

__all__ = [
    "CHANNEL_REPLIES",
    "RECOVERABLE",
    "connect_refusal",
    "nacked",
    "reply_text",
    "translate",
    "unroutable",
]

#: A broker's refusal that closed a channel, as the logbus error it is (not recoverable:
#: the same call fails again). Any other ``ChannelClosed`` with a reply is a ChannelError.
CHANNEL_REPLIES: dict[type[amqp.ChannelClosed], type[ChannelError] | type[AccessRefused]] = {
    amqp.ChannelNotFoundEntity: NotFound,
    amqp.ChannelPreconditionFailed: PreconditionFailed,
    amqp.ChannelLockedResource: ResourceLocked,
    amqp.ChannelAccessRefused: AccessRefused,
}

#: Driver exceptions that mean the connection (or the channel with it) went: recoverable,
#: reported as ConnectionLost while aio-pika's robust connection restores it.
RECOVERABLE: tuple[type[BaseException], ...] = (
    amqp.ConnectionClosed,
    amqp.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    EOFError,
)

_HINTS: dict[type[LogbusError], str] = {
    PreconditionFailed: (
        "the broker keeps an entity as first declared: declare it with the broker's "
        "properties, or delete it and declare it again"
    ),
    ResourceLocked: "an exclusive queue belongs to the connection that declared it",
}


def reply_text(exc: BaseException) -> str:
    """The broker's reply text carried by an aiormq exception (or its ``str``)."""
    texts = [a for a in exc.args if isinstance(a, str) and a]
    if texts:
        return texts[-1]
    return str(exc) or type(exc).__name__


def _channel_error(exc: amqp.ChannelClosed, doing: str) -> ChannelError | AccessRefused:
    kind: type[ChannelError] | type[AccessRefused] = next(
        (logbus for driver, logbus in CHANNEL_REPLIES.items() if isinstance(exc, driver)),
        ChannelError,
    )
    text = reply_text(exc)
    hint = _HINTS.get(kind)
    return kind(f"{doing}: {text}" + (f" ({hint})" if hint else ""))


def translate(
    exc: BaseException, *, doing: str, endpoint: str, closed: bool = False
) -> LogbusError:
    """The logbus error for a driver exception raised while ``doing`` something.

    ``closed`` says the transport was closed by its user: a dead channel then
    means :class:`TransportClosed`, not a lost connection.
    """
    if isinstance(exc, LogbusError):
        return exc
    if closed:
        return TransportClosed(f"{doing}: the transport to {endpoint} is closed; open a new one")
    if isinstance(exc, amqp.ChannelClosed) and not isinstance(exc, amqp.DuplicateConsumerTag):
        if exc.args and exc.args[0] is None:  # closed along with its connection, no reply
            return _lost(doing, endpoint, "the channel closed")
        oversized = too_large(reply_text(exc))  # in the pika transport's words
        if oversized is not None:
            return oversized
        if INVALID_EXPIRATION in reply_text(exc):  # bad input, not a redeclaration
            return InvalidExpiration(f"{doing}: {reply_text(exc)}")
        return _channel_error(exc, doing)
    if isinstance(exc, amqp.ConnectionNotAllowed):
        return AccessRefused(f"{doing}: {endpoint} refused: {reply_text(exc)}")
    if isinstance(exc, RECOVERABLE):
        closed_by = "the broker closed it: " if isinstance(exc, amqp.ConnectionClosed) else ""
        return _lost(doing, endpoint, closed_by + reply_text(exc))
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return ConnectionLost(
            f"{doing}: {endpoint} did not answer in time (the broker may be overloaded "
            "or the network down; retry later)"
        )
    if isinstance(exc, amqp.AMQPError | pamqp.exceptions.PAMQPException):
        return TransportError(f"{doing}: AMQP error from {endpoint}: {reply_text(exc)}")
    if isinstance(exc, RuntimeError):  # aio-pika's "connection closed/not opened" states
        return _lost(doing, endpoint, reply_text(exc))
    return TransportError(f"{doing}: unexpected {type(exc).__name__} talking to {endpoint}")


def connect_refusal(exc: BaseException, where: str, user: str, vhost: str) -> AccessRefused | None:
    """The AccessRefused a failed first connect to ``where`` means, if the broker said no
    to ``user`` (credentials) or to the virtual host ``vhost``; None for any other failure."""
    if isinstance(exc, amqp.ProbableAuthenticationError | amqp.AuthenticationError):
        return AccessRefused(
            f"{where} refused the credentials of user {user!r} ({reply_text(exc)}); "
            "fix the user or password in the URL"
        )
    if isinstance(exc, amqp.ConnectionNotAllowed) or (
        isinstance(exc, amqp.InvalidFrameError) and "Connection.Close" in reply_text(exc)
    ):
        return AccessRefused(
            f"{where} refused to open virtual host {vhost!r} for user {user!r}: it does not "
            "exist or the user has no permission on it"
        )
    return None


def _lost(doing: str, endpoint: str, why: str) -> ConnectionLost:
    return ConnectionLost(
        f"{doing}: lost the connection to {endpoint} ({why}); it is being restored, retry"
    )


def unroutable(exc: amqp.PublishError, message: Message) -> Unroutable:
    """A mandatory publish the broker returned (``basic.return``)."""
    frame = exc.frame
    exchange = str(getattr(frame, "exchange", message.exchange))
    key = str(getattr(frame, "routing_key", message.routing_key))
    text = str(getattr(frame, "reply_text", "NO_ROUTE"))
    return Unroutable(
        f"no queue is bound to exchange {exchange!r} for key {key!r}: the broker returned "
        f"the message ({text}; bind a queue, or check the key)",
        exchange=exchange,
        routing_key=key,
    )


def nacked(message: Message) -> NotConfirmed:
    """A publish the broker refused (``basic.nack``)."""
    return NotConfirmed(
        f"the broker refused (nacked) the message for exchange {message.exchange!r}, key "
        f"{message.routing_key!r}: a queue it routes to is full with overflow reject-publish, "
        "or the broker failed to store it (start a worker, raise x-max-length, or retry later)"
    )
