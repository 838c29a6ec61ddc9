"""``Subscriber``: a queue bound by keys, severities, exact keys or headers; records out.

>>> from logbus import Subscriber
>>> for record in Subscriber(url="memory://", keys=["kern.*", "*.critical"]):  # doctest: +SKIP
...     print(record.routing_key, record.message)

By default the queue is temporary (server-named, exclusive, auto-delete): it
lives as long as the subscriber. ``queue=NAME, durable=True`` makes a named
subscription that keeps records while nobody listens.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import structlog

from logbus.errors import ConfigError, DecodeError
from logbus.record import LogRecord, Severity, decode
from logbus.settings import Settings
from logbus.topology import Topology, declare
from logbus.transports import Consumer, Delivery, Transport, connect

__all__ = ["Subscriber"]

log = structlog.get_logger("logbus.subscriber")


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


class Subscriber:
    """Consumes records routed by binding keys, severities, exact keys, headers or all.

    Iterate it for :class:`~logbus.record.LogRecord` objects; each is acked
    when the loop asks for the next one. A message that is not a record is
    rejected (dead-lettered where the queue has a DLX) and counted in
    :attr:`undecodable`.
    """

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
    ) -> None:
        self.settings = settings or Settings()
        self.topology = topology or self.settings.topology()
        self.bindings = self._bindings(keys, severities, exact, headers, match, all)
        if not self.bindings:
            raise ConfigError(
                "nothing to subscribe to: give binding keys, severities, exact keys, "
                "headers, or all=True"
            )
        self.url = url or (transport.url if transport else self.settings.url)
        self._owns_transport = transport is None
        self.transport = transport or connect(self.url, settings=self.settings)
        self.undecodable = 0
        declare(self.transport, self.topology)
        temporary = queue is None
        self.queue = self.transport.declare_queue(
            queue or "",
            durable=durable and not temporary,
            exclusive=temporary,
            auto_delete=temporary,
        ).name
        for exchange, key, arguments in self.bindings:
            self.transport.bind_queue(self.queue, exchange, key, arguments)
        self._consumer: Consumer = self.transport.consume(
            self.queue, prefetch=prefetch or self.settings.prefetch
        )
        self._pending: Delivery | None = None

    def _bindings(
        self,
        keys: Sequence[str],
        severities: Sequence[str | int | Severity],
        exact: Sequence[str],
        headers: Mapping[str, Any] | None,
        match: str,
        everything: bool,
    ) -> list[tuple[str, str, dict[str, Any]]]:
        out: list[tuple[str, str, dict[str, Any]]] = []
        if keys or severities:
            topic = exchange_of_type(self.topology, "topic")
            out += [(topic, key, {}) for key in keys]
            out += [(topic, f"*.{Severity.parse(s)}", {}) for s in severities]
        if exact:
            direct = exchange_of_type(self.topology, "direct")
            out += [(direct, key, {}) for key in exact]
        if headers:
            if match not in ("all", "any"):
                raise ConfigError(f"match must be 'all' or 'any', not {match!r}")
            arguments = {"x-match": match, **{str(k): v for k, v in headers.items()}}
            out.append((exchange_of_type(self.topology, "headers"), "", arguments))
        if everything:
            out.append((exchange_of_type(self.topology, "fanout"), "", {}))
        return out

    def get(self, timeout: float | None = None) -> LogRecord | None:
        """The next record, waiting up to ``timeout`` seconds; None when none came."""
        self._settle_pending()
        while (delivery := self._consumer.get(timeout)) is not None:
            try:
                record = decode(delivery.body, delivery.properties, delivery.routing_key)
            except DecodeError as exc:
                self.undecodable += 1
                log.warning("undecodable", queue=self.queue, reason=str(exc))
                delivery.reject(requeue=False)
                continue
            self._pending = delivery
            return record
        return None

    def _settle_pending(self) -> None:
        if self._pending is not None:
            self._pending.ack()
            self._pending = None

    def __iter__(self) -> Iterator[LogRecord]:
        while (record := self.get()) is not None:
            yield record

    def close(self) -> None:
        """Ack the last record handed out, stop consuming, and close an owned transport."""
        self._settle_pending()
        self._consumer.cancel()
        if self._owns_transport:
            self.transport.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
