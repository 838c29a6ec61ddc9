"""The dead-letter queues: what is there and why, and putting records back to work.

A worker parks on ``<queue>.dead`` every record it gave up on (see
:mod:`logbus.worker.retry`), with the reason, the attempt history and where the
record was first published in its headers. These functions are what
``logbus dlq list|show|replay|purge --queue NAME`` call:

* :func:`inspect`: how many records wait, and their reasons summarised (from a
  sample of them, looked at without removing them);
* :func:`peek`: the records themselves, left in place: each is taken without
  an ack and all are requeued afterwards, last first, so the queue keeps its
  order (RabbitMQ puts a requeued message of a classic queue back where it was);
* :func:`replay`: move records back to the work queue — each is published
  there (confirmed, through the default exchange, its attempt count and history
  reset) before it is acked on the dead-letter queue, so a failure part-way
  duplicates at worst, never loses;
* :func:`purge`: drop them all, for good.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from logbus.errors import ConfigError, LogbusError, NotFound
from logbus.record import LogRecord, decode
from logbus.worker.retry import (
    QUEUE_HEADER,
    REASON_HEADER,
    attempts_of,
    dead_queue,
    for_replay,
    history_of,
    restore_origin,
)

if TYPE_CHECKING:
    from logbus.transports.base import Delivery, Transport

__all__ = [
    "DeadLetter",
    "DeadQueue",
    "Replayed",
    "inspect",
    "peek",
    "purge",
    "reason_kind",
    "replay",
]

#: Records :func:`inspect` looks at to summarise the reasons.
DEFAULT_SAMPLE = 1000
#: Records :func:`peek` shows unless told otherwise.
DEFAULT_SHOW = 100
# Records moved per confirmed publish_many by replay().
_REPLAY_BATCH = 100
_ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class DeadLetter:
    """One record on a dead-letter queue, as its headers describe it.

    ``body`` is the exact bytes that were published (replay sends them again as
    they are); ``record`` is what they decode to (every body is a record).
    """

    position: int
    message_id: str | None
    reason: str | None
    attempts: int
    history: list[dict[str, Any]]
    queue: str | None
    exchange: str
    routing_key: str
    body: bytes = field(repr=False)
    record: LogRecord

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the headers' story, the record, and the body as published: as text
        (a byte that is not UTF-8 written ``\\xe9``) and exactly, in base64."""
        out: dict[str, Any] = {
            "position": self.position,
            "message_id": self.message_id,
            "reason": self.reason,
            "attempts": self.attempts,
            "history": [{k: _jsonable(v) for k, v in entry.items()} for entry in self.history],
            "queue": self.queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
        }
        out["record"] = self.record.to_dict()
        out["body"] = self.body.decode("utf-8", "backslashreplace")
        out["body_base64"] = base64.b64encode(self.body).decode()
        return out


@dataclass(frozen=True)
class DeadQueue:
    """A work queue's dead-letter queue: whether it exists, its depth, its reasons."""

    queue: str
    dead_letter_queue: str
    exists: bool
    messages: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    sampled: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "queue": self.queue,
            "dead_letter_queue": self.dead_letter_queue,
            "exists": self.exists,
            "messages": self.messages,
            "reasons": self.reasons,
            "sampled": self.sampled,
        }


@dataclass(frozen=True)
class Replayed:
    """What :func:`replay` moved back to the work queue, and what is left behind."""

    queue: str
    replayed: int
    left: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"queue": self.queue, "replayed": self.replayed, "left": self.left}


def reason_kind(reason: str | None) -> str:
    """A reason without its particulars, to count alike ones together.

    ``gave up after 5 attempts: ConnectionLost: db down`` → ``gave up after 5
    attempts: ConnectionLost``; ``undecodable: ...`` → ``undecodable``.
    """
    if not reason:
        return "no reason given"
    head, _, rest = reason.partition(": ")
    if head == "undecodable":
        return head
    kind, colon, _ = rest.partition(":")
    if colon and _ERROR_TYPE.fullmatch(kind):
        return f"{head}: {kind}"
    return head


def _depth(transport: Transport, queue: str) -> int | None:
    """Ready messages in ``queue``; None if it does not exist."""
    try:
        return transport.declare_queue(queue, passive=True).message_count
    except NotFound:
        return None


