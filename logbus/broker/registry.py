"""The broker's registry: its exchanges, queues and bindings, declared, checked and deleted.

:class:`Registry` is the part of :class:`~logbus.broker.core.Broker` that owns
what RabbitMQ calls the vhost's entities. Declarations are checked the way
RabbitMQ checks them: reserved ``amq.*`` names, unknown exchange types,
malformed x-arguments and quorum flags are refused, and a redeclaration must
match what exists or it fails with RabbitMQ's "inequivalent arg" text. Deleting
a queue cancels its consumers and drops its unacked messages; deleting the
last binding of an auto-delete exchange deletes it. Durable entities and
bindings between them are written to the journal as they change.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from logbus.broker.arguments import check_exchange_arguments, check_feature_arguments
from logbus.broker.expiry import touch
from logbus.broker.journal import BindingRecord, Journal, JournaledQueue
from logbus.broker.queues import ExchangeState, QueueState, SessionState, Unacked
from logbus.broker.streams import StreamState, check_declare, is_stream
from logbus.errors import AccessRefused, NotFound, PreconditionFailed, ResourceLocked
from logbus.message import QueueInfo

if TYPE_CHECKING:
    from logbus.broker.settlement import Guard

__all__ = ["EXCHANGE", "EXCHANGE_TYPES", "QUEUE", "Registry"]

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")
#: The queue arguments RabbitMQ 3.10 compares on a redeclare (rabbit_amqqueue's
#: declare_args, checked against a live node); any other may differ freely.
CHECKED_QUEUE_ARGUMENTS = frozenset(
    {
        "x-expires",
        "x-message-ttl",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-dead-letter-strategy",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-max-priority",
        "x-overflow",
        "x-queue-mode",
        "x-single-active-consumer",
        "x-queue-type",
        "x-quorum-initial-group-size",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
        "x-queue-master-locator",
        "x-queue-leader-locator",
        "x-delivery-limit",
    }
)
# What a binding's destination is: the first half of each binding table's targets.
QUEUE = "queue"
EXCHANGE = "exchange"


class Registry:
    """Exchanges, queues and bindings of a broker; a base of :class:`~logbus.broker.core.Broker`.

    Every method is called with the broker's lock held (or takes it through
    ``_guard``); the attributes below are set by ``Broker.__init__``.
    """

    _guard: Guard
    _journal: Journal | None
    _route_cache: dict[tuple[str, str], frozenset[str]]
    _exchanges: dict[str, ExchangeState]
    _queues: dict[str, QueueState]
    _sessions: dict[int, SessionState]
    _schedule_expiry: Callable[[], None]

    # -- exchanges -------------------------------------------------------------

    def declare_exchange(
        self,
        name: str,
        type: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> None:
        """Declare an exchange, or check an existing one is declared the same way."""
        args = dict(arguments or {})
        with self._guard:
            existing = self._exchanges.get(name)
            if passive:
                if existing is None:
                    raise NotFound(f"NOT_FOUND - no exchange '{name}' in vhost '/'")
                return
            if name == "":
                raise AccessRefused(
                    "ACCESS_REFUSED - operation not permitted on the default exchange"
                )
            if name.startswith("amq."):
                raise AccessRefused(
                    f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"
                )
            if type not in EXCHANGE_TYPES:
                raise PreconditionFailed(
                    f"COMMAND_INVALID - unknown exchange type '{type}' for exchange '{name}'"
                )
            check_exchange_arguments(name, args)
            if existing is None:
                self._route_cache.clear()
                exchange = ExchangeState(name, type, durable, auto_delete, internal, args)
                if self._journal is not None and durable:
                    self._journal.exchange_declared(exchange)
                self._exchanges[name] = exchange
                return
            for prop, have, want in (
                ("type", existing.type, type),
                ("durable", existing.durable, durable),
                ("auto_delete", existing.auto_delete, auto_delete),
                ("internal", existing.internal, internal),
                # RabbitMQ compares only this one of an exchange's arguments.
                (
                    "alternate-exchange",
                    existing.arguments.get("alternate-exchange"),
                    args.get("alternate-exchange"),
                ),
            ):
                if have != want:
                    raise _inequivalent(prop, "exchange", name, want, have)

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and every binding to or from it."""
        with self._guard:
            exchange = self._exchanges.get(name)
            if exchange is None:
                return  # RabbitMQ: deleting what does not exist succeeds
            if if_unused and len(exchange.table):
                raise PreconditionFailed(
                    f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use"
                )
            self._delete_exchange(name)

    def _delete_exchange(self, name: str) -> None:
        exchange = self._exchanges.pop(name, None)
        if self._journal is not None and exchange is not None and exchange.durable:
            self._journal.exchange_deleted(name)
        self._route_cache.clear()
        for other in list(self._exchanges.values()):
            if other.table.remove_destination((EXCHANGE, name)):
                self._maybe_auto_delete_exchange(other)

    def _maybe_auto_delete_exchange(self, exchange: ExchangeState) -> None:
        if exchange.auto_delete and not len(exchange.table):
            self._delete_exchange(exchange.name)

    def _exchange(self, name: str) -> ExchangeState:
        exchange = self._exchanges.get(name)
        if exchange is None:
            raise NotFound(f"NOT_FOUND - no exchange '{name}' in vhost '/'")
        return exchange

    # -- queues ----------------------------------------------------------------

    def _declare_queue(
        self,
        session: SessionState,
        name: str,
        *,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any] | None,
        passive: bool,
    ) -> QueueInfo:
        args = dict(arguments or {})
        with self._guard:
            if passive:
                queue = self._queue(name, session)
                touch(queue)
                return self._info(queue)
            if name == "":
                name = "amq.gen-" + secrets.token_urlsafe(16)
            elif name.startswith("amq."):
                raise AccessRefused(
                    f"ACCESS_REFUSED - queue name '{name}' contains reserved prefix 'amq.*'"
                )
            _check_queue_arguments(name, args)
            existing = self._queues.get(name)
            if existing is None:
                _check_replicated(name, args, durable, exclusive, auto_delete)
                check_feature_arguments(name, args)
                owner = session.id if exclusive else None
                if is_stream(args):
                    check_declare(name, args, CHECKED_QUEUE_ARGUMENTS)
                    queue = StreamState(name, args, self._journal)
                    if self._journal is not None:
                        self._journal.queue_declared(queue)
                elif self._journal is not None and durable and not exclusive:
                    queue = JournaledQueue(self._journal, name, auto_delete, args)
                    self._journal.queue_declared(queue)
                else:
                    queue = QueueState(name, durable, owner, auto_delete, args)
                self._queues[name] = queue
                self._schedule_expiry()
                return QueueInfo(name, 0, 0)
            self._check_owner(existing, session)
            if existing.exclusive != exclusive:
                raise ResourceLocked(
                    f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
                    f"'{name}' in vhost '/': the exclusive property value does not match"
                )
            for prop, have, want in (
                ("durable", existing.durable, durable),
                ("auto_delete", existing.auto_delete, auto_delete),
            ):
                if have != want:
                    raise _inequivalent(prop, "queue", name, want, have)
            checked = (set(existing.arguments) | set(args)) & CHECKED_QUEUE_ARGUMENTS
            for key in sorted(checked):
                if existing.arguments.get(key) != args.get(key):
                    raise _inequivalent(
                        key, "queue", name, args.get(key), existing.arguments.get(key)
                    )
            touch(existing)
            return self._info(existing)

    def _queue(self, name: str, session: SessionState | None = None) -> QueueState:
        queue = self._queues.get(name)
        if queue is None:
            raise NotFound(f"NOT_FOUND - no queue '{name}' in vhost '/'")
        if session is not None:
            self._check_owner(queue, session)
        return queue

    @staticmethod
    def _check_owner(queue: QueueState, session: SessionState) -> None:
        if queue.exclusive_owner not in (None, session.id):
            raise ResourceLocked(
                f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue "
                f"'{queue.name}' in vhost '/'"
            )

    def _info(self, queue: QueueState) -> QueueInfo:
        consumers = len(queue.consumers)
        if queue.quorum and queue.single_active:  # waiting consumers are not counted
            consumers = min(consumers, 1)
        if queue.quorum:  # RabbitMQ 3.10 counts each unacked basic.get as a consumer,
            name = queue.name  # and a cancelled consumer until its deliveries are settled
            cancelled: set[tuple[int, str]] = set()
            for session in self._sessions.values():
                for u in session.unacked.values():
                    if u.queue != name:
                        continue
                    if u.consumer_tag is None:
                        consumers += 1
                    elif u.consumer_tag not in session.consumers:
                        cancelled.add((session.id, u.consumer_tag))
            consumers += len(cancelled)
        count = len(queue) if isinstance(queue, StreamState) else len(queue.ready)
        return QueueInfo(queue.name, count, consumers)

    def _delete_queue(self, name: str) -> int:
        queue = self._queues.pop(name)
        if self._journal is not None and _journaled(queue):
            self._journal.queue_deleted(name)
        self._route_cache.clear()
        for consumer in list(queue.consumers):
            state = self._sessions.get(consumer.session_id)
            if state is not None:
                state.consumers.pop(consumer.tag, None)
            if consumer.on_cancel is not None:
                consumer.on_cancel(consumer.tag)
        for state in self._sessions.values():
            # Unacked messages of a deleted queue are gone, but their tags stay valid:
            # RabbitMQ accepts settling them (they lead nowhere now).
            for tag, unacked in state.unacked.items():
                if unacked.queue == name:
                    state.unacked[tag] = Unacked(unacked.entry, "", unacked.consumer_tag)
        for exchange in list(self._exchanges.values()):
            if exchange.table.remove_destination((QUEUE, name)):
                self._maybe_auto_delete_exchange(exchange)
        return len(queue.ready)

    def _cancel(self, state: SessionState, tag: str) -> None:
        consumer = state.consumers.pop(tag, None)
        if consumer is None:
            return
        queue = self._queues.get(consumer.queue)
        if queue is None:
            return
        queue.remove_consumer(consumer)
        if not queue.consumers and queue.expires is not None:
            touch(queue)
            self._schedule_expiry()  # its x-expires clock runs from now
        if queue.auto_delete and queue.had_consumer and not queue.consumers:
            self._delete_queue(queue.name)

    # -- bindings --------------------------------------------------------------

    def _bind(
        self,
        session: SessionState,
        kind: str,
        destination: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None,
        *,
        unbind: bool = False,
    ) -> None:
        with self._guard:
            if source == "" or (destination == "" and kind == EXCHANGE):
                raise AccessRefused(
                    "ACCESS_REFUSED - operation not permitted on the default exchange"
                )
            missing = source not in self._exchanges or destination not in self._queues
            if unbind and kind == QUEUE and missing:
                return  # RabbitMQ: removing a binding that cannot exist succeeds
            exchange = self._exchange(source)
            args = dict(arguments or {})
            target: QueueState | ExchangeState
            if kind == QUEUE:
                queue = self._queue(destination)
                if unbind and not exchange.table.remove(routing_key, args, (kind, destination)):
                    return  # RabbitMQ: a missing binding is unbound fine, even if exclusive
                try:
                    self._check_owner(queue, session)
                except ResourceLocked:
                    if unbind:  # it was there: put it back
                        exchange.table.add(routing_key, args, (kind, destination))
                    raise
                target = queue
            else:
                target = self._exchange(destination)
            self._route_cache.clear()
            if unbind:
                changed = kind == QUEUE or exchange.table.remove(
                    routing_key, args, (kind, destination)
                )
            else:
                try:
                    changed = exchange.table.add(routing_key, args, (kind, destination))
                except (ValueError, TypeError) as exc:
                    raise PreconditionFailed(
                        f"PRECONDITION_FAILED - invalid binding arguments for exchange "
                        f"'{source}' in vhost '/': {exc}"
                    ) from None
            if changed and self._journal is not None and _durable_binding(exchange, target):
                binding = BindingRecord(source, kind, destination, routing_key, args)
                self._journal.binding_changed(binding, added=not unbind)
            if unbind and changed:  # a no-op unbind leaves an auto-delete exchange be
                self._maybe_auto_delete_exchange(exchange)


