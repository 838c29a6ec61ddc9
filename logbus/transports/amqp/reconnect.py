"""The one reconnect policy of logbus's AMQP transports: backoff, jitter, failover order, restore.

Both the pika transport (``pika_core.Core``) and the aio-pika transport
(``aio.connect``) take their pauses and their order of failover hosts from a
:class:`ReconnectPolicy`, so that a fleet of either kind behaves alike when a
broker goes away:

* **backoff**: the pause before reconnect attempt ``n`` (0, 1, ...) grows from
  ``first`` by doubling, up to ``cap`` seconds;
* **jitter**: "full jitter", a uniform draw between none and that bound, so that
  a fleet dropped by one broker restart does not come back in lockstep (the
  draws spread the load evenly over the window rather than at its edge);
* **failover order**: a round tries every URL once, in this process's own
  shuffled order (:func:`~logbus.transports.amqp.urls.failover_order`, so that
  a fleet's clients spread over a cluster's nodes), starting from the one that
  worked last, so that a connection stays on the host it was on;
* **restore**: once the connection and what was declared on it are back,
  :meth:`Attempts.restored` starts the backoff again from ``first``.

Nothing here imports a driver or does I/O; each transport schedules the pauses
on its own loop (pika's ``IOLoop.call_later``, asyncio's ``sleep``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["DEFAULT_CAP", "DEFAULT_FIRST", "Attempts", "ReconnectPolicy"]

#: Seconds: the bound of the first pause.
DEFAULT_FIRST = 0.1
#: Seconds: the longest pause (the pika transport's ``reconnect_max_delay`` overrides it).
DEFAULT_CAP = 30.0
# Doubling past 2**32 only overflows; the cap has long been reached by then.
_MAX_EXPONENT = 32


@dataclass(frozen=True)
class ReconnectPolicy:
    """Capped exponential backoff with full jitter, and the failover order of a URL list."""

    first: float = DEFAULT_FIRST
    cap: float = DEFAULT_CAP
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.first <= 0 or self.cap < self.first:
            raise ValueError(
                f"a reconnect policy needs 0 < first <= cap, not first={self.first} cap={self.cap}"
            )

    def bound(self, attempt: int) -> float:
        """The most attempt ``attempt`` (0, 1, ...) waits: ``first`` doubled per attempt, capped."""
        return min(self.cap, self.first * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt``: a uniform draw up to :meth:`bound`."""
        return self.rng.uniform(0.0, self.bound(attempt))

    def spread(self, interval: float) -> float:
        """``interval`` give or take a fifth: for a driver that paces its own reconnects
        at one fixed interval (aio-pika's ``reconnect_interval``), drawn once per connection
        so that a fleet's connections do not retry in step."""
        return interval * self.rng.uniform(0.8, 1.2)

    @staticmethod
    def order(count: int, preferred: int = 0) -> list[int]:
        """The indexes of ``count`` URLs in the order a round tries them: ``preferred``
        (the one that worked last) first, then the others as the operator wrote them."""
        if count <= 0:
            return []
        start = preferred % count
        return [(start + i) % count for i in range(count)]

    def attempts(self, count: int) -> Attempts:
        """The state of one connection's reconnect attempts over ``count`` URLs."""
        return Attempts(self, count)


class Attempts:
    """Where one connection is in its policy: the failed attempts since it was last
    restored, and which URL worked last."""

    def __init__(self, policy: ReconnectPolicy, count: int) -> None:
        if count < 1:
            raise ValueError("a connection needs at least one URL")
        self.policy = policy
        self.count = count
        #: The URL that worked last: a round starts there.
        self.preferred = 0
        #: Rounds that ended without a connection since the last restore.
        self.failed = 0

    def round(self) -> list[int]:
        """The URLs of the next round, in the order to try them."""
        return self.policy.order(self.count, self.preferred)

    def next_delay(self) -> float:
        """The pause before the next round (the attempt count goes up by one)."""
        delay = self.policy.delay(self.failed)
        self.failed += 1
        return delay

    def connected(self, index: int) -> None:
        """URL ``index`` answered: later rounds start there."""
        self.preferred = index % self.count

    def restored(self) -> None:
        """The connection and what was declared on it are back: backoff starts over."""
        self.failed = 0
