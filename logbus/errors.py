"""The whole logbus exception tree.

Every error logbus raises is a :class:`LogbusError`. Each class says whether it
is *recoverable*: retrying the same operation later may succeed (the broker
came back, a queue drained) or it never will (bad input, bad config). The
worker's retry logic and the CLI's exit statuses read that flag.

::

    LogbusError
    ├── ConfigError                 bad settings or topology file      (78, not recoverable)
    │   ├── TopologyError           declared entity disagrees with broker (78)
    │   └── InvalidTopology         a topology breaks a rule (also a ValueError) (78)
    ├── InputError                  bad data from the user            (65, not recoverable)
    │   ├── RecordError             a field of a record is invalid
    │   │   ├── RoutingKeyError     not <facility>.<severity>
    │   │   ├── SeverityError       unknown severity word or code
    │   │   └── FacilityError       facility is not a valid token
    │   ├── RecordTooLarge          over the broker's max_message_size (also a TransportError)
    │   └── DecodeError             bytes on the wire are not a record
    ├── SinkError                   a sink could not store records    (recoverable: each error says)
    │   └── ArchiveUnavailable      the archive (database) cannot be reached (69, recoverable)
    └── TransportError              moving bytes failed               (69/75)
        ├── BrokerUnavailable       cannot reach any broker            (69, recoverable)
        ├── ConnectionLost          the connection dropped mid-way     (75, recoverable)
        ├── NotConfirmed            the broker did not take a publish  (75, recoverable)
        ├── Unroutable              a mandatory publish reached no queue (75, recoverable)
        ├── ChannelError            the broker refused an operation (AMQP channel error)
        │   ├── NotFound            the entity does not exist (404)
        │   ├── PreconditionFailed  redeclared with other arguments (406)
        │   │   └── InvalidExpiration  a per-message expiration that is not digits (406; 65)
        │   ├── ResourceLocked      exclusive to another connection (405)
        │   └── NotImplementedByBroker  a feature the queue type lacks (540)
        ├── AccessRefused           credentials or permissions refused (77, not recoverable)
        └── TransportClosed         used after close()                (not recoverable)

Exit statuses follow sysexits: 65 bad input, 69 unavailable, 75 temporary
failure, 77 permission denied, 78 configuration.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AccessRefused",
    "ArchiveUnavailable",
    "BrokerUnavailable",
    "ChannelError",
    "ConfigError",
    "ConnectionLost",
    "DecodeError",
    "FacilityError",
    "InputError",
    "InvalidExpiration",
    "InvalidTopology",
    "LogbusError",
    "NotConfirmed",
    "NotFound",
    "NotImplementedByBroker",
    "PreconditionFailed",
    "RecordError",
    "RecordTooLarge",
    "ResourceLocked",
    "RoutingKeyError",
    "SeverityError",
    "SinkError",
    "TopologyError",
    "TransportClosed",
    "TransportError",
    "Unroutable",
]

EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class LogbusError(Exception):
    """Base of every error logbus raises; ``recoverable`` says whether a retry may help."""

    # Plain class attributes rather than ClassVars: a SinkError sets both per instance.
    recoverable: bool = False
    exit_code: int = 1


class ConfigError(LogbusError):
    """Settings or a topology file are invalid; fix the configuration."""

    exit_code = EX_CONFIG


class TopologyError(ConfigError):
    """A declared entity disagrees with what the broker already has."""


class InvalidTopology(ConfigError, ValueError):
    """A topology breaks a rule: a wrong type, a reference that does not resolve, a name
    declared twice, something the broker would refuse at declare time.

    The message is ``<what> (<hint>)``. ``what``, ``hint`` and ``loc`` (where, relative
    to what was checked: ``("queues", 1, "max_length")`` in a topology, ``("name",)`` in
    one entity) let a file loader name the line; ``problems`` holds every one found
    when several were (this error is the first).
    """

    def __init__(
        self,
        what: str,
        hint: str,
        loc: tuple[str | int, ...] = (),
        problems: tuple[InvalidTopology, ...] = (),
    ) -> None:
        super().__init__(f"{what} ({hint})")
        self.what, self.hint, self.loc = what, hint, loc
        self.problems = problems or (self,)

    @classmethod
    def of(cls, problems: list[InvalidTopology]) -> InvalidTopology:
        """The first of ``problems``, carrying them all."""
        first = problems[0]
        return cls(first.what, first.hint, first.loc, tuple(problems))

    def at(self, *prefix: str | int) -> InvalidTopology:
        """The same problems, located under ``prefix`` (an entity inside a topology)."""
        moved = tuple(type(self)(p.what, p.hint, (*prefix, *p.loc)) for p in self.problems)
        return type(self).of(list(moved))


class InputError(LogbusError):
    """Data given by the user (a key, a record, a line) is invalid."""

    exit_code = EX_DATAERR


class RecordError(InputError, ValueError):
    """A field of a log record is invalid."""


class RoutingKeyError(RecordError):
    """A routing key is not of the form ``<facility>.<severity>``."""


class SeverityError(RecordError):
    """A severity is not one of the eight syslog levels or their aliases."""


class FacilityError(RecordError):
    """A facility is not a valid token."""


class DecodeError(InputError):
    """Bytes received cannot be read: a broker frame that does not parse, or a body
    that is not bytes at all. (Every bytes body decodes to a record.)"""


class SinkError(LogbusError):
    """A sink could not store a record; ``recoverable`` is set per error by the sink.

    A database that does not answer or an HTTP endpoint answering 503 is
    recoverable (the worker retries later); data the store rejects (an HTTP 400,
    a value the database refuses) is not (the worker dead-letters the record).
    """

    def __init__(self, message: str, *, recoverable: bool = False) -> None:
        super().__init__(message)
        self.recoverable = recoverable
        self.exit_code = EX_TEMPFAIL if recoverable else EX_DATAERR


class ArchiveUnavailable(SinkError):
    """The archive database cannot be opened or reached; check its path or URL."""

    def __init__(self, message: str) -> None:
        super().__init__(message, recoverable=True)
        self.exit_code = EX_UNAVAILABLE


class TransportError(LogbusError):
    """Moving bytes to or from a broker failed."""

    exit_code = EX_TEMPFAIL


class RecordTooLarge(InputError, TransportError):
    """A record is larger than the broker accepts (RabbitMQ's ``max_message_size``).

    ``size`` and ``limit`` are in bytes. Bad input (65, not recoverable: sending it
    again cannot help), and a transport's refusal too, so it travels where broker
    refusals do. Make the record smaller, or raise the limit on the broker.
    """

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class BrokerUnavailable(TransportError):
    """No broker could be reached; check the host, the port and that it runs."""

    recoverable = True
    exit_code = EX_UNAVAILABLE


class ConnectionLost(TransportError):
    """An established connection dropped; operations in flight may not have completed."""

    recoverable = True


class NotConfirmed(TransportError):
    """The broker did not confirm a publish (nack, overflow, or timeout)."""

    recoverable = True

    def __init__(self, message: str, *, unconfirmed: int = 1) -> None:
        super().__init__(message)
        self.unconfirmed = unconfirmed


class Unroutable(NotConfirmed):
    """A mandatory publish matched no queue and was returned by the broker."""

    def __init__(self, message: str, *, exchange: str, routing_key: str, unconfirmed: int = 1):
        super().__init__(message, unconfirmed=unconfirmed)
        self.exchange = exchange
        self.routing_key = routing_key


class ChannelError(TransportError):
    """The broker refused an operation (an AMQP channel-level error with a reply code)."""

    reply_code: ClassVar[int] = 0


class NotFound(ChannelError):
    """The exchange or queue named does not exist (AMQP 404 NOT_FOUND)."""

    reply_code = 404


class PreconditionFailed(ChannelError):
    """An entity was redeclared with other arguments (AMQP 406 PRECONDITION_FAILED)."""

    reply_code = 406
    exit_code = EX_CONFIG


class InvalidExpiration(InputError, PreconditionFailed):
    """A per-message ``expiration`` that is not milliseconds as decimal digits.

    RabbitMQ answers such a publish with 406 PRECONDITION_FAILED and closes the
    channel; the in-process broker raises this with RabbitMQ's words, and amqp://
    raises it before sending (a channel closed under a pipelined publishing window
    would fail every publish in flight with it). Bad input: exit 65, and a 406.
    """


class ResourceLocked(ChannelError):
    """An exclusive queue belongs to another connection (AMQP 405 RESOURCE_LOCKED)."""

    reply_code = 405


class NotImplementedByBroker(ChannelError):
    """The queue's type does not support the operation (AMQP 540 NOT_IMPLEMENTED).

    RabbitMQ closes the connection for it; retrying the same operation never helps.
    """

    reply_code = 540


class AccessRefused(TransportError):
    """The broker refused the credentials or the permissions; fix the URL or the user.

    Exit status 77 (permission denied), not 69: trying again later will not help.
    """

    exit_code = EX_NOPERM


class TransportClosed(TransportError):
    """The transport was used after it was closed."""
