"""The I/O side of the AMQP transport: one thread, one pika ``SelectConnection``.

:class:`Core` owns the thread, the connection and every channel; the user's
threads only hand it work through :meth:`Core.submit` (pika's
``add_callback_threadsafe``) and wait on futures with deadlines. Because the
thread keeps running pika's loop whatever the user does, heartbeats flow while
the user is busy elsewhere.

Channels: ``declare`` (declarations, deletes, purges), ``get`` (``basic.get``
and its settlements), ``publish`` (confirm mode, see ``_amqp_publish``), and one
per consumer (see ``_amqp_consume``); the connection reads the consumers'
deliveries off the wire itself where pika allows (see ``_amqp_inbound``).

When the connection drops, the core reconnects as the one reconnect policy
says (``_reconnect``: capped exponential backoff with full jitter, the failover
URLs in turn, the last good one first), declares
again what the transport declared, restores the consumers and re-sends the
publishes in flight. Until then, user calls wait up to their timeout.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from pika.adapters.select_connection import IOLoop

from logbus._log import Repeats, get_logger
from logbus.errors import (
    BrokerUnavailable,
    ConnectionLost,
    LogbusError,
    NotFound,
    PreconditionFailed,
    ResourceLocked,
    TransportClosed,
    TransportError,
)
from logbus.transports.amqp.errors import no_answer
from logbus.transports.amqp.pika_consume import AmqpConsumer, restore_error
from logbus.transports.amqp.pika_convert import Endpoint
from logbus.transports.amqp.pika_errors import connect_error, local_error, reason
from logbus.transports.amqp.pika_inbound import open_connection
from logbus.transports.amqp.pika_publish import Publisher
from logbus.transports.amqp.pika_slot import ChannelSlot, Op, io_callback
from logbus.transports.amqp.pika_topology import Declaration, Declared
from logbus.transports.amqp.reconnect import DEFAULT_FIRST, ReconnectPolicy
from logbus.transports.base import Settlement

__all__ = ["Core", "plan_acks"]

log = get_logger("logbus.transports.amqp")
# A broker down for minutes fails every attempt: a line per window, then a count.
_repeats = Repeats(log)

#: A queued settlement: (consumer or channel slot, epoch, how, tags, multiple, requeue).
_Settle = tuple["ChannelSlot | AmqpConsumer", int, Settlement, tuple[int, ...], bool, bool]

#: Acks held back for a consumer or channel slot: (it, epoch, tags).
_Held = tuple["ChannelSlot | AmqpConsumer", int, set[int]]

T = TypeVar("T")

# How long an ack that cannot join a multiple ack yet (a lower delivery is still held,
# by another thread, say) waits for the ack that lets it join; then it goes alone.
_ACK_DELAY = 0.02
# Reconnects to wait for the broker to release an exclusive queue of the old connection.
_LOCKED_RETRIES = 5
# Seconds to wait for close-ok from a broker that is not reading what we send: one that
# blocked our publishing (a memory or disk alarm) or left a publish unconfirmed past
# its deadline. It will not answer, and the caller's deadline has passed already.
_UNANSWERED_CLOSE_WAIT = 0.25


class Core:
    """The connection, its channels and the I/O thread of one AMQP transport."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        name: str,
        connect_timeout: float,
        operation_timeout: float,
        max_delay: float,
        window: int,
    ) -> None:
        self.endpoints = endpoints
        self.name = name
        self.connect_timeout = connect_timeout
        self.operation_timeout = operation_timeout
        self.max_delay = max_delay
        self.loop = IOLoop()
        self.connection: Any = None
        self.address = endpoints[0].address
        self.is_open = False
        self.ready = False
        self.closing = False
        self.last_error = "not connected yet"
        self.declared = Declared()
        self.aliases: dict[str, str] = {}
        self.consumers: dict[str, AmqpConsumer] = {}
        self.decl = ChannelSlot(self, "declare")
        self.getter = ChannelSlot(self, "get", gets=True)
        self.publisher = Publisher(self, window)
        self._started: Future[None] = Future()
        self._order: list[int] = []
        self._failures: list[tuple[Endpoint, BaseException]] = []
        # Backoff, jitter and failover order: the policy the aio-pika transport uses too.
        policy = ReconnectPolicy(first=min(DEFAULT_FIRST, max_delay), cap=max_delay)
        self._attempts = policy.attempts(len(endpoints))
        self._timer: Any = None
        self._locked: dict[tuple[Any, ...], int] = {}
        self._lock = threading.Lock()
        self._settlements: deque[_Settle] = deque()
        self._settle_scheduled = False
        # Acks held back by _io_ack_all, per (consumer or slot, epoch), and their timer.
        self._held_acks: dict[tuple[int, int], _Held] = {}
        self._held_timer: Any = None
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name=f"logbus-amqp:{name}", daemon=True)

    # -- the user's threads ------------------------------------------------------

    def start(self) -> None:
        """Start the I/O thread and wait until connected (or raise why not)."""
        self._thread.start()
        limit = self.connect_timeout * (len(self.endpoints) + 1) + 1.0
        try:
            self._started.result(limit)
        except TimeoutError:
            self.close()
            raise BrokerUnavailable(
                f"no RabbitMQ answered within {limit:g}s ({self.last_error}); check the "
                "host and port in the URL and that RabbitMQ is running there"
            ) from None
        except TransportError:
            self._thread.join(self.connect_timeout)
            raise

    def submit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the I/O thread; ``TransportClosed`` once closed."""
        with self._lock:
            if not self._accepting:
                raise TransportClosed("the transport is closed; open a new one")
            self.loop.add_callback_threadsafe(callback)

    def submit_quietly(self, callback: Callable[[], None]) -> None:
        """Like :meth:`submit`, but nothing happens once the transport is closed."""
        with contextlib.suppress(TransportClosed):
            self.submit(callback)

    def call(self, run: Callable[[Future[T]], None], what: str, timeout: float | None = None) -> T:
        """Run ``run(future)`` on the I/O thread and wait for the future it settles."""
        future: Future[T] = Future()

        def start() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                run(future)
            except Exception as exc:
                if not future.done():
                    future.set_exception(local_error(exc, what))

        self.submit(start)
        return self.wait(future, what, timeout)

    def rpc(self, slot: ChannelSlot, what: str, run: Callable[..., None]) -> Any:
        """Run a channel operation through ``slot`` and wait for the broker's answer."""
        future: Future[Any] = Future()
        op = Op(what, run, future=future)
        self.submit(lambda: slot.push(op))
        return self.wait(future, what)

    def wait(self, future: Future[T], what: str, timeout: float | None = None) -> T:
        """The future's result within ``timeout`` (default: the operation timeout)."""
        timeout = self.operation_timeout if timeout is None else timeout
        try:
            return future.result(timeout)
        except TimeoutError:
            if not future.cancel() and future.done():
                return future.result(0)
            raise self.timeout_error(what, timeout) from None

    def timeout_error(self, what: str, timeout: float) -> TransportError:
        """Why ``what`` did not finish within ``timeout`` seconds."""
        if self.closing:
            return TransportClosed(f"{what}: the transport was closed")
        if not self.is_open:
            return ConnectionLost(
                f"{what}: the connection to RabbitMQ is down and was not restored within "
                f"{timeout:g}s (last error: {self.last_error}); check that the broker runs "
                "and is reachable"
            )
        return no_answer(what, self.address, timeout)

    def settle(
        self,
        target: ChannelSlot | AmqpConsumer,
        epoch: int,
        how: Settlement,
        tag: int,
        multiple: bool,
        requeue: bool,
    ) -> None:
        """Ack, nack or reject a delivery from any thread, without waiting.

        Like basic.ack on the wire, settling is fire-and-forget: settlements are
        queued and the I/O thread sends them in one pass, so a consumer acking
        each record does not pay a thread round trip per record. A stale or
        unknown tag is logged on the I/O thread (the Delivery already refuses
        a second settle of itself).
        """
        self._queue_settlement((target, epoch, how, (tag,), multiple, requeue))

    def settle_many(
        self,
        target: ChannelSlot | AmqpConsumer,
        epoch: int,
        how: Settlement,
        tags: Sequence[int],
        requeue: bool,
    ) -> None:
        """Settle several deliveries of ``target`` alike, from any thread, without waiting:
        one entry in the queue for all of them (see :meth:`settle`)."""
        self._queue_settlement((target, epoch, how, tuple(tags), False, requeue))

    def _queue_settlement(self, settlement: _Settle) -> None:
        if self.closing or not self._accepting:
            raise TransportClosed("the transport is closed; its deliveries went back to the queue")
        self._settlements.append(settlement)
        if not self._settle_scheduled:
            self._settle_scheduled = True
            self.submit_quietly(self._io_drain_settlements)

    def _io_drain_settlements(self) -> None:
        """Send what was queued: the plain acks of each consumer folded together (see
        :func:`plan_acks`), everything else as it came, in order for its consumer."""
        self._settle_scheduled = False
        pending = self._settlements
        # Plain acks gathered per (consumer, epoch), sent when something else for that
        # consumer comes (a nack must not overtake an ack queued before it) or at the end.
        acks: dict[tuple[int, int], tuple[ChannelSlot | AmqpConsumer, int, list[int]]] = {}
        while pending:
            try:
                target, epoch, how, tags, multiple, requeue = pending.popleft()
            except IndexError:
                break
            key = (id(target), epoch)
            if how is Settlement.ACK and not multiple:
                gathered = acks.get(key)
                if gathered is None:
                    acks[key] = (target, epoch, list(tags))
                else:
                    gathered[2].extend(tags)
                continue
            # What this consumer acked before goes first, held-back acks included.
            gathered = acks.pop(key, None)
            if gathered is not None or key in self._held_acks:
                self._io_ack_all(target, epoch, gathered[2] if gathered else [], hold=False)
            for tag in tags:
                try:
                    self._io_settle(target, epoch, how, tag, multiple, requeue)
                except LogbusError as exc:
                    log.warning("amqp.settlement_refused", how=how.value, tag=tag, reason=str(exc))
        for gathered in acks.values():
            self._io_ack_all(*gathered)

    def _io_ack_all(
        self, target: ChannelSlot | AmqpConsumer, epoch: int, tags: list[int], *, hold: bool = True
    ) -> None:
        """Ack exactly ``tags`` of ``target`` (and the acks held back for it) in as few
        frames as say the same thing.

        Tags that cannot join a multiple ack because a lower delivery is still
        unacked (another thread's batch, finishing a moment later) are held back
        for up to ``_ACK_DELAY``: the ack of the lower ones then usually carries
        them in the same multiple ack, instead of one frame each. ``hold=False``
        sends everything now.
        """
        key = (id(target), epoch)
        held = self._held_acks.pop(key, None)
        if held is not None:
            tags = [*tags, *held[2]]
        if not tags:
            return
        if self.closing:
            log.warning(
                "amqp.settlement_refused",
                how=Settlement.ACK.value,
                tags=len(tags),
                reason="the transport is closed; its deliveries went back to the queue",
            )
            return
        channel = target.channel
        if channel is None or epoch != target.live_epoch or not channel.is_open:
            log.info(
                "amqp.stale_settlement",
                how=Settlement.ACK.value,
                tags=len(tags),
                first=min(tags),
                on=target.describe(),
                why="its channel is gone, so the broker requeued them and will deliver them again",
            )
            return
        unacked = target.unacked
        wanted = set(tags)
        known = wanted & unacked
        for tag in sorted(wanted - known):
            log.warning(
                "amqp.settlement_refused",
                how=Settlement.ACK.value,
                tag=tag,
                reason=f"PRECONDITION_FAILED - unknown delivery tag {tag} (already settled, "
                "maybe by an earlier multiple ack); settle each delivery once",
            )
        if not known:
            return
        top, singles = plan_acks(unacked, known)
        if top is not None:
            channel.basic_ack(top, multiple=True)
        if singles and hold:
            # Those above a delivery still unacked wait for it; the rest go now.
            lowest_held = min((tag for tag in unacked if tag not in known), default=None)
            if lowest_held is not None and singles[-1] > lowest_held:
                waiting = {tag for tag in singles if tag > lowest_held}
                singles = [tag for tag in singles if tag < lowest_held]
                self._held_acks[key] = (target, epoch, waiting)
                known.difference_update(waiting)
                if self._held_timer is None:
                    self._held_timer = self.loop.call_later(_ACK_DELAY, self._io_release_acks)
        for tag in singles:
            channel.basic_ack(tag, multiple=False)
        unacked.difference_update(known)
        target.io_after_settle()

    def _io_release_acks(self) -> None:
        """Send every held-back ack now."""
        if self._held_timer is not None:
            self.loop.remove_timeout(self._held_timer)
            self._held_timer = None
        for target, epoch, _tags in list(self._held_acks.values()):
            self._io_ack_all(target, epoch, [], hold=False)

    def close(self) -> None:
        """Close channels and connection, stop the I/O thread; idempotent."""
        with self._lock:
            if self._accepting:
                self._accepting = False
                self.loop.add_callback_threadsafe(self._io_shutdown)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self.connect_timeout + 1.0)
            if self._thread.is_alive():
                log.warning("amqp.close_timed_out", connection_name=self.name)

    # -- the I/O thread -----------------------------------------------------------

    def live_connection(self) -> Any:
        """The connection if it is open (to reopen a channel on), else None."""
        connection = self.connection
        if self.is_open and connection is not None and connection.is_open:
            return connection
        return None

    def consumer_ended(self, consumer: AmqpConsumer, *, by_broker: bool) -> None:
        """Forget a queue nobody will declare again: deleted under a consumer, or an
        auto-delete queue of ours whose last consumer went (the broker deleted it)."""
        queue = consumer.queue
        if any(c.queue == queue for c in self.consumers.values()):
            return
        if by_broker or self.declared.auto_delete(queue):
            self.declared.forget_queue(queue)

    def resolve(self, queue: str) -> str:
        """A queue's current name (a server-named queue is renamed by a reconnect)."""
        return self.aliases.get(queue, queue)

    def _run(self) -> None:
        self._connect_round()
        while True:
            try:
                self.loop.start()
                break
            except Exception:  # a bug in a callback must not end the connection's thread
                log.exception("amqp.io_loop_failed", connection_name=self.name)
        self.loop.close()

    def _stop(self) -> None:
        if self._timer is not None:
            self.loop.remove_timeout(self._timer)
            self._timer = None
        self.loop.stop()

    def _connect_round(self) -> None:
        self._timer = None
        if self.closing:
            return
        self._order = self._attempts.round()
        self._failures = []
        self._try_next()

    def _try_next(self) -> None:
        index = self._order.pop(0)
        endpoint = self.endpoints[index]
        try:
            self.connection = open_connection(
                endpoint.parameters,
                consumers=self.consumers,
                on_open_callback=partial(self._opened, index),
                on_open_error_callback=partial(self._open_failed, index),
                on_close_callback=self._closed,
                custom_ioloop=self.loop,
            )
        except Exception as exc:
            self.connection = None
            self._open_failed(index, None, exc)

    @io_callback
    def _open_failed(self, index: int, connection: Any, exc: BaseException) -> None:
        if connection is not None and connection is not self.connection:
            return
        self.connection = None
        if self.closing:
            self._stop()
            return
        endpoint = self.endpoints[index]
        self.last_error = f"{endpoint.address}: {reason(exc)}"
        self._failures.append((endpoint, exc))
        if self._order:
            _repeats.warning(
                "amqp.connect_failed",
                key=(endpoint.address,),
                endpoint=endpoint.address,
                reason=reason(exc),
            )
            self._try_next()
        elif not self._started.done():
            log.warning("amqp.connect_failed", endpoint=endpoint.address, reason=reason(exc))
            with self._lock:
                self._accepting = False
            self.closing = True
            self._started.set_exception(connect_error(self._failures))
            self._stop()
        else:
            self._schedule_reconnect(endpoint.address, reason(exc))

    def _schedule_reconnect(self, endpoint: str | None = None, why: str = "") -> None:
        delay = self._attempts.next_delay()
        attempt = self._attempts.failed
        if endpoint is None:
            log.info("amqp.reconnect_scheduled", delay=round(delay, 3), attempt=attempt)
        else:  # an attempt failed: say so with its backoff, summarised while it goes on
            _repeats.warning(
                "amqp.reconnect_failed",
                key=(endpoint,),
                endpoint=endpoint,
                reason=why,
                attempt=attempt - 1,
                retry_in=round(delay, 3),
            )
        self._timer = self.loop.call_later(delay, self._connect_round)

    @io_callback
    def _opened(self, index: int, connection: Any) -> None:
        if connection is not self.connection:
            return
        endpoint = self.endpoints[index]
        self.is_open = True
        self.address = endpoint.address
        self._attempts.connected(index)
        connection.add_on_connection_blocked_callback(self._blocked)
        connection.add_on_connection_unblocked_callback(self._unblocked)
        log.info(
            "amqp.connected",
            endpoint=endpoint.address,
            vhost=endpoint.vhost,
            connection_name=self.name,
            restoring=len(self.declared),
            consumers=len(self.consumers),
        )
        self.decl.push_front([*self._restore_ops(), Op("restore", self._restored, internal=True)])
        self.decl.open(connection)
        self.getter.open(connection)
        self.publisher.open(connection)

    @io_callback
    def _closed(self, connection: Any, exc: BaseException) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        self.is_open = False
        self.ready = False
        if self.closing:
            self._stop()
            return
        self.last_error = f"{self.address}: {reason(exc)}"
        log.warning("amqp.connection_lost", endpoint=self.address, reason=reason(exc))
        self.decl.drop_internal()
        self._schedule_reconnect()

    def restart(self, why: str) -> None:
        """Drop this connection and reconnect later (the broker still holds something of
        the previous one, e.g. an exclusive queue, until it notices that one is gone)."""
        log.warning("amqp.reconnecting", reason=why)
        connection = self.connection
        if connection is not None and connection.is_open:
            connection.close(200, why)

    # -- restoring after a reconnect ------------------------------------------------

    def _restore_ops(self) -> list[Op]:
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
                ops.append(self._restore_op(declaration))
        return ops

    def _restore_op(self, declaration: Declaration) -> Op:
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
            self._restore_failed(declaration.following(self.resolve), error)

        return Op(f"declare {declaration.describe()} again", run, internal=True, on_error=failed)

    def _server_named_gone(self, declaration: Declaration, error: LogbusError) -> None:
        if isinstance(error, NotFound):
            self.decl.push_front([self._restore_op(declaration)])
        else:
            self._restore_failed(declaration, error)

    def _restore_failed(self, declaration: Declaration, error: LogbusError) -> None:
        if self.closing:
            return
        if isinstance(error, ResourceLocked):
            tries = self._locked.get(declaration.key, 0) + 1
            self._locked[declaration.key] = tries
            if tries <= _LOCKED_RETRIES:
                # The broker has not yet noticed the old connection is gone.
                self.restart(f"{declaration.describe()} is still held by the old connection")
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
        for consumer in list(self.consumers.values()):
            consumer.io_end(lost)

    def _rename(self, old: str, new: str) -> None:
        log.warning("amqp.queue_renamed", old=old, new=new, why="server-named queue redeclared")
        self.declared.rename_queue(old, new)
        for alias, target in list(self.aliases.items()):
            if target == old:
                self.aliases[alias] = new
        self.aliases[old] = new
        for consumer in self.consumers.values():
            if consumer.queue == old:
                consumer.queue = new

    def _restored(self, _channel: Any, done: Callable[[Any], None]) -> None:
        self.ready = True
        self._attempts.restored()
        self._locked.clear()
        done(None)
        for consumer in list(self.consumers.values()):
            consumer.io_restore(self.connection)
        self.publisher.pump()
        self.getter.kick()
        if not self._started.done():
            self._started.set_result(None)
        else:
            log.info("amqp.restored", entities=len(self.declared), consumers=len(self.consumers))

    # -- settling, blocking, closing ---------------------------------------------

    def _io_settle(
        self,
        target: ChannelSlot | AmqpConsumer,
        epoch: int,
        how: Settlement,
        tag: int,
        multiple: bool,
        requeue: bool,
    ) -> None:
        if self.closing:
            raise TransportClosed("the transport is closed; its deliveries went back to the queue")
        channel = target.channel
        if channel is None or epoch != target.live_epoch or not channel.is_open:
            log.info(
                "amqp.stale_settlement",
                how=how.value,
                tag=tag,
                on=target.describe(),
                why="its channel is gone, so the broker requeued it and will deliver it again",
            )
            return
        if tag not in target.unacked:
            raise PreconditionFailed(
                f"PRECONDITION_FAILED - unknown delivery tag {tag} (already settled, maybe by "
                "an earlier multiple ack); settle each delivery once"
            )
        if how is Settlement.ACK:
            channel.basic_ack(tag, multiple=multiple)
        elif how is Settlement.NACK:
            channel.basic_nack(tag, multiple=multiple, requeue=requeue)
        else:
            channel.basic_reject(tag, requeue=requeue)
        if multiple:
            target.unacked = {t for t in target.unacked if t > tag}
        else:
            target.unacked.discard(tag)
        target.io_after_settle()

    @io_callback
    def _blocked(self, _connection: Any, frame: Any) -> None:
        self.publisher.blocked = str(frame.method.reason or "resource alarm")
        # Not a warning: a publish that waits on it says so when it gives up (one line).
        log.info("amqp.blocked", endpoint=self.address, reason=self.publisher.blocked)

    @io_callback
    def _unblocked(self, _connection: Any, _frame: Any) -> None:
        log.info("amqp.unblocked", endpoint=self.address)
        self.publisher.unblock()

    @io_callback
    def _io_shutdown(self) -> None:
        self._io_release_acks()  # acked by the user: the broker must hear of it
        self.closing = True
        self.ready = False
        closed = TransportClosed("the transport was closed; open a new one")
        self.decl.fail_all(closed)
        self.getter.fail_all(closed)
        unanswered = self.publisher.unanswered()
        self.publisher.fail_all()
        for consumer in list(self.consumers.values()):
            consumer.io_end()
        connection = self.connection
        if connection is None or connection.is_closed:
            self._stop()
            return
        if not connection.is_closing:
            # Channels close first (cancelling their consumers); the broker requeues
            # every unacked delivery.
            connection.close()
        # Close-ok ends the loop (_closed); without it, give up waiting after a while —
        # at once when the broker is not reading what we send.
        wait = self.connect_timeout
        if unanswered:
            wait = min(wait, _UNANSWERED_CLOSE_WAIT)
        self._timer = self.loop.call_later(wait, self._stop)


