"""pika's exceptions turned into :mod:`logbus.errors`, at one place.

As kombu lists each transport's ``connection_errors`` and ``channel_errors``,
pika's are listed here: :data:`REFUSALS` (the broker said no to the user or the
virtual host: not recoverable), :data:`RECOVERABLE` (the link went or is going:
the core reconnects, restores and re-sends), a channel the broker closed over a
command (:func:`broker_refusal`: the reply code's logbus error) and a
connection it closed over one (:func:`hard_error`). The words are those of
:mod:`logbus.transports.amqp.errors`, which the aio-pika transport speaks too.
Every message names the broker as ``host:port`` and never shows a password.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import pika.exceptions as pika_errors
from pika.adapters.utils import connection_workflow as workflow

from logbus.errors import ConnectionLost, InputError, LogbusError, TransportError
from logbus.transports.amqp.errors import login_refused, reply_error, tls_refused, unreachable
from logbus.transports.amqp.tls import TLS_REFUSED, verify_failure

if TYPE_CHECKING:
    from logbus.transports.amqp.pika_convert import Endpoint

__all__ = [
    "HARD_CODES",
    "RECOVERABLE",
    "REFUSALS",
    "Refusal",
    "broker_refusal",
    "connect_error",
    "hard_error",
    "is_auth_failure",
    "local_error",
    "reason",
]

#: The broker refused the login or the virtual host: asking again will not change its mind.
REFUSALS: tuple[type[BaseException], ...] = (
    pika_errors.AuthenticationError,
    pika_errors.ProbableAuthenticationError,
    pika_errors.ProbableAccessDeniedError,
)

#: The connection or channel went, or is going, under a call: recoverable, the core
#: reconnects (backoff from ``reconnect``), declares again and re-sends.
RECOVERABLE: tuple[type[BaseException], ...] = (
    pika_errors.StreamLostError,
    pika_errors.AMQPHeartbeatTimeout,
    pika_errors.ConnectionWrongStateError,
    pika_errors.ChannelWrongStateError,
    OSError,
)

#: Connection-level reply codes that a command of ours caused (503 COMMAND_INVALID
#: for an unknown exchange type, ...): retrying the command would only kill the next
#: connection too. 320 (CONNECTION_FORCED: an operator or a shutdown) is not one.
HARD_CODES = range(500, 600)


class Refusal(NamedTuple):
    """A channel the broker closed over a command: its logbus error and the broker's reply."""

    error: TransportError
    code: int
    text: str


def broker_refusal(reason: BaseException | None) -> Refusal | None:
    """The refusal a channel close means if the broker closed it over a command (404,
    406 ...); None for any other close (ours, or the connection's)."""
    if isinstance(reason, pika_errors.ChannelClosedByBroker):
        code, text = int(reason.reply_code), str(reason.reply_text)
        return Refusal(reply_error(code, text), code, text)
    return None


def local_error(exc: Exception, what: str) -> LogbusError:
    """A logbus error for an exception pika raised on our side when it was handed a
    call: bad input, a link that went under it (:data:`RECOVERABLE`), or else a fault."""
    if isinstance(exc, LogbusError):
        return exc
    if isinstance(exc, ValueError | TypeError | pika_errors.ShortStringTooLong):
        return InputError(f"{what}: {exc}")
    if isinstance(exc, RECOVERABLE):
        return ConnectionLost(
            f"{what}: the connection to RabbitMQ went ({reason(exc)}); it is being restored, retry"
        )
    return TransportError(f"{what}: {type(exc).__name__}: {exc}")


def hard_error(reason: BaseException) -> TransportError | None:
    """The error to report for a connection the broker closed because of a command."""
    if isinstance(reason, pika_errors.ConnectionClosedByBroker) and (
        reason.reply_code in HARD_CODES
    ):
        return reply_error(reason.reply_code, reason.reply_text)
    return None


def is_auth_failure(exc: BaseException) -> bool:
    """Whether a connection attempt failed on credentials or vhost access."""
    if isinstance(exc, REFUSALS):
        return True
    return isinstance(exc, pika_errors.ConnectionClosedByBroker) and exc.reply_code in (403, 530)


def reason(exc: BaseException | None) -> str:
    """A short human reason for a failed or dropped connection, from pika's nesting."""
    if exc is None:
        return "unknown reason"
    if isinstance(exc, workflow.AMQPConnectionWorkflowFailed) and exc.exceptions:
        return reason(exc.exceptions[-1])
    if isinstance(exc, workflow.AMQPConnectorPhaseErrorBase):
        return reason(exc.exception)
    if isinstance(exc, workflow.AMQPConnectorStackTimeout):
        return "timed out during the connection handshake"
    if isinstance(exc, pika_errors.ConnectionClosed):
        return f"closed by {_closer(exc)} ({exc.reply_code}): {exc.reply_text}"
    if isinstance(exc, pika_errors.ProbableAuthenticationError):
        return "login refused (user name or password)"
    if isinstance(exc, pika_errors.ProbableAccessDeniedError):
        return "access to the vhost refused (missing vhost or permissions)"
    if isinstance(exc, pika_errors.IncompatibleProtocolError):
        return "the peer does not speak AMQP 0-9-1"
    if isinstance(exc, pika_errors.AMQPHeartbeatTimeout):
        return "missed heartbeats: the broker stopped answering"
    if isinstance(exc, pika_errors.StreamLostError):
        return "the connection was cut (network or broker went away)"
    if type(exc) is pika_errors.AMQPConnectionError and exc.args:
        inner = exc.args[0]
        return reason(inner) if isinstance(inner, BaseException) else str(inner)
    refused = verify_failure(exc) if isinstance(exc, ssl.SSLCertVerificationError) else None
    if refused is not None:
        return refused
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}"


def _closer(exc: pika_errors.ConnectionClosed) -> str:
    return "the broker" if isinstance(exc, pika_errors.ConnectionClosedByBroker) else "us"


def connect_error(failures: Sequence[tuple[Endpoint, BaseException]]) -> TransportError:
    """The error for a failed connect round: the login problem if any host refused
    the credentials, else every host with why it could not be reached."""
    for endpoint, exc in failures:
        if is_auth_failure(exc):
            return login_refused(
                endpoint.address, endpoint.user, endpoint.vhost, reason(exc), endpoint.shown
            )
    tried = "; ".join(f"{endpoint.address}: {reason(exc)}" for endpoint, exc in failures)
    if failures and all(reason(exc).startswith(TLS_REFUSED) for _endpoint, exc in failures):
        return tls_refused(tried)
    return unreachable(tried)
