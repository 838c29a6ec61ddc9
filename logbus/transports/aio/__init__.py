"""The aio-pika transport: :class:`AioTransport`, logbus's async AMQP client.

>>> async with await connect_async("amqp://guest:guest@localhost/%2F") as t:  # doctest: +SKIP
...     await t.publish(Message(b"disk failed", exchange="logbus.topic", routing_key="kern.crit"))

:class:`AioTransport` has the sync :class:`~logbus.transports.base.Transport`'s
methods, each ``async def``. It rests on ``aio_pika.connect_robust``: the
initial connect fails over across comma-separated URLs with backoff and
jitter, and after a drop the connection reconnects by itself while consumers
resume (see :class:`AioConsumer`). It uses a
channel for declarations, a confirming channel for publishes, one for
``basic.get``, and one robust channel per consumer carrying that consumer's
prefetch. A broker refusal (404, 405, 403, 406) closes the channel it happened
on; the next call opens a fresh one, so the refusal surfaces as the logbus
error with the broker's reply text and the transport stays usable.

Publishing is always confirmed, ``mandatory`` by default: a returned message
raises :class:`~logbus.errors.Unroutable`, a nacked one
:class:`~logbus.errors.NotConfirmed`. ``publish_many`` keeps up to
``publish_window`` publishes in flight and waits for all their confirms.
Messages without a ``message_id`` are given one by aiormq, which matches
returns to publishes by it.

A queue declared with an empty name gets a client-made name
(``logbus.gen-<hex>``) rather than a server one: RabbitMQ refuses to declare
``amq.gen-*`` names again, and an exclusive queue must be declared again after
a reconnect for its consumer to resume.

**Settling from async code.** :class:`~logbus.transports.base.Delivery` is
shared with the sync transports, so ``ack``/``nack``/``reject`` are plain
methods. Called on the event loop's thread (the normal case in async code)
they do not block: they check the delivery's channel is still open, then
queue the frame on the loop; settlements are sent in the order they were
made, and :meth:`AioTransport.close` sends any still queued before closing.
Called from any other thread, they hand the frame to the loop and wait until
it is queued for the socket. (Sync code has the pika transport, ``amqp://`` in
:func:`logbus.transports.connect`: one sync AMQP engine, not a facade on this one.)
Settling a delivery whose channel has closed raises
:class:`~logbus.errors.ConnectionLost`: the broker already requeued it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from logbus.transports.aio.consumer import AioConsumer
from logbus.transports.aio.transport import AioTransport
from logbus.transports.base import AsyncConsumer, AsyncTransport

__all__ = ["AioConsumer", "AioTransport", "connect_async"]


async def connect_async(url: str | None = None, **options: Any) -> AioTransport:
    """Open an :class:`AioTransport` (``settings=`` and the transport's options accepted)."""
    return await AioTransport(url, **options).connect()


if TYPE_CHECKING:  # mypy proves each class implements its Protocol

    def _implements(a: AioTransport, c: AioConsumer) -> tuple[AsyncTransport, AsyncConsumer]:
        return a, c
