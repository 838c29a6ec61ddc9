"""``Emitter``: build log records and publish them, confirmed, to the topology's targets.

>>> from logbus import Emitter
>>> with Emitter(url="memory://") as emitter:          # doctest: +SKIP
...     emitter.emit("kern.critical", "disk /dev/sda1 failed", host="web1")

``emit`` returns once the transport confirmed every target took the record;
an unroutable or refused record raises instead of vanishing. ``emit_many``
pipelines a batch's confirms. :class:`AsyncEmitter` is the async twin, on the
aio-pika transport (``async with AsyncEmitter(url) as emitter: await emitter.emit(...)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from logbus.errors import TransportError
from logbus.message import Message
from logbus.record import LogRecord
from logbus.settings import Settings
from logbus.topology import Topology, declare
from logbus.transports import Transport, connect
from logbus.transports.base import AsyncTransport

__all__ = ["AsyncEmitter", "Emitter", "declare_async"]

_RECORD_FIELDS = frozenset(LogRecord.model_fields) - {"facility", "severity", "message"}


class Emitter:
    """Publishes records to every emit target of a topology, with publisher confirms.

    ``url`` defaults to ``settings.url`` (``LOGBUS_URL``). The topology (default:
    ``settings.topology()``) is declared on first use, so the work queue exists
    before the first record is sent. Pass ``transport`` to share a connection.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        topology: Topology | None = None,
        transport: Transport | None = None,
        declare_topology: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        self.url = url or (transport.url if transport else self.settings.url)
        self.topology = topology or self.settings.topology()
        self._transport = transport
        self._owns_transport = transport is None
        self._declare = declare_topology
        self._declared = False

    @property
    def transport(self) -> Transport:
        """The connected transport (connecting and declaring the topology on first use)."""
        if self._transport is None:
            self._transport = connect(self.url, settings=self.settings)
        if self._declare and not self._declared:
            declare(self._transport, self.topology)
            self._declared = True
        return self._transport

    def record(self, key: str, message: str, **record_fields: Any) -> LogRecord:
        """Build a record for ``key`` (``facility.severity``); unknown keywords go to ``fields``."""
        known = {k: v for k, v in record_fields.items() if k in _RECORD_FIELDS}
        extra = {k: v for k, v in record_fields.items() if k not in _RECORD_FIELDS}
        if extra:
            known["fields"] = {**extra, **dict(known.get("fields") or {})}
        return LogRecord.from_key(key, message, **known)

    def messages(self, record: LogRecord) -> Iterator[Message]:
        """The messages one record becomes: one per emit target."""
        body = record.to_bytes()
        properties = record.to_properties()
        severity = str(record.severity)
        for target in self.topology.emit:
            key = target.render(record.facility, severity, record.host, record.app)
            yield Message(body, properties, target.exchange, key)

    def emit(self, key: str, message: str, **record_fields: Any) -> LogRecord:
        """Publish one record and wait for the confirm; returns the record sent."""
        record = self.record(key, message, **record_fields)
        self.emit_record(record)
        return record

    def emit_record(self, record: LogRecord) -> None:
        """Publish an already built record and wait for the confirm."""
        self.transport.publish_many(self.messages(record))

    def emit_many(self, records: Iterable[LogRecord | tuple[str, str]]) -> int:
        """Publish a batch with pipelined confirms; returns how many records were sent.

        Raises :class:`~logbus.errors.NotConfirmed` (with ``unconfirmed``) when
        any of them was not confirmed.
        """
        count = 0

        def batch() -> Iterator[Message]:
            nonlocal count
            for item in records:
                record = item if isinstance(item, LogRecord) else self.record(*item)
                count += 1
                yield from self.messages(record)

        self.transport.publish_many(batch())
        return count

    def close(self) -> None:
        """Close the transport if this emitter opened it."""
        if self._transport is not None and self._owns_transport:
            self._transport.close()
            self._transport = None

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


