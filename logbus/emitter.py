"""``Emitter``: build log records and publish them, confirmed, to the topology's targets.

>>> from logbus import Emitter
>>> with Emitter(url="memory://") as emitter:          # doctest: +SKIP
...     emitter.emit("kern.critical", "disk /dev/sda1 failed", host="web1")

``emit`` returns once the transport confirmed every target took the record;
an unroutable or refused record raises instead of vanishing, unless its target
says ``mandatory = false``. With several targets each is published and confirmed
on its own, so that :class:`PartlyRouted` can say which took the record and which
did not; ``Emitter(targets=pick_targets(...))`` sends again to those only.
``emit_many`` pipelines a batch's confirms. :class:`AsyncEmitter` is the async twin, on the
aio-pika transport (``async with AsyncEmitter(url) as emitter: await emitter.emit(...)``).

:class:`LineBatch` turns lines of text or JSON (a file, stdin) into records, a
chunk at a time, checking each chunk whole before any of it is handed on;
:func:`~logbus.topology.reachable` (re-exported here) is the part of a topology
one publish can reach, which is what must exist before publishing so that no
record is lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

from logbus._targets import (
    PartlyRouted,
    check_routed,
    chunks,
    encode,
    message_for,
    pick_targets,
)
from logbus.errors import ConfigError, InputError, NotConfirmed, RecordError, TransportError
from logbus.message import Message
from logbus.record import FIELDS, LogRecord, parse_routing_key
from logbus.settings import Settings
from logbus.topology import EmitTarget, Topology, declare, no_emit_targets, reachable
from logbus.transports import Transport, connect
from logbus.transports.base import AsyncTransport

__all__ = [
    "AsyncEmitter",
    "Emitter",
    "LineBatch",
    "PartlyRouted",
    "declare_async",
    "pick_targets",
    "reachable",
]

_KNOWN_FIELDS = frozenset(FIELDS)
_RECORD_FIELDS = _KNOWN_FIELDS - {"facility", "severity", "message"}


class Emitter:
    """Publishes records to every emit target of a topology, with publisher confirms.

    ``url`` defaults to ``settings.url`` (``LOGBUS_URL``). The topology (default:
    ``settings.topology()``) is declared on first use, so the work queue exists
    before the first record is sent. Pass ``transport`` to share a connection,
    and ``targets`` to publish somewhere else than the topology's emit targets
    (the topology is then only what gets declared first).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        topology: Topology | None = None,
        transport: Transport | None = None,
        declare_topology: bool = True,
        targets: Sequence[EmitTarget] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.url = url or (transport.url if transport else self.settings.url)
        self.topology = topology or self.settings.topology()
        #: Where each record is published: one message per target.
        self.targets: tuple[EmitTarget, ...] = (
            self.topology.emit if targets is None else tuple(targets)
        )
        if not self.targets:  # nothing would be published, and emit() would say it was
            config = self.settings.config if topology is None and targets is None else None
            raise ConfigError(no_emit_targets(config, api=True))
        labels = [t.label for t in self.targets]
        if len(set(labels)) < len(labels):  # PartlyRouted could not tell them apart
            raise ConfigError(f"emit targets share a name ({', '.join(labels)}): name each one")
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
        """The messages one record becomes: one per emit target.

        A record no RabbitMQ would take raises :class:`~logbus.errors.RecordTooLarge`
        before anything is sent (a smaller configured limit is learnt from the broker).
        """
        encoded = encode(record)
        for target in self.targets:
            yield message_for(encoded, target)

    def emit(self, key: str, message: str, **record_fields: Any) -> LogRecord:
        """Publish one record and wait for the confirm; returns the record sent."""
        record = self.record(key, message, **record_fields)
        self.emit_record(record)
        return record

    def emit_record(self, record: LogRecord) -> None:
        """Publish an already built record and wait for the confirm.

        Raises :class:`PartlyRouted` when some of several targets did not take it.
        """
        self.emit_many((record,))

    def emit_many(self, records: Iterable[LogRecord | tuple[str, str]]) -> int:
        """Publish a batch with pipelined confirms; returns how many records were sent.

        Raises :class:`~logbus.errors.NotConfirmed` (with ``unconfirmed``) when
        any of them was not confirmed; with several targets, :class:`PartlyRouted`,
        which names the targets that took the batch (chunks of 5,000 records; the
        ones before it went everywhere).
        """
        built = (item if isinstance(item, LogRecord) else self.record(*item) for item in records)
        transport = self.transport
        if len(self.targets) == 1:  # one stream of publishes: confirms pipelined throughout
            [target] = self.targets
            count = 0

            def batch() -> Iterator[Message]:
                nonlocal count
                for record in built:
                    count += 1
                    yield message_for(encode(record), target)

            transport.publish_many(batch(), mandatory=target.mandatory)
            return count
        sent = 0
        for chunk in chunks(built):
            errors: dict[EmitTarget, NotConfirmed] = {}
            for target in self.targets:
                try:
                    transport.publish_many(
                        (message_for(e, target) for e in chunk), mandatory=target.mandatory
                    )
                except NotConfirmed as exc:
                    errors[target] = exc
            check_routed(self.targets, errors, len(chunk), sent)
            sent += len(chunk)
        return sent

    def emit_stream(
        self,
        take: Callable[[int], tuple[list[LogRecord], bool]],
        progress: Callable[[int], None],
    ) -> int:
        """``emit_many`` without its end-of-batch wait, for a producer that keeps going (the
        ingest gateway): ``take(room)`` gives up to ``room`` ready records and whether more
        may follow; ``progress(n)`` is told (maybe on the I/O thread) as the next ``n`` are
        confirmed, in order. Streamed on the pika transport (its one publishing engine);
        elsewhere each take is a batch. Raises as ``emit_many``; returns how many were taken.
        """
        from logbus._emit_stream import emit_stream

        return emit_stream(self, take, progress)

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
        await transport.declare_exchange(
            e.name,
            e.type,
            durable=e.durable,
            auto_delete=e.auto_delete,
            internal=e.internal,
            arguments=e.arguments,
        )
    for q in topology.queues:
        await transport.declare_queue(
            q.name,
            durable=q.durable,
            exclusive=q.exclusive,
            auto_delete=q.auto_delete,
            arguments=q.amqp_arguments(),
        )
    for b in topology.bindings:
        bind = transport.bind_exchange if b.destination_type == "exchange" else transport.bind_queue
        await bind(b.destination, b.source, b.routing_key, b.arguments)


