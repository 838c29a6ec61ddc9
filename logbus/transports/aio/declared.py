"""What an aio transport declared, kept to declare it again after a reconnect.

aio-pika's robust connection reopens channels and restores their prefetch, but
what the broker forgot with the old connection (an exclusive or auto-delete
queue, and, after a broker restart, any non-durable exchange or queue) is the
transport's to declare again. :class:`Declared` keeps the exchanges, exchange
bindings, and the queues this transport declared with their bindings; a consumer
restoring after a reconnect asks it to declare its exchanges (once per
connection) and its queue again. Deleting or unbinding through the transport
removes entries, so the record follows what the transport last asked for.

The declaring itself goes through the transport's own methods, passed in as any
:class:`~logbus.transports.base.AsyncTransport`: this module imports no driver.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from logbus.transports.base import AsyncTransport

__all__ = ["Declared", "QueueSpec"]


@dataclass(frozen=True)
class QueueSpec:
    """How a queue of this transport was declared, to declare it again after a reconnect
    (an exclusive or auto-delete one goes with the connection, any non-durable one with
    a broker restart)."""

    durable: bool
    exclusive: bool
    auto_delete: bool
    arguments: dict[str, Any]


def _binding_key(exchange: str, routing_key: str, arguments: Mapping[str, Any]) -> str:
    return json.dumps([exchange, routing_key, arguments], sort_keys=True, default=str)


class Declared:
    """The exchanges, queues and bindings one aio transport declared."""

    def __init__(self) -> None:
        self.queues: dict[str, QueueSpec] = {}
        self.queue_bindings: dict[str, dict[str, tuple[str, str, dict[str, Any]]]] = {}
        # Exchanges and exchange bindings declared here, declared again after a reconnect
        # before any queue is bound to them (a restarted broker forgets non-durable ones).
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.exchange_bindings: dict[str, tuple[str, str, str, dict[str, Any]]] = {}
        self._restored_on: object = None  # the connection they were last declared again on
        self._lock = asyncio.Lock()

    def exchange(self, name: str, how: dict[str, Any]) -> None:
        """``name`` was declared with ``how`` (its type, flags and arguments)."""
        self.exchanges[name] = how

    def exchange_deleted(self, name: str) -> None:
        """``name`` is gone, and every binding from or to it."""
        self.exchanges.pop(name, None)
        self.exchange_bindings = {
            key: bound
            for key, bound in self.exchange_bindings.items()
            if name not in (bound[0], bound[1])
        }
        for bindings in self.queue_bindings.values():
            for key in [k for k, (exchange, _, _) in bindings.items() if exchange == name]:
                del bindings[key]

    def exchange_bound(
        self, destination: str, source: str, routing_key: str, arguments: dict[str, Any]
    ) -> None:
        key = _binding_key(source, routing_key, arguments) + destination
        self.exchange_bindings[key] = (destination, source, routing_key, arguments)

    def queue(self, name: str, spec: QueueSpec) -> None:
        """``name`` was declared (not passively) as ``spec`` says."""
        self.queues[name] = spec

    def queue_deleted(self, name: str) -> None:
        self.queues.pop(name, None)
        self.queue_bindings.pop(name, None)

    def queue_bound(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any]
    ) -> None:
        """A binding of a queue of ours; a binding of someone else's queue is not kept."""
        if queue in self.queues:
            key = _binding_key(exchange, routing_key, arguments)
            self.queue_bindings.setdefault(queue, {})[key] = (exchange, routing_key, arguments)

    def queue_unbound(
        self, queue: str, exchange: str, routing_key: str, arguments: dict[str, Any]
    ) -> None:
        self.queue_bindings.get(queue, {}).pop(_binding_key(exchange, routing_key, arguments), None)

    async def restore_exchanges(self, transport: AsyncTransport, connection: object) -> None:
        """Declare the exchanges and exchange bindings again through ``transport``, once
        per ``connection`` (every consumer's restore asks; the first does it)."""
        async with self._lock:
            if self._restored_on is connection:
                return
            for name, how in list(self.exchanges.items()):
                await transport.declare_exchange(
                    name, how["type"], **{k: v for k, v in how.items() if k != "type"}
                )
            for destination, source, key, args in list(self.exchange_bindings.values()):
                await transport.bind_exchange(destination, source, key, args)
            self._restored_on = connection

    async def prepare_queue(
        self, transport: AsyncTransport, name: str, *, restoring: bool = False
    ) -> None:
        """Check a queue is there before consuming; after a reconnect, re-create our own."""
        spec = self.queues.get(name)
        if not restoring or spec is None:
            await transport.declare_queue(name, passive=True)
            return
        await transport.declare_queue(
            name,
            durable=spec.durable,
            exclusive=spec.exclusive,
            auto_delete=spec.auto_delete,
            arguments=spec.arguments,
        )
        for exchange, key, arguments in list(self.queue_bindings.get(name, {}).values()):
            await transport.bind_queue(name, exchange, key, arguments)
