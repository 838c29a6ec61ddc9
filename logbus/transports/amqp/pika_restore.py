"""Declaring again, on a new connection, what the pika transport declared on the old one.

:class:`Restore` keeps the record (:class:`~logbus.transports.amqp.pika_topology.Declared`)
and the names queues have now: a server-named queue comes back under a new name
after a reconnect, and its bindings and consumers follow it (``aliases``). After
reconnecting, the core runs :meth:`Restore.ops` on its declaration channel before
anything else. A queue the broker still holds for the old connection (an exclusive
one, ``RESOURCE_LOCKED``) is waited for by reconnecting a few times; anything else
that cannot be declared again ends every consumer with the error, for its user to
report, rather than consume less than was asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from logbus._log import get_logger
from logbus.errors import LogbusError, NotFound, PreconditionFailed, ResourceLocked
from logbus.transports.amqp.pika_consume import AmqpConsumer, restore_error
from logbus.transports.amqp.pika_slot import ChannelSlot, Op
from logbus.transports.amqp.pika_topology import Declaration, Declared

__all__ = ["Restore", "RestoreHost"]

log = get_logger("logbus.transports.amqp")

# Reconnects to wait for the broker to release an exclusive queue of the old connection.
_LOCKED_RETRIES = 5


class RestoreHost(Protocol):
    """The connection's side of restoring: whether it is closing, and how to start over."""

    @property
    def closing(self) -> bool: ...

    def restart(self, why: str) -> None: ...


class Restore:
    """What one transport declared, the names its queues have now, and declaring it again."""

    def __init__(
        self, host: RestoreHost, slot: ChannelSlot, consumers: dict[str, AmqpConsumer]
    ) -> None:
        self.declared = Declared()
        self.aliases: dict[str, str] = {}
        self._host = host
        self._slot = slot
        self._consumers = consumers
        self._locked: dict[tuple[Any, ...], int] = {}

    def resolve(self, queue: str) -> str:
        """A queue's current name (a server-named queue is renamed by a reconnect)."""
        return self.aliases.get(queue, queue)

    def ops(self) -> list[Op]:
        """The steps that declare everything again, in the order it was declared."""
        ops = []
        for declaration in self.declared:
            if declaration.server_named and not declaration.options.get("exclusive"):
                # It may have survived: look for it before asking for a new one.
                ops.append(
                    Op(
                        f"look for queue {declaration.name!r}",
                        partial(_passive_queue, declaration.name),
                        internal=True,
                        on_error=partial(self._server_named_gone, declaration),
                    )
                )
            else:
                ops.append(self._op(declaration))
        return ops

    def finished(self) -> None:
        """Everything is back: a later lock is a new story."""
        self._locked.clear()

    def _op(self, declaration: Declaration) -> Op:
        def run(channel: Any, done: Callable[[Any], None]) -> None:
            # A step before this one may have renamed its queue (a server-named queue
            # comes back under a new name): bind and declare what the queue is called now.
            current = declaration.following(self.resolve)

            def declared(method: Any) -> None:
                if current.server_named and method.queue != current.name:
                    self._rename(current.name, method.queue)
                done(None)

            current.run(channel, declared)

        def failed(error: LogbusError) -> None:
            self._failed(declaration.following(self.resolve), error)

        return Op(f"declare {declaration.describe()} again", run, internal=True, on_error=failed)

    def _server_named_gone(self, declaration: Declaration, error: LogbusError) -> None:
        if isinstance(error, NotFound):
            self._slot.push_front([self._op(declaration)])
        else:
            self._failed(declaration, error)

    def _failed(self, declaration: Declaration, error: LogbusError) -> None:
        if self._host.closing:
            return
        if isinstance(error, ResourceLocked):
            tries = self._locked.get(declaration.key, 0) + 1
            self._locked[declaration.key] = tries
            if tries <= _LOCKED_RETRIES:
                # The broker has not yet noticed the old connection is gone.
                self._host.restart(f"{declaration.describe()} is still held by the old connection")
                return
        log.error("amqp.redeclare_failed", entity=declaration.describe(), error=str(error))
        if isinstance(error, NotFound | PreconditionFailed | ResourceLocked):
            self.declared.discard(declaration)
        # What the consumers were set up on is not all back: going on would receive less
        # than was asked for, or nothing. Each ends with the error, for its user to report.
        lost = restore_error(
            error,
            f"{declaration.describe()} could not be declared again after a reconnect, so "
            "consuming stopped",
        )
        for consumer in list(self._consumers.values()):
            consumer.io_end(lost)

    def _rename(self, old: str, new: str) -> None:
        log.warning("amqp.queue_renamed", old=old, new=new, why="server-named queue redeclared")
        self.declared.rename_queue(old, new)
        for alias, target in list(self.aliases.items()):
            if target == old:
                self.aliases[alias] = new
        self.aliases[old] = new
        for consumer in self._consumers.values():
            if consumer.queue == old:
                consumer.queue = new


def _passive_queue(name: str, channel: Any, done: Callable[[Any], None]) -> None:
    channel.queue_declare(name, passive=True, callback=lambda _frame: done(None))
