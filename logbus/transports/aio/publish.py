"""Publishing on the aio-pika transport: one confirmed publish, or a window of them.

:func:`send` publishes one message on the transport's confirming channel and
waits for its confirm, turning a return into :class:`~logbus.errors.Unroutable`,
a nack into :class:`~logbus.errors.NotConfirmed` and any driver error into the
logbus one. :func:`send_many` keeps a window of those in flight — as many as
the broker's pace needs, up to ``publish_window``, by the same
:class:`~logbus.transports.amqp.window.PublishWindow` policy as the pika transport —
refilling from half a window so it waits once per half window rather than per
message, and raises one error at the end for whatever was not confirmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol, cast

import aiormq.abc
import aiormq.exceptions as amqp

from logbus.errors import LogbusError, NotConfirmed, Unroutable
from logbus.message import Message
from logbus.transports.aio.connect import Options
from logbus.transports.aio.convert import to_amqp
from logbus.transports.aio.errors import nacked, translate, unroutable
from logbus.transports.amqp.window import PublishWindow

__all__ = ["PublishHost", "send", "send_many"]


class PublishHost(Protocol):
    """What publishing needs of its transport (the transport passes itself)."""

    endpoint: str  # the broker it is connected to now: host:port
    options: Options
    _closed: bool
    # Set when a confirm did not come in time: the broker is not reading what we send,
    # so closing the transport does not wait for its answer.
    _unanswered: bool


async def send(
    transport: PublishHost,
    underlay: aiormq.abc.AbstractChannel,
    message: Message,
    mandatory: bool,
    *,
    timed: bool = True,
) -> None:
    """Publish one message and wait for its confirm (within ``confirm_timeout`` if ``timed``)."""
    doing = f"publishing to exchange {message.exchange!r}"
    try:
        # send_many times its batch as a whole (timed=False): a timeout context
        # per message costs more than the rest of logbus's work on it.
        async with asyncio.timeout(transport.options.confirm_timeout if timed else None):
            await cast(aiormq.Channel, underlay).basic_publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                properties=to_amqp(message.properties),
                mandatory=mandatory,
                # Do not wait for each frame to reach the socket: the confirm
                # awaited below says more, and the writer batches the frames.
                wait=False,
            )
    except amqp.PublishError as exc:
        raise unroutable(exc, message) from exc
    except amqp.DeliveryError as exc:
        raise nacked(message) from exc
    except TimeoutError as exc:
        transport._unanswered = True
        raise NotConfirmed(
            f"{doing}: no confirm from {transport.endpoint} within "
            f"{transport.options.confirm_timeout:g} s (the broker may be overloaded; retry)"
        ) from exc
    except ValueError as exc:  # aiormq refuses an over-long routing key
        raise translate(exc, doing=doing, endpoint=transport.endpoint) from exc
    except Exception as exc:
        raise translate(
            exc, doing=doing, endpoint=transport.endpoint, closed=transport._closed
        ) from exc


async def send_many(
    transport: PublishHost,
    underlay: aiormq.abc.AbstractChannel,
    messages: Iterable[Message],
    mandatory: bool,
) -> None:
    """Publish with a window of confirms pending; raise if any was not confirmed."""
    pending = _InFlight(transport, underlay, mandatory)
    window = pending.window
    sent = 0
    try:
        for message in messages:
            if pending.broken():
                break  # a channel or connection error: stop sending
            if len(pending.tasks) >= window.limit:  # refill from half: one wait per half window
                await pending.until_at_most(window.limit // 2)
            sent += 1
            pending.start(sent, message)
    except (asyncio.CancelledError, NotConfirmed):
        pending.cancel()
        raise
    except BaseException:
        # The iterable failed: the publishes already sent are waited for, so that
        # their outcome is known, then its error goes on.
        await pending.until_at_most(0)
        raise
    await pending.until_at_most(0)
    _raise_failures(pending.failures, sent)


class _InFlight:
    """The publishes of one :func:`send_many` awaiting their confirms, and their window."""

    def __init__(
        self, transport: PublishHost, underlay: aiormq.abc.AbstractChannel, mandatory: bool
    ) -> None:
        self._transport = transport
        self._underlay = underlay
        self._mandatory = mandatory
        # A batch's publishes do not outlive its connection (a drop fails them), so
        # each batch starts its window afresh, as the pika transport does per connection.
        options = transport.options
        self.window = PublishWindow(options.publish_window, budget=options.publish_budget)
        self.failures: list[tuple[int, LogbusError]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.get_running_loop()
        self._wake: list[tuple[int, asyncio.Future[None]]] = []  # (at most this many left, waiter)

    def broken(self) -> bool:
        """Whether a publish failed for more than a missing confirm (a channel error)."""
        return any(not isinstance(e, NotConfirmed) for _, e in self.failures)

    def start(self, index: int, message: Message) -> None:
        """Publish ``message`` (the ``index``-th of the batch) without waiting."""
        task = self._loop.create_task(self._one(index, message))
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def _one(self, index: int, message: Message) -> None:
        try:
            await send(self._transport, self._underlay, message, self._mandatory, timed=False)
        except LogbusError as exc:
            self.failures.append((index, exc))
        else:
            self.window.confirmed(1, self._loop.time(), limited=bool(self._wake))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        wake = self._wake
        if wake and len(self.tasks) <= wake[0][0] and not wake[0][1].done():
            wake[0][1].set_result(None)

    async def until_at_most(self, limit: int) -> None:
        """Wait (once, not per message) until at most ``limit`` are unconfirmed."""
        if len(self.tasks) <= limit:
            return
        transport = self._transport
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._wake[:] = [(limit, waiter)]
        try:
            await asyncio.wait_for(waiter, transport.options.confirm_timeout)
        except TimeoutError:
            transport._unanswered = True
            raise NotConfirmed(
                f"{len(self.tasks)} message(s) not confirmed by {transport.endpoint} within "
                f"{transport.options.confirm_timeout:g} s (the broker may be overloaded; retry)",
                unconfirmed=len(self.tasks) + len(self.failures),
            ) from None
        finally:
            self._wake.clear()


def _raise_failures(failures: list[tuple[int, LogbusError]], total: int) -> None:
    if not failures:
        return
    failures.sort(key=lambda f: f[0])
    hard = [e for _, e in failures if not isinstance(e, NotConfirmed)]
    if hard:
        raise hard[0]
    first = failures[0][1]
    count = len(failures)
    note = f" ({count} of {total} messages not confirmed)"
    if isinstance(first, Unroutable):
        raise Unroutable(
            str(first) + note,
            exchange=first.exchange,
            routing_key=first.routing_key,
            unconfirmed=count,
        ) from first
    raise NotConfirmed(str(first) + note, unconfirmed=count) from first