def _existing_dead_queue(transport: Transport, queue: str) -> tuple[str, int]:
    dead = dead_queue(queue)
    depth = _depth(transport, dead)
    if depth is None:
        raise ConfigError(
            f"there is no dead-letter queue {dead!r}: no logbus worker has consumed "
            f"{queue!r} on this broker (check --queue and --url)"
        )
    return dead, depth


def inspect(transport: Transport, queue: str, *, sample: int = DEFAULT_SAMPLE) -> DeadQueue:
    """``queue``'s dead-letter queue: depth, and reasons counted over up to ``sample`` records."""
    dead = dead_queue(queue)
    depth = _depth(transport, dead)
    if depth is None:
        return DeadQueue(queue, dead, exists=False)
    reasons: Counter[str] = Counter()
    seen = 0
    if depth and sample > 0:
        for letter in peek(transport, queue, limit=min(sample, depth)):
            reasons[reason_kind(letter.reason)] += 1
            seen += 1
    return DeadQueue(queue, dead, True, depth, dict(reasons.most_common()), seen)


def peek(transport: Transport, queue: str, *, limit: int = DEFAULT_SHOW) -> list[DeadLetter]:
    """Up to ``limit`` records of ``queue``'s dead-letter queue, first first, left in place."""
    dead, _ = _existing_dead_queue(transport, queue)
    held: list[Delivery] = []
    try:
        while len(held) < limit:
            delivery = transport.get(dead)
            if delivery is None:
                break
            held.append(delivery)
        return [_letter(position, d) for position, d in enumerate(held, 1)]
    finally:
        _requeue(held)


def replay(
    transport: Transport,
    queue: str,
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Replayed:
    """Move up to ``limit`` records (default: all there now) from ``queue``'s dead-letter
    queue back to ``queue``, oldest first, attempts reset; ``progress(moved, total)`` is
    called before the first batch and after each."""
    dead, depth = _existing_dead_queue(transport, queue)
    if _depth(transport, queue) is None:
        raise ConfigError(
            f"there is no queue {queue!r} to replay into; declare it first "
            "(logbus topology apply), then replay"
        )
    # What is there now, at most: records a running worker dead-letters meanwhile wait.
    budget = depth if limit is None else min(limit, depth)
    moved = 0
    if progress is not None:
        progress(0, budget)
    while moved < budget:
        batch: list[Delivery] = []
        try:
            while len(batch) < min(_REPLAY_BATCH, budget - moved):
                delivery = transport.get(dead)
                if delivery is None:
                    break
                batch.append(delivery)
            if not batch:
                break
            transport.publish_many([for_replay(d.message, queue) for d in batch])
        except BaseException:
            _requeue(batch)
            raise
        for delivery in batch:
            delivery.ack()
        moved += len(batch)
        if progress is not None:
            progress(moved, budget)
    return Replayed(queue, moved, _depth(transport, dead) or 0)


def purge(transport: Transport, queue: str) -> int:
    """Drop every record waiting on ``queue``'s dead-letter queue; how many there were."""
    dead, _ = _existing_dead_queue(transport, queue)
    return transport.purge_queue(dead)


def _requeue(deliveries: list[Delivery]) -> None:
    """Give back what was taken, last first: each lands at the head, in the original order."""
    for delivery in reversed(deliveries):
        if delivery.settled is None:
            # A connection gone meanwhile has requeued them all already.
            with contextlib.suppress(LogbusError):
                delivery.nack(requeue=True)


def _letter(position: int, delivery: Delivery) -> DeadLetter:
    props = delivery.properties
    origin = restore_origin(delivery.message)
    record = decode(delivery.body, props, origin.routing_key)
    reason = props.headers.get(REASON_HEADER)
    queue = props.headers.get(QUEUE_HEADER)
    return DeadLetter(
        position=position,
        message_id=props.message_id,
        reason=_text(reason),
        attempts=attempts_of(props),
        history=history_of(props),
        queue=_text(queue),
        exchange=origin.exchange,
        routing_key=origin.routing_key,
        body=delivery.body,
        record=record,
    )


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
