"""Retries with a delay, through per-queue delay queues, and the dead-letter queue.

A record the sink could not store, recoverably, is not requeued at once (a sink
that is down would be hammered, and the record would loop): the worker
publishes it to a *delay queue* and acks the original. A delay queue holds the
record for its TTL, then the broker dead-letters it back to the work queue,
where it is delivered again like any other record. The wait happens in the
broker, so a worker holds nothing while a record waits, and a worker that
dies loses nothing that waits.

For a work queue ``Q`` (names and arguments, declared durable by the worker at start):

=========================  ===================================================================
queue                      arguments
=========================  ===================================================================
``Q.retry.<ms>``           ``x-message-ttl`` = ``<ms>``, ``x-dead-letter-exchange`` = ``""``
                           (the default exchange), ``x-dead-letter-routing-key`` = ``Q``; one
                           per distinct delay of the policy (1 s, 2 s, 4 s, 8 s by default)
``Q.dead``                 none: records that failed for good wait here for an operator
                           (``logbus dlq list|show|replay|purge --queue Q``)
=========================  ===================================================================

The retry queues follow the work queue (:meth:`RetryPolicy.following`): quorum for a
quorum ``Q``, and with ``dead_letter_strategy = "at-least-once"`` the delay queues too.

One queue per delay, rather than a TTL per message, because a broker expires
messages from the head of a queue only: in a queue where every message has the
same TTL, the head is always the first to expire.

*Headers.* The count of attempts travels with the record, so no worker needs
to remember anything and no record can loop for ever:

=========================  ===================================================================
header                     value
=========================  ===================================================================
``x-logbus-attempts``      attempts made so far that failed (the next delivery is attempt
                           ``n + 1``); a record arriving with a count at or past
                           ``max_attempts`` goes to ``Q.dead`` on its next failure
``x-logbus-history``       one table per failed attempt, oldest first (the last
                           :data:`HISTORY_LIMIT`): ``attempt`` (int), ``at`` (RFC 3339 UTC),
                           ``error`` (``Type: message``, at most :data:`ERROR_LIMIT` characters)
``x-logbus-exchange``,     where the record was first published: the delay queue delivers it
``x-logbus-routing-key``   back through the default exchange under ``Q``'s name, and the worker
                           decodes it with the original key (a plain-text body takes its
                           facility and severity from it)
``x-logbus-reason``        on ``Q.dead`` only: why (``gave up after 5 attempts: ...``,
                           ``not recoverable: ...``, ``undecodable: ...``)
``x-logbus-queue``         on ``Q.dead`` only: the work queue the record failed in
``x-logbus-stored``        the sinks of a multi-sink service that stored the record already
                           (a list of names): the next attempt skips them, so a console
                           prints an alert once however often its webhook fails
                           (:mod:`logbus.sinks._partial`); kept by a replay too
=========================  ===================================================================

The broker's own ``x-death`` headers are dropped on the way: the history says
more, and an ``x-death`` naming a queue the record goes back to would make
RabbitMQ take the trip for a dead-letter cycle.

*Guarantees.* Publish-before-ack: the worker acks the original only after the
broker confirmed the copy in the delay (or dead-letter) queue, so a crash in
between duplicates a record, never loses one (sinks de-duplicate by ``id``);
a copy the broker did not confirm leaves the original to be requeued. One gap
is the broker's: classic queues dead-letter at most once, so a record whose delay
ends while ``Q`` is at its ``x-max-length`` bound with ``reject-publish`` is
dropped; quorum delay queues dead-lettering at least once keep it until ``Q`` takes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from logbus.errors import ConfigError, NotFound, PreconditionFailed
from logbus.message import PERSISTENT, Message, Properties

if TYPE_CHECKING:
    from logbus.topology import Queue
    from logbus.transports.base import Transport

__all__ = [
    "ATTEMPTS_HEADER",
    "ERROR_LIMIT",
    "EXCHANGE_HEADER",
    "HISTORY_HEADER",
    "HISTORY_LIMIT",
    "LOGBUS_HEADERS",
    "MAX_ATTEMPTS",
    "MAX_DELAY_QUEUES",
    "QUEUE_HEADER",
    "REASON_HEADER",
    "ROUTING_KEY_HEADER",
    "STORED_HEADER",
    "Outcome",
    "RetryPolicy",
    "attempts_of",
    "dead_queue",
    "declare_retry_queues",
    "delay_queue",
    "for_dead",
    "for_replay",
    "for_retry",
    "history_of",
    "remove_retry_queues",
    "restore_origin",
    "retry_queues",
    "route_failure",
    "stored_of",
]

ATTEMPTS_HEADER = "x-logbus-attempts"
HISTORY_HEADER = "x-logbus-history"
REASON_HEADER = "x-logbus-reason"
EXCHANGE_HEADER = "x-logbus-exchange"
ROUTING_KEY_HEADER = "x-logbus-routing-key"
QUEUE_HEADER = "x-logbus-queue"
STORED_HEADER = "x-logbus-stored"
#: The headers of a failed record's journey, reset when it is replayed (origin aside).
LOGBUS_HEADERS = (ATTEMPTS_HEADER, HISTORY_HEADER, REASON_HEADER, QUEUE_HEADER)
#: Entries of ``x-logbus-history`` kept (the latest); the count in ``x-logbus-attempts`` goes on.
HISTORY_LIMIT = 20
#: Characters of an error kept in the history and the reason.
ERROR_LIMIT = 500
#: Where a failed record goes: a delay queue, or the dead-letter queue.
Outcome = Literal["retried", "dead_lettered"]
#: More attempts than this is a record that will never be stored, not a policy.
MAX_ATTEMPTS = 1000
#: Distinct delays (so delay queues per work queue) a policy may have.
MAX_DELAY_QUEUES = 32
_DEATH_OF = ("queue", "reason", "exchange")
# x-message-ttl is an unsigned 32-bit count of milliseconds.
_MAX_TTL_MS = 2**32 - 1
# What the broker adds when it dead-letters; dropped when a record is sent on.
_BROKER_DEATH_HEADERS = frozenset(
    ["x-death"] + [f"x-{at}-death-{of}" for at in ("first", "last") for of in _DEATH_OF]
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how late a record the sink failed to store is tried again.

    Attempt 1 is the first delivery. After failed attempt ``n`` (``n <
    max_attempts``) the record waits ``delay * backoff ** (n - 1)`` seconds, at
    most ``max_delay``, rounded to the millisecond; after attempt
    ``max_attempts`` it goes to the dead-letter queue. ``max_attempts=1`` never
    retries (``logbus worker --no-retry``). Invalid values raise
    :class:`~logbus.errors.ConfigError` saying which and why.
    """

    max_attempts: int = 5
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    #: The type of the delay and dead-letter queues, and how the delay queues dead-letter.
    queue_type: Literal["classic", "quorum"] = "classic"
    dead_letter_strategy: Literal["at-most-once", "at-least-once"] = "at-most-once"

    def __post_init__(self) -> None:
        if self.dead_letter_strategy == "at-least-once" and self.queue_type != "quorum":
            raise ConfigError("at-least-once dead-lettering needs quorum retry queues")
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise ConfigError(f"max attempts must be a whole number, not {attempts!r}")
        if not 1 <= attempts <= MAX_ATTEMPTS:
            raise ConfigError(
                f"max attempts must be 1..{MAX_ATTEMPTS} (1: never retry), not {attempts}"
            )
        for name, value in (("delay", self.delay), ("backoff", self.backoff)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"retry {name} must be a number, not {value!r}")
        if isinstance(self.max_delay, bool) or not isinstance(self.max_delay, int | float):
            raise ConfigError(f"retry max delay must be a number, not {self.max_delay!r}")
        longest = _MAX_TTL_MS / 1000
        if not 0.001 <= self.delay <= longest:
            raise ConfigError(
                f"retry delay must be 1ms..{longest:.0f}s (a broker TTL), not {self.delay!r} s"
            )
        if not 1 <= self.backoff < math.inf:
            raise ConfigError(
                f"retry backoff must be 1 or more (1: the same delay every time; 2: doubling), "
                f"not {self.backoff!r}"
            )
        if not self.delay <= self.max_delay <= longest:
            raise ConfigError(
                f"retry max delay must be between the first delay ({self.delay:g} s) and "
                f"{longest:.0f} s, not {self.max_delay!r} s"
            )
        count = len(self.delays_ms())
        if count > MAX_DELAY_QUEUES:
            raise ConfigError(
                f"this retry policy has {count} different delays, each a queue of its own "
                f"(at most {MAX_DELAY_QUEUES}); raise the backoff, lower the max delay or "
                "the max attempts"
            )

    def following(self, work_queue: Queue | None) -> RetryPolicy:
        """This policy with retry queues like ``work_queue`` (the topology's, if any): quorum
        queues replicate records that wait as the work queue replicates those it holds."""
        args = work_queue.all_arguments() if work_queue is not None else {}
        if args.get("x-queue-type") != "quorum":
            return self
        if args.get("x-dead-letter-strategy") == "at-least-once":
            return replace(self, queue_type="quorum", dead_letter_strategy="at-least-once")
        return replace(self, queue_type="quorum")

    @classmethod
    def never(cls) -> RetryPolicy:
        """The policy that never retries: a failure sends the record to the dead-letter queue."""
        return cls(max_attempts=1)

    def delay_ms(self, attempt: int) -> int | None:
        """Milliseconds to wait after failed attempt ``attempt``; None: no retry, dead letter."""
        if attempt >= self.max_attempts:
            return None
        exponent = max(0, attempt - 1)
        seconds = self.delay
        if self.backoff > 1:
            # Past the cap, backoff ** exponent may not even fit a float.
            cap = math.log(self.max_delay / self.delay) / math.log(self.backoff)
            seconds = self.max_delay if exponent >= cap else self.delay * self.backoff**exponent
        return max(1, min(round(min(seconds, self.max_delay) * 1000), _MAX_TTL_MS))

    def delays_ms(self) -> list[int]:
        """Every distinct delay of the policy, in milliseconds, shortest first."""
        found = {self.delay_ms(attempt) for attempt in range(1, self.max_attempts)}
        return sorted(ms for ms in found if ms is not None)

    def __str__(self) -> str:
        if self.max_attempts == 1:
            return "no retries"
        return (
            f"{self.max_attempts} attempts, delay {self.delay:g}s x{self.backoff:g} "
            f"up to {self.max_delay:g}s"
        )


