"""Serialised channel work for the AMQP transport: :class:`Op` and :class:`ChannelSlot`.

A slot owns one pika channel used for one kind of work (declarations, or
``basic.get``) and runs its operations one at a time, so that when the broker
closes the channel (404, 406 ...) exactly the operation in flight gets the error.
The slot then opens a new channel and goes on with the next operation: a
caller is never left holding a dead channel. Everything here runs on the I/O
thread.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from pika import spec

from logbus._log import get_logger
from logbus.errors import LogbusError, TransportClosed, TransportError
from logbus.transports.amqp.pika_errors import broker_refusal, hard_error, local_error
from logbus.transports.amqp.pika_loop import IoHost, io_callback

__all__ = ["ChannelSlot", "Op"]

log = get_logger("logbus.transports.amqp")

#: Runs an operation on a channel; calls ``done(result)`` when the broker answered.
Run = Callable[[Any, Callable[[Any], None]], None]


class Op:
    """One operation for a slot: a user's call waiting on a future, or an internal step."""

    __slots__ = ("future", "internal", "on_error", "run", "started", "what")

    def __init__(
        self,
        what: str,
        run: Run,
        *,
        future: Future[Any] | None = None,
        internal: bool = False,
        on_error: Callable[[LogbusError], None] | None = None,
    ) -> None:
        self.what = what
        self.run = run
        self.future = future
        self.internal = internal
        self.on_error = on_error
        self.started = False

    def begin(self) -> bool:
        """Mark it running; False if its caller gave up before it started."""
        if self.started or self.future is None:
            self.started = True
            return True
        self.started = True
        return self.future.set_running_or_notify_cancel()

    def succeed(self, value: Any) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(value)

    def fail(self, error: LogbusError) -> None:
        if self.on_error is not None:
            self.on_error(error)
        if self.future is None or self.future.done():
            return
        if not self.started and not self.future.set_running_or_notify_cancel():
            return
        self.future.set_exception(error)


class ChannelSlot:
    """A channel running :class:`Op` s one at a time, reopened after a channel error."""

    def __init__(self, core: IoHost, role: str, *, gets: bool = False) -> None:
        self.core = core
        self.role = role
        self.channel: Any = None
        self.epoch = 0
        self.live_epoch: int | None = None
        self.unacked: set[int] = set()
        self.ops: deque[Op] = deque()
        self.current: Op | None = None
        self._latest: Any = None
        self._gets = gets

    def describe(self) -> str:
        return f"{self.role} channel"

    def open(self, connection: Any) -> None:
        """Open a fresh channel on ``connection``; queued operations run once it is open."""
        channel = connection.channel(on_open_callback=self._opened)
        channel.add_on_close_callback(self._closed)
        self._latest = channel

    def push(self, op: Op) -> None:
        """Queue an operation; it fails at once if the transport is closing."""
        if self.core.closing:
            op.fail(TransportClosed("the transport is closed; open a new one"))
            return
        self.ops.append(op)
        self.kick()

    def push_front(self, ops: Iterable[Op]) -> None:
        """Run ``ops`` (internal restore steps) before anything already queued."""
        self.ops.extendleft(reversed(list(ops)))
        self.kick()

    def drop_internal(self) -> None:
        """Forget queued internal steps (a new connection brings its own)."""
        self.ops = deque(op for op in self.ops if not op.internal)

    def fail_all(self, error: TransportError) -> None:
        """Fail the operation in flight and every queued one (the transport is closing)."""
        pending = [self.current, *self.ops] if self.current else list(self.ops)
        self.current = None
        self.ops.clear()
        for op in pending:
            op.fail(error)

    def kick(self) -> None:
        """Start the next operation if the channel is free."""
        while self.current is None and self.ops and self.channel is not None:
            if not (self.core.ready or self.ops[0].internal):
                return
            if not self.channel.is_open:
                return
            op = self.ops.popleft()
            if not op.begin():
                continue
            self.current = op
            try:
                op.run(self.channel, functools.partial(self._complete, op))
            except Exception as exc:  # pika refused locally: a bad argument
                if self.current is op:
                    self.current = None
                op.fail(local_error(exc, op.what))

    def io_after_settle(self) -> None:
        """Nothing to do: the slot's channel lives as long as the connection."""

    def _complete(self, op: Op, value: Any) -> None:
        if self.current is not op:
            return
        self.current = None
        op.succeed(value)
        self.kick()

    @io_callback
    def _opened(self, channel: Any) -> None:
        if channel is not self._latest:
            return
        self.channel = channel
        self.epoch += 1
        self.live_epoch = self.epoch
        self.unacked.clear()
        if self._gets:  # basic.get-empty has no callback of its own in pika
            channel.add_callback(self._get_empty, [spec.Basic.GetEmpty], one_shot=False)
        self.kick()

    @io_callback
    def _closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._latest:
            return
        self.channel = None
        self.live_epoch = None
        self.unacked.clear()
        op, self.current = self.current, None
        if self.core.closing:
            if op is not None:
                op.fail(TransportClosed("the transport was closed during the operation"))
            return
        refusal = broker_refusal(reason)
        if refusal is not None:
            log.info(
                "amqp.channel_error",
                channel=self.role,
                code=refusal.code,
                text=refusal.text,
                operation=op.what if op else None,
            )
            if op is not None:
                op.fail(refusal.error)
            connection = self.core.live_connection()
            if connection is not None:
                self.open(connection)
            return
        if op is None:
            return
        # A declaration may be what the broker closed the connection for (503 for an
        # unknown exchange type): running it again would only repeat that. A get cannot.
        hard = None if self._gets else hard_error(reason)
        if hard is not None:
            op.fail(hard)
        else:  # the connection dropped: run it again once it is back
            self.ops.appendleft(op)

    @io_callback
    def _get_empty(self, _frame: Any) -> None:
        if self.current is not None:
            self._complete(self.current, None)
