"""Confirmed publishing for the AMQP transport: batches, the confirm channel, re-sends.

A caller's ``publish`` or ``publish_many`` is one :class:`PublishBatch`; its
messages travel as :class:`Outgoing` items through the :class:`Publisher`, which
owns the channel in confirm mode on the I/O thread. Each item ends exactly once:
confirmed, returned (``Unroutable``), nacked (``NotConfirmed``), refused by a
channel error (``NotFound`` ...), or given up by its caller after the confirm
timeout. Items in flight when the connection drops go out again on the next
connection — at least once: a duplicate is possible, a silent loss is not. How
many are in flight at once is the :class:`~logbus.transports.amqp.window.PublishWindow`'s
call: enough for the broker's pace, and few again after a reconnect, so that a
flapping connection re-sends (and duplicates) little.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from time import monotonic
from typing import Any

from pika import spec

from logbus._log import get_logger
from logbus.errors import InputError, LogbusError, NotConfirmed, TransportError
from logbus.message import Message
from logbus.transports.amqp.errors import nacked, named_exchange, unroutable
from logbus.transports.amqp.pika_convert import to_pika
from logbus.transports.amqp.pika_errors import RECOVERABLE, broker_refusal, local_error
from logbus.transports.amqp.pika_loop import IoHost, io_callback
from logbus.transports.amqp.window import BUDGET, PublishWindow

__all__ = ["Outgoing", "Progress", "PublishBatch", "Publisher", "outgoing"]

log = get_logger("logbus.transports.amqp")

#: Builds the error a batch raises, given how many of its messages failed.
Failure = Callable[[int], LogbusError]
#: Told (on the I/O thread) how many more of a stream's messages are confirmed, in order.
Progress = Callable[[int], None]


class PublishBatch:
    """One caller's publishes: counts what is outstanding and what failed, wakes the caller."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.cond = threading.Condition()
        self.progress = progress
        self._prefix = 0  # with progress: messages 0.._prefix-1 are all confirmed
        self._ahead: set[int] = set()  # confirmed out of order, past the prefix
        self.outstanding = 0
        self.failed = 0
        self.first_failure: Failure | None = None
        self.progress_at = monotonic()
        self.abandoned = False
        self.wake_at = -1  # the caller sleeps until outstanding <= wake_at

    def add(self, count: int) -> None:
        """``count`` more messages are on their way (caller's thread)."""
        with self.cond:
            self.outstanding += count
            self.progress_at = monotonic()

    def resolve(self, failure: Failure | None = None, count: int = 1) -> None:
        """``count`` messages ended: confirmed (``failure`` None) or failed (I/O thread).

        The caller is woken only when it can act (its limit is reached), not per
        message: a thread switch per confirm would cost more than the confirm.
        """
        with self.cond:
            self.outstanding -= count
            self.progress_at = monotonic()
            if failure is not None:
                self.failed += count
                if self.first_failure is None:
                    self.first_failure = failure
            if self.outstanding <= self.wake_at:
                self.cond.notify_all()

    def confirmed_in_order(self, seqs: list[int]) -> None:
        """Messages ``seqs`` (their places in the stream) were confirmed (I/O thread): tell
        :attr:`progress` how far the stream is confirmed from its start without a gap.

        A stream's caller answers its own senders (a RELP frame, a spool entry) per
        message; only a gapless prefix may be answered, so a message confirmed after
        a re-send on a new connection waits for those before it.
        """
        assert self.progress is not None
        if self.abandoned:
            return  # its caller gave up and reported the rest as not confirmed
        start = prefix = self._prefix
        ahead = self._ahead
        for seq in seqs:
            if seq == prefix:
                prefix += 1
            else:
                ahead.add(seq)
        while ahead and prefix in ahead:
            ahead.discard(prefix)
            prefix += 1
        self._prefix = prefix
        if prefix > start:
            self.progress(prefix - start)

    def wait(self, limit: int, timeout: float) -> bool:
        """Wait until at most ``limit`` are outstanding; False if the broker made no
        progress on this batch for ``timeout`` seconds."""
        with self.cond:
            self.wake_at = limit
            try:
                while self.outstanding > limit:
                    left = self.progress_at + timeout - monotonic()
                    if left <= 0:
                        return False
                    self.cond.wait(min(left, 1.0))
                return True
            finally:
                self.wake_at = -1

    def abandon(self) -> int:
        """Give up on what is outstanding (it will not be sent any more); how many that is."""
        with self.cond:
            self.abandoned = True
            return self.outstanding

    def error(self, unconfirmed_extra: int = 0) -> LogbusError | None:
        """The error to raise for this batch, or None when everything was confirmed."""
        with self.cond:
            count = self.failed + unconfirmed_extra
            if self.first_failure is None:
                return None
            return self.first_failure(count)


