"""``Subscriber``: a queue bound by keys, severities, exact keys or headers; records out.

>>> from logbus import Subscriber
>>> for record in Subscriber(url="memory://", keys=["kern.*", "*.critical"]):  # doctest: +SKIP
...     print(record.routing_key, record.message)

By default the queue is temporary (server-named, exclusive, auto-delete): it
lives as long as the subscriber's connection. After a reconnect the transport
declares it again (under a new name) with its bindings and consumes it, so the
subscription goes on, but records routed while it was disconnected are missed.
``queue=NAME, durable=True`` makes a named subscription that keeps records
while nobody listens. ``since=`` (``"10m"``, a ``timedelta`` or a time),
``from_start=True`` or ``offset=N`` replay the topology's history stream from
that point, with the same selectors, then follow it live; ``until=`` ends the
replay there (see :mod:`logbus._history`). A subscription that cannot be
restored raises the transport's error from ``get`` instead of waiting for
records that cannot come.
:class:`AsyncSubscriber` is the async twin, on the aio-pika transport
(``async for record in sub``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any, Literal

from logbus._history import History, history_stream, start_spec
from logbus._log import get_logger
from logbus.durations import parse_time
from logbus.emitter import declare_async
from logbus.errors import ConfigError, ConnectionLost, TransportError
from logbus.record import LogRecord, Severity, decode
from logbus.settings import Settings
from logbus.topology import Topology, declare
from logbus.transports import Consumer, Delivery, Transport, connect
from logbus.transports.base import AsyncConsumer, AsyncTransport

__all__ = ["AsyncSubscriber", "Subscriber"]

log = get_logger("logbus.subscriber")


def exchange_of_type(topology: Topology, exchange_type: str) -> str:
    """The topology's exchange of a type (the emit target first, for topic)."""
    emit_exchanges = [t.exchange for t in topology.emit]
    candidates = [e for e in topology.exchanges if e.type == exchange_type]
    candidates.sort(key=lambda e: e.name not in emit_exchanges)
    if not candidates:
        raise ConfigError(
            f"the topology has no {exchange_type} exchange to subscribe through; "
            f"add one to the config (see config/logbus.toml)"
        )
    return candidates[0].name