# -- the queues ------------------------------------------------------------------------


def delay_queue(queue: str, delay_ms: int) -> str:
    """The delay queue of work queue ``queue`` for ``delay_ms``: ``<queue>.retry.<ms>``."""
    return f"{_base(queue)}.retry.{delay_ms}"


def dead_queue(queue: str) -> str:
    """The dead-letter queue of work queue ``queue``: ``<queue>.dead``."""
    return f"{_base(queue)}.dead"


def retry_queues(queue: str, policy: RetryPolicy) -> list[str]:
    """The names of ``queue``'s delay queues for ``policy`` and of its dead-letter queue."""
    return [*(delay_queue(queue, ms) for ms in policy.delays_ms()), dead_queue(queue)]


def _base(queue: str) -> str:
    # Brokers reserve "amq." for names they make up (a server-named queue,
    # amq.gen-...): the retry queues of such a queue are logbus.amq.gen-....
    return f"logbus.{queue}" if queue.startswith("amq.") else queue


def _delay_args(queue: str, delay_ms: int, policy: RetryPolicy) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-message-ttl": delay_ms, "x-dead-letter-exchange": ""}
    arguments |= {"x-dead-letter-routing-key": queue, **_kind_arguments(policy)}
    if policy.dead_letter_strategy == "at-least-once":  # any other overflow: at most once
        arguments |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    return arguments