@dataclass(slots=True, eq=False)
class Outgoing:
    """One message on its way to the broker."""

    batch: PublishBatch
    exchange: str
    routing_key: str
    body: bytes
    properties: Any  # pika.BasicProperties
    mandatory: bool
    returned: bool = False
    seq: int = 0  # its place in its batch, for a stream's progress


def outgoing(
    batch: PublishBatch, ready: list[Message], mandatory: bool, seq: int
) -> tuple[list[Outgoing], InputError | None]:
    """``ready`` as the I/O thread's publishes, numbered from ``seq``; the messages up
    to the first that AMQP cannot carry, and that one's error."""
    chunk: list[Outgoing] = []
    for message in ready:
        try:
            properties = to_pika(message)
        except InputError as exc:
            return chunk, exc
        where = (message.exchange, message.routing_key)
        chunk.append(Outgoing(batch, *where, bytes(message.body), properties, mandatory, seq=seq))
        seq += 1
    return chunk, None


def _unroutable(item: Outgoing) -> Failure:
    exchange, key = item.exchange, item.routing_key
    return lambda count: unroutable(exchange, key, count)


def _nacked(item: Outgoing) -> Failure:
    exchange = item.exchange
    return lambda count: nacked(exchange, count)


def _refused(error: LogbusError) -> Failure:
    return lambda _count: error


