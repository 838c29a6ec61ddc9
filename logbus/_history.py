"""History for subscribers: replaying the topology's stream from a point, then following it.

A subscription with history (``logbus subscribe --since 10m 'kern.*'``,
``Subscriber(since=...)``) consumes the topology's history stream (the default
topology's ``logbus.history``, which takes every record from ``logbus.topic``)
instead of a queue of its own. Where it starts is the consumer argument
``x-stream-offset``: a timestamp for ``since``, ``first``, or an offset. The
stream holds every record, so the subscription's selectors are applied here,
with :mod:`logbus.routing`'s matching (the broker's own semantics), to the key
each record was published with.

A stream starts a timestamp at the chunk that holds it, so a replay may begin a
little before ``since``: records stamped (``ts``) before it are skipped here.
``until`` ends the replay at the first record stamped after it, or once that
time has passed and the stream has been quiet for :data:`QUIET` seconds.
Offsets already handed out are skipped, so a consumer that the transport
restores after a reconnect (from its first offset again) repeats nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from logbus.errors import ConfigError
from logbus.record import LogRecord, decode
from logbus.routing import headers_match, topic_matches
from logbus.topology import Topology
from logbus.transports.base import Delivery

__all__ = ["QUIET", "History", "history_stream", "start_spec"]

#: How long a replay with ``until`` in the past waits for more before it ends, in seconds.
QUIET = 1.0


def history_stream(topology: Topology) -> str:
    """The topology's history stream: a stream queue, one fed by an emit exchange first."""
    streams = [q.name for q in topology.queues if q.all_arguments().get("x-queue-type") == "stream"]
    if not streams:
        raise ConfigError(
            "this topology has no history stream: add a [[queues]] table with "
            'queue_type = "stream" bound to logbus.topic with "#" (as config/logbus.toml has)'
        )
    emit_exchanges = {t.exchange for t in topology.emit}
    fed = {b.destination for b in topology.bindings if b.source in emit_exchanges}
    streams.sort(key=lambda name: name not in fed)
    return streams[0]


def start_spec(
    since: datetime | None, from_start: bool, offset: int | None
) -> datetime | str | int | None:
    """The ``x-stream-offset`` for the options given (at most one), None without history."""
    given = [name for name, value in (("since", since), ("offset", offset)) if value is not None]
    if from_start:
        given.append("from_start")
    if len(given) > 1:
        raise ConfigError(f"give one place to start the history from, not {' and '.join(given)}")
    if offset is not None and offset < 0:
        raise ConfigError(f"offset must be 0 or more, not {offset}")
    if from_start:
        return "first"
    return since if since is not None else offset


class History:
    """What a history subscription shows: its selectors, its window, the offsets seen."""

    def __init__(
        self,
        bindings: Sequence[tuple[str, str, dict[str, Any]]],
        topology: Topology,
        *,
        since: datetime | None,
        until: datetime | None,
    ) -> None:
        types = {e.name: e.type for e in topology.exchanges}
        self._patterns = [k for x, k, a in bindings if types.get(x) == "topic"]
        self._exact = {k for x, k, a in bindings if types.get(x) == "direct"}
        self._headers = [a for x, k, a in bindings if types.get(x) == "headers"]
        self._everything = any(types.get(x) == "fanout" for x, k, a in bindings)
        self.since = since
        self.until = until
        self._seen = -1  # the last offset handed out
        self._heard = time.monotonic()  # when the stream last delivered
        #: Set once ``until`` ended the replay.
        self.done = False

    def wait(self, timeout: float | None) -> float | None:
        """How long to wait for the next delivery: ``timeout``, capped by ``until``."""
        if self.until is None:
            return timeout
        quiet_left = max(0.0, QUIET - (time.monotonic() - self._heard))
        cap = max(0.0, self.until.timestamp() - time.time()) + quiet_left
        return cap if timeout is None else min(cap, timeout)

    def ended_waiting(self) -> bool:
        """After a wait that brought nothing: whether ``until`` has passed (the replay is over)."""
        until = self.until
        quiet = time.monotonic() - self._heard >= QUIET
        if until is not None and time.time() >= until.timestamp() and quiet:
            self.done = True
        return self.done

    def admit(self, delivery: Delivery) -> LogRecord | None:
        """The record to show, or None (not selected, shown already, outside the window);
        a record stamped after ``until`` ends the replay (:attr:`done`).

        The key and headers are looked at first: a record not selected is never decoded.
        """
        self._heard = time.monotonic()
        offset = _offset(delivery.properties.headers)
        if offset is not None:
            if offset <= self._seen:
                return None  # replayed again by a restored consumer
            self._seen = offset
        if not self.selects(delivery.routing_key, delivery.properties.headers):
            return None
        record = decode(delivery.body, delivery.properties, delivery.routing_key)
        if self.until is not None and record.ts > self.until:
            self.done = True
            return None
        if self.since is not None and record.ts < self.since:
            return None
        return record

    def selects(self, key: str, headers: Mapping[str, Any]) -> bool:
        """Whether the subscription's selectors take a record published under ``key``."""
        return (
            self._everything
            or key in self._exact
            or any(topic_matches(p, key) for p in self._patterns)
            or any(headers_match(a, headers) for a in self._headers)
        )


def _offset(headers: Mapping[str, Any]) -> int | None:
    value = headers.get("x-stream-offset")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