def _inequivalent(prop: str, kind: str, name: str, received: Any, current: Any) -> Exception:
    return PreconditionFailed(
        f"PRECONDITION_FAILED - inequivalent arg '{prop}' for {kind} '{name}' in vhost '/': "
        f"received {_show(received)} but current is {_show(current)}"
    )


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    return f"'{value}'"


def _durable_binding(source: ExchangeState, target: QueueState | ExchangeState) -> bool:
    """Whether a binding survives a restart: both of its ends do."""
    if isinstance(target, QueueState):
        return source.durable and _journaled(target)
    return source.durable and target.durable


def _journaled(queue: QueueState) -> bool:
    """Whether the journal keeps the queue: a durable queue, or a stream, of a broker with one."""
    return isinstance(queue, JournaledQueue) or (
        isinstance(queue, StreamState) and queue.journal is not None
    )


def _check_replicated(
    name: str, args: Mapping[str, Any], durable: bool, exclusive: bool, auto_delete: bool
) -> None:
    """Quorum and stream queues must be durable, not exclusive, not auto-delete.

    (A stream is then a :class:`~logbus.broker.streams.StreamState`.)
    """
    if args.get("x-queue-type") not in ("quorum", "stream"):
        return
    flag = "non-durable" if not durable else "exclusive-owner" if exclusive else "auto-delete"
    if not durable or exclusive or auto_delete:
        raise PreconditionFailed(
            f"PRECONDITION_FAILED - invalid property '{flag}' for queue '{name}' in vhost '/'"
        )


def _check_queue_arguments(name: str, args: Mapping[str, Any]) -> None:
    for key in ("x-message-ttl", "x-max-length", "x-max-length-bytes"):
        value = args.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/': "
                f"{value!r} is not an integer"
            )
        if isinstance(value, int) and value < 0:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{name}' in vhost '/': "
                f"{value} is negative"
            )
    overflow = args.get("x-overflow")
    if overflow is not None and overflow not in (
        "drop-head",
        "reject-publish",
        "reject-publish-dlx",
    ):
        raise PreconditionFailed(
            f"PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '{name}' in vhost '/': "
            f"{overflow!r} is not drop-head, reject-publish or reject-publish-dlx"
        )