class Publisher:
    """The confirm-mode channel: sends queued items when ready, matches confirms to them."""

    def __init__(self, core: IoHost, window: int, budget: float = BUDGET) -> None:
        self.core = core
        self.window = PublishWindow(window, budget=budget)
        self.channel: Any = None
        self.blocked: str | None = None
        self.unsent: deque[Outgoing] = deque()
        self.inflight: dict[int, Outgoing] = {}
        self._next_tag = 1
        # The lowest delivery tag that may still be in flight: a multiple confirm pops
        # its tags by key from here. Taking a dict's first key again and again instead
        # scans the deleted entries before it, which made each confirm cost the whole
        # window (half the I/O thread's time at a 17k window).
        self._oldest = 1
        self._latest: Any = None

    def open(self, connection: Any) -> None:
        """Open a fresh confirm-mode channel; queued items go out once it is ready."""
        self.blocked = None
        channel = connection.channel(on_open_callback=self._opened)
        channel.add_on_close_callback(self._closed)
        self._latest = channel

    def submit(self, items: list[Outgoing]) -> None:
        """Queue items for sending (I/O thread)."""
        if self.core.closing:
            for item in items:
                item.batch.resolve(_closed_failure)
            return
        self.unsent.extend(items)
        self.pump()

    def pump(self) -> None:
        """Send what is queued, as far as the window allows, unless not connected, not
        restored yet, or blocked."""
        channel = self.channel
        if channel is None or self.blocked is not None or not self.core.ready:
            return
        inflight, window = self.inflight, self.window
        buffers = _tx_buffers(channel)
        queued = len(buffers) if buffers is not None else 0
        try:
            self._send(channel, inflight, window)
        finally:
            if buffers is not None:
                _join_tail(buffers, len(buffers) - queued)

    def _send(self, channel: Any, inflight: dict[int, Outgoing], window: PublishWindow) -> None:
        while self.unsent and len(inflight) < window.limit:
            if not channel.is_open:
                return
            item = self.unsent.popleft()
            if item.batch.abandoned:
                continue  # its caller already reported it as not confirmed
            try:
                channel.basic_publish(
                    item.exchange, item.routing_key, item.body, item.properties, item.mandatory
                )
            except RECOVERABLE:
                self.unsent.appendleft(item)  # closing: sent again on the next channel
                return
            except Exception as exc:  # pika could not encode it: this item's own failure
                item.batch.resolve(_refused(local_error(exc, "publish")))
                continue
            inflight[self._next_tag] = item
            self._next_tag += 1

    def unanswered(self) -> bool:
        """Whether the broker is not reading what we send: it blocked publishing, or a
        caller gave up on a publish in flight (its deadline passed without a confirm)."""
        if self.blocked is not None:
            return True
        return any(item.batch.abandoned for item in self.inflight.values())

    def fail_all(self) -> None:
        """The transport is closing: everything not confirmed is reported as such."""
        pending = [*self.inflight.values(), *self.unsent]
        self.inflight.clear()
        self.unsent.clear()
        for item in pending:
            item.batch.resolve(_closed_failure)

    def unblock(self) -> None:
        self.blocked = None
        self.pump()

    @io_callback
    def _opened(self, channel: Any) -> None:
        if channel is not self._latest:
            return
        channel.add_on_return_callback(self._returned)
        channel.confirm_delivery(self._confirmed, callback=lambda _frame: self._confirming(channel))

    @io_callback
    def _confirming(self, channel: Any) -> None:
        if channel is not self._latest:
            return
        self.channel = channel
        self._next_tag = self._oldest = 1
        self.pump()

    @io_callback
    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, spec.Basic.Ack)
        tag = method.delivery_tag
        if method.multiple:
            inflight = self.inflight
            done = [
                item
                for item in map(inflight.pop, range(self._oldest, tag + 1), repeat(None))
                if item is not None
            ]
            self._oldest = max(self._oldest, tag + 1)
        else:
            item = self.inflight.pop(tag, None)
            done = [] if item is None else [item]
        confirmed: dict[PublishBatch, int] = {}
        for item in done:
            if not ok:
                item.batch.resolve(_nacked(item))
            elif item.returned:
                item.batch.resolve(_unroutable(item))
            else:
                confirmed[item.batch] = confirmed.get(item.batch, 0) + 1
        for batch, count in confirmed.items():
            if batch.progress is not None:  # told before the caller can wake and return
                batch.confirmed_in_order(
                    [i.seq for i in done if i.batch is batch and ok and not i.returned]
                )
            batch.resolve(count=count)
        if done:
            window = self.window
            window.confirmed(len(done), monotonic(), limited=bool(self.unsent))
            # Refill once an eighth of the window is free: fewer, larger writes than one
            # per confirm. (From half a window, a deep window left the broker idle: a
            # durable queue confirms a few thousand at a time, and the window sat three
            # quarters full with publishes waiting until the next batch of confirms.)
            if window.limit - len(self.inflight) >= max(1, window.limit // 8):
                self.pump()

    @io_callback
    def _returned(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        # basic.return carries no delivery tag; it comes before the ack of the same
        # message, so the earliest unreturned in-flight twin is the one returned.
        for item in self.inflight.values():
            if (
                item.mandatory
                and not item.returned
                and item.exchange == method.exchange
                and item.routing_key == method.routing_key
                and item.body == body
            ):
                item.returned = True
                return
        log.warning("amqp.unmatched_return", exchange=method.exchange, key=method.routing_key)

    @io_callback
    def _closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._latest:
            return
        self.channel = None
        pending = list(self.inflight.values())
        self.inflight.clear()
        if self.core.closing:
            for item in pending:
                item.batch.resolve(_closed_failure)
            return
        refusal = broker_refusal(reason)
        if refusal is not None:
            error = refusal.error
            culprit = named_exchange(refusal.text)
            failed = [i for i in pending if culprit is None or i.exchange == culprit]
            log.info(
                "amqp.publish_refused",
                code=refusal.code,
                text=refusal.text,
                failed=len(failed),
                resent=len(pending) - len(failed),
            )
            # Queued items for the same missing exchange would only close the next channel.
            if culprit is not None:
                failed += [i for i in self.unsent if i.exchange == culprit]
                self.unsent = deque(i for i in self.unsent if i.exchange != culprit)
            for item in failed:
                item.batch.resolve(_refused(error))
            gone = {id(item) for item in failed}
            self.unsent.extendleft(reversed([i for i in pending if id(i) not in gone]))
            connection = self.core.live_connection()
            if connection is not None:
                self.open(connection)
            return
        # The connection dropped (a publish cannot cause a connection-level error):
        # send again after reconnecting, at least once — a few at first (every one
        # the broker had stored already is a duplicate), more as confirms come back.
        self.unsent.extendleft(reversed(pending))
        self.window.restart()


def _tx_buffers(channel: Any) -> deque[bytes] | None:
    """pika's queue of bytes waiting for the socket, if this pika keeps one where 1.3 does."""
    transport = getattr(getattr(channel, "connection", None), "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    return buffers if isinstance(buffers, deque) else None


def _join_tail(buffers: deque[bytes], count: int) -> None:
    """Join the last ``count`` buffers into one. pika queues each frame on its own and sends
    each with its own ``send()``: three system calls a message, the I/O thread's largest
    cost under load. Joined, a pump's burst goes out in one (the total is unchanged; only
    what this pump added is joined, so a backed-up socket costs no re-copying)."""
    if count > 1:
        tail = [buffers.pop() for _ in range(count)]
        tail.reverse()
        buffers.append(b"".join(tail))


def _closed_failure(count: int) -> TransportError:
    return NotConfirmed(
        f"the transport was closed before the broker confirmed {count} message(s)",
        unconfirmed=count,
    )