class AsyncEmitter:
    """:class:`Emitter`'s async twin: the same methods as coroutines, ``aclose``/``async with``.

    Without ``transport`` it opens an aio-pika transport for ``url`` (default
    ``settings.url``; amqp:// or amqps://, comma-separated for failover) on
    first use, and declares the topology then. ``emit_many`` keeps many
    publishes in flight and waits for all their confirms; the targets of a record
    are published at the same time, each confirmed on its own (``targets`` as
    :class:`Emitter` takes them; :class:`PartlyRouted` as it raises it).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        topology: Topology | None = None,
        transport: AsyncTransport | None = None,
        declare_topology: bool = True,
        targets: Sequence[EmitTarget] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.url = url or (transport.url if transport else self.settings.url)
        self.topology = topology or self.settings.topology()
        self._transport = transport
        self._owns_transport = transport is None
        self._declare = declare_topology
        self._declared = False
        import asyncio  # here, so that the sync path (logbus emit) never imports it

        self._lock = asyncio.Lock()
        # Records and their messages are built exactly as the sync Emitter builds them;
        # this one never connects (no transport is ever asked of it).
        self._builder = Emitter(
            self.url, settings=self.settings, topology=self.topology, targets=targets
        )

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

    @property
    def targets(self) -> tuple[EmitTarget, ...]:
        """Where each record is published: one message per target."""
        return self._builder.targets

    async def emit_record(self, record: LogRecord) -> None:
        """Publish an already built record and wait for the confirm.

        Raises :class:`PartlyRouted` when some of several targets did not take it.
        """
        await self.emit_many((record,))

    async def emit_many(self, records: Iterable[LogRecord | tuple[str, str]]) -> int:
        """Publish a batch with pipelined confirms; returns how many records were sent.

        Raises :class:`~logbus.errors.NotConfirmed` (with ``unconfirmed``) when
        any of them was not confirmed; with several targets, :class:`PartlyRouted`
        as :meth:`Emitter.emit_many` does. The targets of a chunk are published
        at the same time, each with its own confirms.
        """
        import asyncio

        transport = await self.connect()
        built = (item if isinstance(item, LogRecord) else self.record(*item) for item in records)
        targets = self.targets
        sent = 0
        for chunk in chunks(built):
            outcomes = await asyncio.gather(
                *(
                    transport.publish_many(
                        [message_for(e, t) for e in chunk], mandatory=t.mandatory
                    )
                    for t in targets
                ),
                return_exceptions=True,
            )
            errors: dict[EmitTarget, NotConfirmed] = {}
            for target, outcome in zip(targets, outcomes, strict=True):
                if isinstance(outcome, NotConfirmed):
                    errors[target] = outcome
                elif isinstance(outcome, BaseException):
                    raise outcome
            if len(targets) == 1 and errors:
                raise errors[targets[0]]
            check_routed(targets, errors, len(chunk), sent)
            sent += len(chunk)
        return sent

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


class LineBatch:
    """Records from lines (of a file, of stdin), each chunk checked whole before it is sent.

    Each line is one record. A plain line is the message, under routing key
    ``key``. With ``json_lines`` a line is a JSON object carrying the record: it
    needs ``message``; ``facility`` and ``severity`` default to ``key``'s; ``id``,
    ``ts``, ``host``, ``app``, ``pid`` and ``fields`` are taken as given; other
    keys go into ``fields``. ``defaults`` (``host``, ``app``, ``pid``, ``fields``)
    fill what a line does not say; a line's own fields win over default fields.
    Blank lines are skipped, but counted, so line numbers are the file's.

    Iterating reads ``chunk`` lines at a time and yields their records only once
    every line of the chunk made a record. At the first bad line it stops
    yielding and :attr:`error` says ``<source>:<line>: what is wrong``: a batch
    of up to ``chunk`` lines is all or nothing, and in a longer one nothing from
    the bad line's chunk on is handed out (:attr:`unsent_from` is its first
    line). :attr:`records` counts what was. Iterate it once.
    """

    def __init__(
        self,
        lines: Iterable[bytes | str],
        key: str | None = None,
        *,
        json_lines: bool = False,
        source: str = "<stdin>",
        chunk: int = 5000,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        if key is None and not json_lines:
            raise InputError("plain lines need a routing key (<facility>.<severity>)")
        self._key = None if key is None else parse_routing_key(key)
        self._lines = lines
        self._json = json_lines
        self._chunk = max(1, chunk)
        self.source = source
        unknown = set(defaults or {}) - _RECORD_FIELDS
        if unknown:
            raise InputError(f"not record defaults: {', '.join(sorted(unknown))}")
        self._defaults = dict(defaults or {})
        self._fields: dict[str, Any] = dict(self._defaults.pop("fields", None) or {})
        #: Records handed out so far.
        self.records = 0
        #: Lines read so far.
        self.lines = 0
        #: The first bad line's error, once iteration met one.
        self.error: InputError | None = None
        #: Then, the first line whose record was not handed out (its chunk's first line).
        self.unsent_from: int | None = None

    def __iter__(self) -> Iterator[LogRecord]:
        numbered = enumerate(self._lines, 1)
        while self.error is None:
            chunk: list[LogRecord] = []
            first = self.lines + 1
            read = 0
            for number, line in islice(numbered, self._chunk):
                read += 1
                self.lines = number
                try:
                    record = self._record(line)
                except InputError as exc:
                    self.error = InputError(f"{self.source}:{number}: {exc}")
                    self.unsent_from = first
                    return
                if record is not None:
                    chunk.append(record)
            for record in chunk:
                self.records += 1
                yield record
            if read < self._chunk:
                return  # the input ended

    def _record(self, line: bytes | str) -> LogRecord | None:
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"not valid UTF-8 (byte {exc.start + 1}: {exc.reason})") from None
        if self.lines == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark some editors write
        text = line.rstrip("\r\n")
        if not text.strip():
            return None
        if self._json:
            return self._json_record(text)
        assert self._key is not None
        facility, severity = self._key
        try:
            if self._fields:
                return LogRecord(
                    facility=facility,
                    severity=severity,
                    message=text,
                    fields=self._fields,
                    **self._defaults,
                )
            return LogRecord(facility=facility, severity=severity, message=text, **self._defaults)
        except RecordError as exc:
            raise InputError(str(exc)) from None

    def _json_record(self, text: str) -> LogRecord:
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InputError(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"a JSON line must be an object, not {type(data).__name__}")
        if "message" not in data:
            raise InputError("the JSON object has no 'message'")
        own_fields = data.get("fields", {})
        if not isinstance(own_fields, dict):
            raise InputError(f"'fields' must be an object, not {type(own_fields).__name__}")
        values = {**self._defaults, **{k: v for k, v in data.items() if k in _KNOWN_FIELDS}}
        values["fields"] = {
            **self._fields,
            **{k: v for k, v in data.items() if k not in _KNOWN_FIELDS},
            **own_fields,
        }
        if "facility" not in values or "severity" not in values:
            if self._key is None:
                raise InputError(
                    "the JSON object has no 'facility' and 'severity', and no routing key "
                    "was given for them"
                )
            values.setdefault("facility", self._key[0])
            values.setdefault("severity", self._key[1])
        try:
            return LogRecord(**values)
        except RecordError as exc:
            raise InputError(str(exc)) from None
