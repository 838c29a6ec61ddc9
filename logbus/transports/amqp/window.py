"""How many confirmed publishes to keep in flight: :class:`PublishWindow`, one policy for both
AMQP transports (the pika publisher in ``pika_publish``, aio-pika's ``send_many``).

Every publish in flight is a duplicate in waiting: when the connection drops
before its confirm came back, the pika transport sends it again (at least
once), and the broker may have stored it already. A window wider than
throughput needs buys nothing for that price: once the broker confirms as fast
as it writes, what is sent beyond that only waits in buffers, and confirms come
back later and later. A fixed window of 5,000 kept confirms nearly a second
late, so one connection reset a second re-sent 86 % of the records.

So the window is sized by throughput, and cut by resets, as TCP's congestion
window is by losses:

- It never holds more than the broker confirms in its budget of seconds
  (:data:`BUDGET` unless told otherwise), at the best pace it confirmed
  lately. The pace is measured, not each confirm's delay: a busy process's
  thread switches make single confirms late without the broker being slower,
  and the best pace of the last seconds, not the latest, keeps a moment's
  slowness from shrinking the window and the slower sending that follows from
  shrinking it again.
- It starts small and doubles per round trip (slow start) while it is what
  holds sending back. A deep budget's window starts at :data:`DEEP_START`
  instead, on its first connection only: a durable queue's round trip is a
  fifth of a second (it confirms what it synced, a few thousand at a time), so
  slow start from 32 took a second and a half to reach the broker's pace, half
  of a 50,000-line burst (measured: 11.2k against 12.2k lines/s started deep).
- A reconnect starts it small again (what was in flight goes out again, and
  the new connection's pace is unknown), with slow start only up to a quarter
  of what it was; beyond that it grows by :data:`GROWTH` per round trip. A
  connection that keeps dropping thus keeps few publishes in flight, and
  re-sends few; a steady one grows back to the broker's pace.

The budget is the trade between the two prices: a publisher that must lose
little to re-sends (``logbus emit``, the logging handler) keeps :data:`BUDGET`;
one whose throughput is the point and whose consumers drop duplicates by id
(the ingest gateway: :data:`DEEP_BUDGET`) keeps more. A durable classic queue
confirms what it has synced to disk, and under load it syncs in batches, so its
confirms lag by a large part of a second: a window shallower than that leaves
the queue idle between the batches (measured: 0.1 s of pace confirmed 11.8k
lines/s of a loggen stream, 1 s 13.4k, with a ceiling of 15,000).
"""

from __future__ import annotations

from collections import deque

__all__ = ["BUDGET", "DEEP_BUDGET", "DEEP_START", "GROWTH", "INITIAL", "PublishWindow"]

#: Publishes in flight on a fresh connection.
INITIAL = 32
#: Seconds of the broker's confirming pace the window holds at most.
BUDGET = 0.1  # 0.2 re-sent 11 % of the records at one connection reset a second
#: The budget of a publisher that wants throughput more than few re-sends (see above).
DEEP_BUDGET = 1.0
#: Publishes in flight on the first connection of a window with :data:`DEEP_BUDGET` or more.
DEEP_START = 5000
#: Publishes the window grows by per round trip once past slow start.
GROWTH = 8
_SAMPLE = 0.25  # seconds of confirms per measurement of the pace
_MEMORY = 2.0  # seconds a measurement counts: the pace is the best of them
_CUT = 4  # a reconnect ends slow start at a quarter of the old window


class PublishWindow:
    """The number of unconfirmed publishes a connection may have: :attr:`limit`.

    Tell it each confirm (:meth:`confirmed`) and each new connection
    (:meth:`restart`); it never goes below ``initial`` nor above ``ceiling``
    (the ``publish_window`` option), nor above ``budget`` seconds of the pace
    (the ``publish_budget`` option).
    """

    __slots__ = (
        "_count",
        "_pace",
        "_samples",
        "_since",
        "_size",
        "_start",
        "_threshold",
        "budget",
        "ceiling",
        "initial",
        "limit",
    )

    def __init__(self, ceiling: int, *, initial: int = INITIAL, budget: float = BUDGET) -> None:
        self.ceiling = max(1, int(ceiling))
        self.budget = budget
        self.initial = max(1, min(initial, self.ceiling))
        deep = budget >= DEEP_BUDGET
        self._start = min(self.ceiling, max(self.initial, DEEP_START)) if deep else self.initial
        self.limit = self._start
        self._size = float(self._start)
        self._threshold = float(self.ceiling)  # where slow start ends
        self._pace = 0.0  # confirms a second, the best lately; 0 until measured
        self._samples: deque[tuple[float, float]] = deque()  # (when, confirms a second)
        self._since: float | None = None
        self._count = 0

    def restart(self) -> None:
        """A new connection: start small again, slow start up to a quarter of the old size."""
        self._threshold = max(float(self.initial), self._size / _CUT)
        self._start = self.initial
        self._size = float(self.initial)
        self.limit = self.initial
        self._since = None

    def confirmed(self, count: int, now: float, *, limited: bool) -> None:
        """``count`` publishes were confirmed at ``now`` (monotonic seconds); ``limited``
        says whether more were waiting for room (only then can a wider window send more)."""
        if self._since is None:
            self._since, self._count = now, 0
        else:
            self._count += count
            if now - self._since >= _SAMPLE:
                self._measure(now)
        size = self._size
        if limited:
            size += count if size < self._threshold else GROWTH * count / size
        self._size = min(size, self._cap())
        self.limit = int(self._size)

    def _measure(self, now: float) -> None:
        assert self._since is not None
        samples = self._samples
        samples.append((now, self._count / (now - self._since)))
        while samples[0][0] < now - _MEMORY:
            samples.popleft()
        self._pace = max(pace for _when, pace in samples)
        self._since, self._count = now, 0

    def _cap(self) -> float:
        # Until the pace is known, slow start alone grows it, up to a few round trips' worth.
        cap = self._pace * self.budget if self._pace else 8.0 * self._start
        return min(float(self.ceiling), max(float(self.initial), cap))
