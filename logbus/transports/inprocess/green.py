"""``gevent://`` — the in-process broker, driven by greenlets and ``gevent.queue``.

The only logbus module that imports gevent; :func:`logbus.transports.connect`
loads it on the first ``gevent://`` URL, and without gevent installed importing
it raises :class:`~logbus.errors.ConfigError` with the ``pip install`` line.
It never monkey-patches: that is the application's call, and ``gevent://`` is
correct either way.

Brokers are named like ``memory://``'s (``gevent://`` is the default one,
``gevent://name`` another) but kept apart from them: a greenlet program and a
threaded one in the same process never share queues by accident. Each
:class:`GreenTransport` is one session, so closing it requeues what it had not
acknowledged, as a dropped AMQP connection would.

The thread/greenlet boundary. The broker hands a consumer its deliveries
through a callback called under the broker's lock, on whichever thread made
the broker act: usually a greenlet of the consumer's own hub (a publish, an
ack), but without monkey-patching the broker's TTL reaper is a real thread,
and any other real thread may publish too. A ``gevent.queue.Queue`` belongs
to one hub and must not be touched from another thread, so a delivery made
on a foreign thread is parked in a thread-safe deque and the consumer's hub
is woken with ``loop.run_callback_threadsafe`` to move it into the queue;
while anything is parked, later deliveries park behind it, so the consumer
always sees the broker's delivery order. With monkey-patching the reaper is a
greenlet and every delivery takes the direct path. Either way nothing inside
the broker's lock switches greenlets, so its ``threading.RLock`` (cooperative
when patched, real otherwise) is only ever held for a few microseconds.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from logbus._urls import parse_url
from logbus.errors import ConfigError, TransportError

try:
    import gevent
    import gevent.monkey
    import gevent.queue
except ImportError as exc:
    raise ConfigError("gevent:// needs gevent: pip install 'logbus[gevent]'") from exc

from logbus.broker import Broker, Delivered, Session
from logbus.transports.base import DEFAULT_PREFETCH, Delivery, Settlement
from logbus.transports.inprocess.memory import SessionTransport

__all__ = ["GreenConsumer", "GreenTransport", "broker_name", "named"]

_CANCELLED = object()
# The OS thread's identity even when threading is patched (then get_ident names greenlets).
_thread_ident = gevent.monkey.get_original("_thread", "get_ident")
# How long one cooperative wait lasts when the caller gave no timeout. Gevent ends a wait
# that nothing scheduled can satisfy with LoopExit, but a delivery may still come from
# another thread; a timer keeps the hub running meanwhile, as a blocked thread would.
_KEEPALIVE = 60.0

_brokers: dict[str, Broker] = {}
_brokers_lock = threading.Lock()


def broker_name(url: str) -> str:
    """The broker name in ``gevent://name`` (empty for the default broker)."""
    parts = parse_url(url)
    if parts.scheme != "gevent":
        raise ConfigError(f"not a gevent:// URL: {url!r}")
    return (parts.netloc + parts.path).strip("/")


def named(name: str) -> Broker:
    """The process-wide ``gevent://`` broker called ``name``, created on first use."""
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = Broker(f"gevent:{name}")
        return broker


class GreenConsumer:
    """Deliveries of one queue, waited for cooperatively on a ``gevent.queue.Queue``.

    ``get`` yields to other greenlets while it waits and never blocks the hub.
    Several greenlets may share one consumer (a pool behind one prefetch
    window); cancelling it ends every one of their iterations. Settlements are
    pipelined as in :class:`~logbus.transports.inprocess.memory.MemoryConsumer`. The
    consumer belongs to the thread (and hub) that created it.
    """

    def __init__(
        self,
        session: Session,
        broker: Broker,
        queue_name: str,
        prefetch: int,
        exclusive: bool,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self.queue = queue_name
        self._session = session
        self._broker = broker
        self._loop = gevent.get_hub().loop
        self._owner: int = _thread_ident()
        self._inbox: gevent.queue.Queue[Delivered | object] = gevent.queue.Queue()
        self._parked: deque[Delivered | object] = deque()
        self._cancelled = False
        self.tag = session.consume(
            queue_name,
            self._deliver,
            prefetch=prefetch,
            on_cancel=lambda _tag: self._deliver(_CANCELLED),
            exclusive=exclusive,
            arguments=arguments,
        )

    def _deliver(self, item: Delivered | object) -> None:
        # Called under the broker's lock, so deliveries arrive here one at a time, in order.
        if _thread_ident() != self._owner:
            self._parked.append(item)
            self._loop.run_callback_threadsafe(self._unpark)
        elif self._parked:  # an unpark is pending: queue behind what it will move
            self._parked.append(item)
        else:
            self._inbox.put_nowait(item)

    def _unpark(self) -> None:
        # On the owner's hub, with no switch inside: a delivery made meanwhile on this
        # thread sees the deque non-empty and queues behind, keeping the order.
        parked, inbox = self._parked, self._inbox
        while parked:
            inbox.put_nowait(parked.popleft())

    def get(self, timeout: float | None = None) -> Delivery | None:
        """The next delivery, or None after ``timeout`` seconds or once cancelled."""
        if self._cancelled:
            return None
        item = self._inbox.get_nowait() if self._inbox.qsize() else self._wait(timeout)
        if item is None:
            return None
        if item is _CANCELLED:
            self._cancelled = True
            self._inbox.put_nowait(_CANCELLED)  # wake the next greenlet waiting here too
            return None
        assert isinstance(item, Delivered)
        return Delivery(
            item.message,
            delivery_tag=item.delivery_tag,
            redelivered=item.redelivered,
            consumer_tag=item.consumer_tag,
            queue=item.queue,
            settle=self._settle,
        )

    def _wait(self, timeout: float | None) -> Delivered | object | None:
        if _thread_ident() != self._owner:
            raise TransportError(
                f"consumer {self.tag} belongs to the thread that created it; "
                "consume from that thread, or open a transport in this one"
            )
        with self._broker.waiting(id(gevent.getcurrent())):
            while True:
                try:
                    item: Delivered | object = self._inbox.get(
                        timeout=_KEEPALIVE if timeout is None else timeout
                    )
                except gevent.queue.Empty:
                    if timeout is not None:
                        return None
                else:
                    return item

    def _settle(self, how: Settlement, tag: int, multiple: bool, requeue: bool) -> None:
        requeue_or_ack = None if how is Settlement.ACK else requeue
        self._session.settle_later(tag, multiple=multiple, requeue=requeue_or_ack)

    def __iter__(self) -> Iterator[Delivery]:
        while (delivery := self.get()) is not None:
            yield delivery

    @property
    def ended(self) -> bool:
        """Whether a get has seen the end: it returns None at once from now on."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop receiving; iterations end once what was delivered has been read."""
        if not self._cancelled and self._session.is_open:
            self._session.cancel(self.tag)
            self._deliver(_CANCELLED)  # behind any delivery still parked


class GreenTransport(SessionTransport):
    """A session on a process-wide ``gevent://`` broker; safe to share between greenlets."""

    def __init__(self, url: str = "gevent://", **_options: Any) -> None:
        super().__init__(url, named(broker_name(url)))

    def consume(
        self,
        queue: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> GreenConsumer:
        """Start consuming with manual acks and at most ``prefetch`` unacked deliveries."""
        return GreenConsumer(self._open(), self.broker, queue, prefetch, exclusive, arguments)