def _kind_arguments(policy: RetryPolicy) -> dict[str, Any]:
    return {"x-queue-type": "quorum"} if policy.queue_type == "quorum" else {}


def declare_retry_queues(transport: Transport, queue: str, policy: RetryPolicy) -> list[str]:
    """Declare ``queue``'s delay queues for ``policy`` and its dead-letter queue; their names.

    Idempotent. One that exists with other arguments (a delay queue declared
    for another work queue, a transient ``.dead``) raises
    :class:`~logbus.errors.TopologyError` naming the property that differs.
    """
    from logbus.topology import mismatch

    wanted = [(delay_queue(queue, ms), _delay_args(queue, ms, policy)) for ms in policy.delays_ms()]
    wanted.append((dead_queue(queue), _kind_arguments(policy)))
    for name, _ in wanted:
        if len(name.encode()) > 255:
            raise ConfigError(
                f"queue {name[:40]!r}... would be over 255 bytes: the work queue's name "
                f"({len(queue.encode())} bytes) leaves no room for its retry queues; shorten it"
            )
    try:
        for name, arguments in wanted:
            transport.declare_queue(name, durable=True, arguments=arguments or None)
    except PreconditionFailed as exc:
        raise mismatch(exc, transport.url) from exc
    return [name for name, _ in wanted]