async def declare_async(transport: AsyncTransport, topology: Topology) -> None:
    """:func:`logbus.topology.declare` for an async transport: every exchange, queue, binding.

    Idempotent; an entity that exists with other properties raises ``PreconditionFailed``.
    """
    for e in topology.exchanges:
        await transport.declare_exchange(e.name, e.type, **e.model_dump(exclude={"name", "type"}))
    for q in topology.queues:
        flags = q.model_dump(include={"durable", "exclusive", "auto_delete"})
        await transport.declare_queue(q.name, arguments=q.amqp_arguments(), **flags)
    for b in topology.bindings:
        bind = transport.bind_exchange if b.destination_type == "exchange" else transport.bind_queue
        await bind(b.destination, b.source, b.routing_key, b.arguments)


class AsyncEmitter:
    """:class:`Emitter`'s async twin: the same methods as coroutines, ``aclose``/``async with``.

    Without ``transport`` it opens an aio-pika transport for ``url`` (default
    ``settings.url``; amqp:// or amqps://, comma-separated for failover) on
    first use, and declares the topology then. ``emit_many`` keeps many
    publishes in flight and waits for all their confirms.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        topology: Topology | None = None,
        transport: AsyncTransport | None = None,
        declare_topology: bool = True,
    ) -> None:
        self.settings = settings or Settings()
        self.url = url or (transport.url if transport else self.settings.url)
        self.topology = topology or self.settings.topology()
        self._transport = transport
        self._owns_transport = transport is None
        self._declare = declare_topology
        self._declared = False
        self._lock = asyncio.Lock()
        # Records and their messages are built exactly as the sync Emitter builds them;
        # this one never connects (no transport is ever asked of it).
        self._builder = Emitter(self.url, settings=self.settings, topology=self.topology)

    async def connect(self) -> AsyncTransport:
        """The connected transport (connecting and declaring the topology on first use)."""
        async with self._lock:
            if self._transport is None:
                from logbus.transports.aio import connect_async

                self._transport = await connect_async(self.url, settings=self.settings)
            if self._declare and not self._declared:
                await declare_async(self._transport, self.topology)
                self._declared = True
            return self._transport

    @property
    def transport(self) -> AsyncTransport:
        """The transport once connected; before that a clear error, not ``AttributeError``."""
        if self._transport is None:
            raise TransportError("the emitter is not connected yet: await emitter.connect() first")
        return self._transport

    def record(self, key: str, message: str, **record_fields: Any) -> LogRecord:
        """Build a record for ``key`` (``facility.severity``); unknown keywords go to ``fields``."""
        return self._builder.record(key, message, **record_fields)

    def messages(self, record: LogRecord) -> Iterator[Message]:
        """The messages one record becomes: one per emit target."""
        return self._builder.messages(record)

    async def emit(self, key: str, message: str, **record_fields: Any) -> LogRecord:
        """Publish one record and wait for the confirm; returns the record sent."""
        record = self.record(key, message, **record_fields)
        await self.emit_record(record)
        return record

    async def emit_record(self, record: LogRecord) -> None:
        """Publish an already built record and wait for the confirm."""
        transport = await self.connect()
        await transport.publish_many(self.messages(record))

    async def emit_many(self, records: Iterable[LogRecord | tuple[str, str]]) -> int:
        """Publish a batch with pipelined confirms; returns how many records were sent.

        Raises :class:`~logbus.errors.NotConfirmed` (with ``unconfirmed``) when
        any of them was not confirmed.
        """
        transport = await self.connect()
        count = 0

        def batch() -> Iterator[Message]:
            nonlocal count
            for item in records:
                record = item if isinstance(item, LogRecord) else self.record(*item)
                count += 1
                yield from self.messages(record)

        await transport.publish_many(batch())
        return count

    async def aclose(self) -> None:
        """Close the transport if this emitter opened it."""
        if self._transport is not None and self._owns_transport:
            transport, self._transport = self._transport, None
            self._declared = False
            await transport.close()

    close = aclose

    async def __aenter__(self) -> AsyncEmitter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
