"""Acks, nacks and rejects for the aio transport: in order, from the loop or any thread.

:class:`~logbus.transports.base.Delivery` settles through a plain callback.
On the event loop's thread the callback must not block, so it queues the
frame on the loop and returns; from any other thread it hands the frame to
the loop and waits until it is queued for the socket. Either way each
settlement waits for the one before it: an ``ack(multiple=True)`` that
overtook an earlier single ack would make the broker close the channel for
an unknown delivery tag.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable

import aiormq.abc

from logbus._log import get_logger
from logbus.errors import ConnectionLost, TransportClosed
from logbus.transports.aio.errors import translate
from logbus.transports.base import Settlement, Settler

__all__ = ["Settlements"]

log = get_logger("logbus.transports.aio")

#: Called once a delivery is settled: (delivery_tag, multiple).
AfterSettle = Callable[[int, bool], None]
_Settlement = tuple[Settlement, int, bool, bool]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Settlements:
    """The ordered settlement queue of one transport.

    ``loop`` is set once the transport connected, ``closed`` when it closes;
    ``endpoint`` names the broker in messages.
    """

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._timeout = timeout
        self._tail: asyncio.Task[None] | None = None

    def settler(self, underlay: aiormq.abc.AbstractChannel, after: AfterSettle | None) -> Settler:
        """The settle callback for deliveries received on ``underlay``."""

        def settle(how: Settlement, tag: int, multiple: bool, requeue: bool) -> None:
            loop = self.loop
            if self.closed or loop is None:
                raise TransportClosed(
                    f"cannot {how.value} delivery {tag}: the transport to {self.endpoint} is "
                    "closed, so the broker has requeued it"
                )
            if underlay.is_closed:
                raise ConnectionLost(
                    f"cannot {how.value} delivery {tag}: its channel to {self.endpoint} closed, "
                    "so the broker has requeued it and will redeliver it"
                )
            settlement = (how, tag, multiple, requeue)
            if _running_loop() is loop:
                self._chain(underlay, settlement, after, report=True)
                return
            future = asyncio.run_coroutine_threadsafe(
                self._settle_and_wait(underlay, settlement, after), loop
            )
            try:
                future.result(timeout=self._timeout)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise ConnectionLost(
                    f"{how.value} of delivery {tag} was not sent within {self._timeout:g} s"
                ) from None

        return settle

    def _chain(
        self,
        underlay: aiormq.abc.AbstractChannel,
        settlement: _Settlement,
        after: AfterSettle | None,
        *,
        report: bool,
    ) -> asyncio.Task[None]:
        previous = self._tail
        how, tag, multiple, requeue = settlement

        async def send() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if how is Settlement.ACK:
                await underlay.basic_ack(tag, multiple=multiple, wait=False)
            elif how is Settlement.NACK:
                await underlay.basic_nack(tag, multiple=multiple, requeue=requeue, wait=False)
            else:
                await underlay.basic_reject(tag, requeue=requeue, wait=False)

        if after is not None:
            after(tag, multiple)
        task = asyncio.get_running_loop().create_task(send())
        task.add_done_callback(lambda done: self._done(done, settlement, report))
        self._tail = task
        return task

    def _done(self, task: asyncio.Task[None], settlement: _Settlement, report: bool) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None and report:  # nobody awaits it: the log is the only trace
            doing = f"{settlement[0].value} of delivery {settlement[1]}"
            reason = translate(error, doing=doing, endpoint=self.endpoint)
            log.warning("settlement not sent", reason=str(reason))

    async def _settle_and_wait(
        self,
        underlay: aiormq.abc.AbstractChannel,
        settlement: _Settlement,
        after: AfterSettle | None,
    ) -> None:
        task = self._chain(underlay, settlement, after, report=False)
        try:
            await task
        except Exception as exc:
            doing = f"{settlement[0].value} of delivery {settlement[1]}"
            raise translate(exc, doing=doing, endpoint=self.endpoint, closed=self.closed) from exc

    async def flush(self) -> None:
        """Wait (up to the timeout) until every settlement made so far is queued to send."""
        tail = self._tail
        if tail is not None and not tail.done():
            await asyncio.wait([tail], timeout=self._timeout)