def remove_retry_queues(transport: Transport, queue: str, policy: RetryPolicy) -> int:
    """Delete ``queue``'s delay queues for ``policy`` and its dead-letter queue, if there.

    Returns how many messages they held (lost with them): for tests and for
    tearing a deployment down, never for a queue in use.
    """
    held = 0
    for name in retry_queues(queue, policy):
        try:
            held += transport.delete_queue(name)
        except NotFound:
            continue
    return held


# -- reading the headers -----------------------------------------------------------------


def attempts_of(properties: Properties) -> int:
    """The failed attempts a delivery's headers count (0 when absent or not a count)."""
    value: object = properties.headers.get(ATTEMPTS_HEADER)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(0, value)


def stored_of(properties: Properties) -> frozenset[str]:
    """The sinks a delivery's headers say already stored it (see ``x-logbus-stored``)."""
    value = properties.headers.get(STORED_HEADER)
    if not isinstance(value, list | tuple):
        return frozenset()
    return frozenset(name for item in value if (name := _text(item)))


def history_of(properties: Properties) -> list[dict[str, Any]]:
    """The attempt history a delivery's headers carry (entries that are not tables are left out)."""
    history = properties.headers.get(HISTORY_HEADER)
    if not isinstance(history, list | tuple):
        return []
    return [dict(entry) for entry in history if isinstance(entry, Mapping)]


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def restore_origin(message: Message) -> Message:
    """``message`` with the exchange and routing key it was first published with.

    A record back from a delay queue (or replayed) arrives through the default
    exchange under the work queue's name; its headers say where it came from.
    """
    headers = message.properties.headers
    key = _text(headers.get(ROUTING_KEY_HEADER))
    if key is None:
        return message
    exchange = _text(headers.get(EXCHANGE_HEADER)) or ""
    if key == message.routing_key and exchange == message.exchange:
        return message
    return replace(message, exchange=exchange, routing_key=key)


# -- building what is sent on ------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clip(text: str, limit: int = ERROR_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _journey(message: Message, drop: Iterable[str] = ()) -> dict[str, Any]:
    """Headers to send ``message`` on with: origin kept (or recorded), broker deaths dropped."""
    dropped = _BROKER_DEATH_HEADERS.union(drop)
    headers = {k: _sendable(v) for k, v in message.properties.headers.items() if k not in dropped}
    headers.setdefault(EXCHANGE_HEADER, message.exchange)
    headers.setdefault(ROUTING_KEY_HEADER, message.routing_key)
    return headers