def plan_acks(unacked: set[int], tags: Collection[int]) -> tuple[int | None, list[int]]:
    """How to ack exactly ``tags`` (distinct, each in ``unacked``) in the fewest frames.

    Returns ``(top, singles)``: ``basic.ack(top, multiple=True)`` (unless ``top`` is
    None) and one plain ``basic.ack`` per tag of ``singles``. A multiple ack settles
    every unacked tag up to its own, so ``top`` ends the longest run of the lowest
    unacked tags that are all in ``tags``; the tags above it, behind one still held
    (another thread's batch, a record still being written), go one by one.
    """
    ordered = sorted(tags)
    if len(ordered) == len(unacked):  # every delivery held is acked
        return (ordered[-1], []) if len(ordered) > 1 else (None, ordered)
    if ordered[0] != min(unacked):
        return None, ordered
    end = 1  # ordered[:end] are the lowest unacked tags, with no other unacked among them
    while end < len(ordered):
        below, tag = ordered[end - 1], ordered[end]
        if tag != below + 1 and _held_between(unacked, below, tag):
            break
        end += 1
    if end == 1:
        return None, ordered
    return ordered[end - 1], ordered[end:]


def _held_between(unacked: set[int], low: int, high: int) -> bool:
    """Whether some tag strictly between ``low`` and ``high`` is still unacked."""
    if high - low - 1 <= len(unacked):
        return any(tag in unacked for tag in range(low + 1, high))
    return any(low < tag < high for tag in unacked)


def _passive_queue(name: str, channel: Any, done: Callable[[Any], None]) -> None:
    channel.queue_declare(name, passive=True, callback=lambda _frame: done(None))