def bindings_for(
    topology: Topology,
    keys: Sequence[str],
    severities: Sequence[str | int | Severity],
    exact: Sequence[str],
    headers: Mapping[str, Any] | None,
    match: str,
    everything: bool,
) -> list[tuple[str, str, dict[str, Any]]]:
    """The (exchange, binding key, arguments) a subscription to these selectors needs."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    if keys or severities:
        topic = exchange_of_type(topology, "topic")
        out += [(topic, key, {}) for key in keys]
        out += [(topic, f"*.{Severity.parse(s)}", {}) for s in severities]
    if exact:
        direct = exchange_of_type(topology, "direct")
        out += [(direct, key, {}) for key in exact]
    if headers:
        if match not in ("all", "any"):
            raise ConfigError(f"match must be 'all' or 'any', not {match!r}")
        arguments = {"x-match": match, **{str(k): v for k, v in headers.items()}}
        out.append((exchange_of_type(topology, "headers"), "", arguments))
    if everything:
        out.append((exchange_of_type(topology, "fanout"), "", {}))
    return out


#: A point in time as the history options take it: a time, a duration ago, or text
#: (``"10m"``, ``"2025-01-02T03:04:05Z"``).
Moment = datetime | timedelta | str


def _moment(value: Moment | None, option: str) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, timedelta):
        return datetime.now(UTC) - value
    return parse_time(value, option=option)


def _replay(
    sub: Subscriber | AsyncSubscriber,
    queue: str | None,
    since: Moment | None,
    from_start: bool,
    offset: int | None,
    until: Moment | None,
) -> tuple[str, dict[str, Any]] | None:
    """Set ``sub.history``; the stream and consumer arguments of a replay, or None."""
    start = _moment(since, "since")
    spec = start_spec(start, from_start, offset)
    sub.history = None
    if spec is None:
        if until is not None:
            raise ConfigError("until needs a place to start: give since, from_start or offset")
        return None
    if queue is not None:
        raise ConfigError("a history subscription reads the stream: it takes no queue of its own")
    stream = history_stream(sub.topology)
    sub.history = History(sub.bindings, sub.topology, since=start, until=_moment(until, "until"))
    return stream, {"x-stream-offset": spec}


class Subscriber:
    """Consumes records routed by binding keys, severities, exact keys, headers or all.

    Iterate it for :class:`~logbus.record.LogRecord` objects; each is acked
    when the loop asks for the next one. Every message is a record
    (:func:`~logbus.record.decode`: plain text, other JSON and bytes that are
    not UTF-8 included), and each carries the routing key it was published
    with in ``record.key``.
    """

    #: The replay's state when subscribed with history (``since``, ...), else None.
    history: History | None

    def __init__(
        self,
        url: str | None = None,
        *,
        keys: Sequence[str] = (),
        severities: Sequence[str | int | Severity] = (),
        exact: Sequence[str] = (),
        headers: Mapping[str, Any] | None = None,
        match: Literal["all", "any"] = "all",
        all: bool = False,
        queue: str | None = None,
        durable: bool = False,
        prefetch: int | None = None,
        settings: Settings | None = None,
        topology: Topology | None = None,
        transport: Transport | None = None,
        since: Moment | None = None,
        from_start: bool = False,
        offset: int | None = None,
        until: Moment | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.topology = topology or self.settings.topology()
        self.bindings = bindings_for(self.topology, keys, severities, exact, headers, match, all)
        if not self.bindings:
            raise ConfigError(
                "nothing to subscribe to: give binding keys, severities, exact keys, "
                "headers, or all=True"
            )
        replay = _replay(self, queue, since, from_start, offset, until)
        self.url = url or (transport.url if transport else self.settings.url)
        self._owns_transport = transport is None
        self.transport = transport or connect(self.url, settings=self.settings)
        self._pending: Delivery | None = None
        declare(self.transport, self.topology)
        if replay is not None:
            stream, arguments = replay
            self._consumer: Consumer = self.transport.consume(
                stream, prefetch=prefetch or self.settings.prefetch, arguments=arguments
            )
            return
        temporary = queue is None
        name = self.transport.declare_queue(
            queue or "",
            durable=durable and not temporary,
            exclusive=temporary,
            auto_delete=temporary,
        ).name
        for exchange, key, arguments in self.bindings:
            self.transport.bind_queue(name, exchange, key, arguments)
        self._consumer = self.transport.consume(name, prefetch=prefetch or self.settings.prefetch)

    @property
    def queue(self) -> str:
        """The subscription's queue: a temporary one is named anew by each reconnect."""
        return self._consumer.queue

    def get(self, timeout: float | None = None) -> LogRecord | None:
        """The next record, waiting up to ``timeout`` seconds; None when none came, or
        when the broker ended the subscription (its queue was deleted).

        A :class:`~logbus.errors.TransportError` when the subscription could not
        be restored after a reconnect (its queue or a binding could not be
        declared again): it would otherwise receive nothing more.
        """
        self._settle_pending()
        if self.history is not None:
            return self._replayed(self.history, timeout)
        delivery = self._consumer.get(timeout)
        if delivery is None:
            return None
        self._pending = delivery
        return decode(delivery.body, delivery.properties, delivery.routing_key)

    @property
    def ended(self) -> bool:
        """Whether the subscription has ended (the broker cancelled it, e.g. its queue was
        deleted, or it was closed): :meth:`get` returns None at once from then on. It
        tells that None from a wait that timed out."""
        return self._consumer.ended

    def _replayed(self, history: History, timeout: float | None) -> LogRecord | None:
        """The next record of the history that the selectors take (the others are acked)."""
        deadline = None if timeout is None else monotonic() + timeout
        while not history.done:
            left = None if deadline is None else max(0.0, deadline - monotonic())
            delivery = self._consumer.get(history.wait(left))
            if delivery is None:
                if history.ended_waiting() or self._consumer.ended:
                    return None
                if deadline is not None and monotonic() >= deadline:
                    return None
                continue  # a wait capped by ``until`` ended before the stream went quiet
            if (record := history.admit(delivery)) is not None:
                self._pending = delivery
                return record
            delivery.ack()
        return None

    def _settle_pending(self, *, requeue: bool = False) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            if requeue and self.history is None:  # a stream keeps it anyway, and takes acks only
                pending.nack(requeue=True)
            else:
                pending.ack()

    def __iter__(self) -> Iterator[LogRecord]:
        while (record := self.get()) is not None:
            yield record

    def close(self, *, requeue: bool = False) -> None:
        """Ack the last record handed out, stop consuming, and close an owned transport.

        With ``requeue`` the last record goes back to the queue instead (its
        consumer could not use it, e.g. output failed), to be delivered again.
        """
        self._settle_pending(requeue=requeue)
        self._consumer.cancel()
        if self._owns_transport:
            self.transport.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncSubscriber:
    """:class:`Subscriber`'s async twin: ``async for record in sub``, ``await sub.get()``.

    Takes the same binding options and builds the same bindings. The queue is
    declared, bound and consumed on ``await sub.start()`` (or ``async with``,
    or the first ``get``); without ``transport`` an aio-pika transport is
    opened for ``url``. Each record is acked when the next one is asked for.
    The aio-pika transport resumes the subscription after a connection drop,
    its temporary queue and bindings included; records that were in flight
    are redelivered. One that cannot be restored raises its error from ``get``.
    """

    #: The replay's state when subscribed with history (``since``, ...), else None.
    history: History | None

    def __init__(
        self,
        url: str | None = None,
        *,
        keys: Sequence[str] = (),
        severities: Sequence[str | int | Severity] = (),
        exact: Sequence[str] = (),
        headers: Mapping[str, Any] | None = None,
        match: Literal["all", "any"] = "all",
        all: bool = False,
        queue: str | None = None,
        durable: bool = False,
        prefetch: int | None = None,
        settings: Settings | None = None,
        topology: Topology | None = None,
        transport: AsyncTransport | None = None,
        since: Moment | None = None,
        from_start: bool = False,
        offset: int | None = None,
        until: Moment | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.topology = topology or self.settings.topology()
        self.bindings = bindings_for(self.topology, keys, severities, exact, headers, match, all)
        if not self.bindings:
            raise ConfigError(
                "nothing to subscribe to: give binding keys, severities, exact keys, "
                "headers, or all=True"
            )
        self._replay = _replay(self, queue, since, from_start, offset, until)
        self.url = url or (transport.url if transport else self.settings.url)
        #: The subscription's queue name, once started.
        self.queue: str | None = None
        self._transport = transport
        self._owns_transport = transport is None
        self._queue = queue
        self._durable = durable
        self._prefetch = prefetch or self.settings.prefetch
        self._consumer: AsyncConsumer | None = None
        self._pending: Delivery | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> AsyncSubscriber:
        """Connect, declare the topology, declare and bind the queue, start consuming."""
        async with self._lock:
            if self._consumer is not None:
                return self
            if self._transport is None:
                from logbus.transports.aio import connect_async

                self._transport = await connect_async(self.url, settings=self.settings)
            transport = self._transport
            await declare_async(transport, self.topology)
            if self._replay is not None:
                stream, arguments = self._replay
                self._consumer = await transport.consume(
                    stream, prefetch=self._prefetch, arguments=arguments
                )
                self.queue = stream
                return self
            temporary = self._queue is None
            info = await transport.declare_queue(
                self._queue or "",
                durable=self._durable and not temporary,
                exclusive=temporary,
                auto_delete=temporary,
            )
            for exchange, key, arguments in self.bindings:
                await transport.bind_queue(info.name, exchange, key, arguments)
            self._consumer = await transport.consume(info.name, prefetch=self._prefetch)
            self.queue = info.name
        return self

    @property
    def transport(self) -> AsyncTransport:
        """The transport once started; before that a clear error, not ``AttributeError``."""
        if self._transport is None:
            raise TransportError("the subscriber is not started yet: await subscriber.start()")
        return self._transport

    async def get(self, timeout: float | None = None) -> LogRecord | None:
        """The next record, waiting up to ``timeout`` seconds; None when none came."""
        await self.start()
        assert self._consumer is not None
        self._settle_pending()
        history = self.history
        deadline = None if timeout is None else monotonic() + timeout
        while history is None or not history.done:
            left = None if deadline is None else max(0.0, deadline - monotonic())
            delivery = await self._consumer.get(left if history is None else history.wait(left))
            if delivery is None:
                if history is not None:
                    history.ended_waiting()
                return None
            if history is None:
                self._pending = delivery
                return decode(delivery.body, delivery.properties, delivery.routing_key)
            if (record := history.admit(delivery)) is not None:
                self._pending = delivery
                return record
            self._settle(delivery)
        return None

    def _settle_pending(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._settle(pending)

    def _settle(self, delivery: Delivery) -> None:
        try:
            delivery.ack()
        except ConnectionLost as exc:  # the broker requeued it with the old channel
            log.info("settlement lost with the connection", queue=self.queue, reason=str(exc))

    def __aiter__(self) -> AsyncSubscriber:
        return self

    async def __anext__(self) -> LogRecord:
        record = await self.get()
        if record is None:
            raise StopAsyncIteration
        return record

    async def aclose(self) -> None:
        """Ack the last record handed out, stop consuming, and close an owned transport."""
        self._settle_pending()
        if self._consumer is not None:
            await self._consumer.cancel()
        if self._owns_transport and self._transport is not None:
            transport, self._transport = self._transport, None
            await transport.close()

    close = aclose

    async def __aenter__(self) -> AsyncSubscriber:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