def _sendable(value: object) -> object:
    """``value`` as every transport can publish it: a float header (which another client
    may have sent) becomes its text, or the record could never be sent on."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Mapping):
        return {k: _sendable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sendable(v) for v in value]
    return value


def _send(message: Message, headers: dict[str, Any], queue: str) -> Message:
    """The same body and properties, persistent, without a TTL of its own, to ``queue``."""
    properties = replace(
        message.properties, headers=headers, delivery_mode=PERSISTENT, expiration=None
    )
    return Message(message.body, properties, "", queue)


def _with_attempt(
    message: Message, attempt: int, error: str, stored: frozenset[str] = frozenset()
) -> dict[str, Any]:
    headers = _journey(message)
    entry = {"attempt": attempt, "at": _now(), "error": _clip(error)}
    headers[HISTORY_HEADER] = [*history_of(message.properties), entry][-HISTORY_LIMIT:]
    headers[ATTEMPTS_HEADER] = attempt
    stored = stored | stored_of(message.properties)
    if stored:
        headers[STORED_HEADER] = sorted(stored)
    return headers


def for_retry(
    message: Message,
    *,
    queue: str,
    attempt: int,
    error: str,
    delay_ms: int,
    stored: frozenset[str] = frozenset(),
) -> Message:
    """What to publish to ``queue``'s delay queue after failed attempt ``attempt``;
    ``stored`` names the sinks that have it already (they are not asked again)."""
    headers = _with_attempt(message, attempt, error, stored)
    return _send(message, headers, delay_queue(queue, delay_ms))


def for_dead(
    message: Message,
    *,
    queue: str,
    reason: str,
    attempt: int | None = None,
    error: str = "",
    stored: frozenset[str] = frozenset(),
) -> Message:
    """What to publish to ``queue``'s dead-letter queue, saying why (``reason``).

    ``attempt`` is the attempt that failed last (its error joins the history);
    None for a message that never reached the sink (undecodable).
    """
    if attempt is None:
        headers = _journey(message)
        headers.setdefault(ATTEMPTS_HEADER, attempts_of(message.properties))
    else:
        headers = _with_attempt(message, attempt, error, stored)
    headers[REASON_HEADER] = _clip(reason)
    headers[QUEUE_HEADER] = queue
    return _send(message, headers, dead_queue(queue))


def for_replay(message: Message, queue: str) -> Message:
    """A dead-lettered record sent back to work queue ``queue``, its attempts reset.

    Its origin headers stay: the worker still decodes it with its original key.
    """
    return _send(message, _journey(message, drop=LOGBUS_HEADERS), queue)


def route_failure(
    message: Message,
    *,
    queue: str,
    policy: RetryPolicy,
    error: str,
    recoverable: bool,
    stored: frozenset[str] = frozenset(),
) -> tuple[Message, Outcome]:
    """What to publish after the sink failed to store ``message`` (``error``), and where to.

    A recoverable failure before the policy's last attempt goes to the delay
    queue for that attempt; the last attempt's failure (counted from the
    record's own headers, so nothing loops) and any failure that is not
    recoverable go to the dead-letter queue, with the reason. ``stored`` names the
    sinks of a multi-sink that stored it all the same (``x-logbus-stored``).
    """
    attempt = attempts_of(message.properties) + 1
    if not recoverable:
        reason = f"not recoverable: {error}"
    else:
        delay = policy.delay_ms(attempt)
        if delay is not None:
            retry = for_retry(
                message, queue=queue, attempt=attempt, error=error, delay_ms=delay, stored=stored
            )
            return retry, "retried"
        reason = f"gave up after {attempt} {'attempt' if attempt == 1 else 'attempts'}: {error}"
    dead = for_dead(
        message, queue=queue, reason=reason, attempt=attempt, error=error, stored=stored
    )
    return dead, "dead_lettered"
