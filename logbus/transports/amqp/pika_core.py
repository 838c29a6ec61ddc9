"""The I/O side of the pika transport: one thread, one pika ``SelectConnection``.

:class:`Core` owns the thread, the connection and every channel; the user's
threads only hand it work through :meth:`Core.submit` (pika's
``add_callback_threadsafe``) and wait on futures with deadlines. Because the
thread keeps running pika's loop whatever the user does, heartbeats flow while
the user is busy elsewhere.

Channels: ``declare`` (declarations, deletes, purges), ``get`` (``basic.get``
and its settlements), ``publish`` (confirm mode, see ``pika_publish``), and one
per consumer (see ``pika_consume``); the connection reads the consumers'
deliveries off the wire itself where pika allows (see ``pika_inbound``).
Settlements from any thread are queued and sent by ``pika_settle``.

When the connection drops, the core reconnects as the one reconnect policy
says (``reconnect``: capped exponential backoff with full jitter, the failover
URLs in turn, the last good one first), declares again what the transport
declared (``pika_restore``), restores the consumers and re-sends the publishes
in flight. Until then, user calls wait up to their timeout.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any, TypeVar

from pika.adapters.select_connection import IOLoop

from logbus._log import Repeats, get_logger
from logbus.errors import BrokerUnavailable, ConnectionLost, TransportClosed, TransportError
from logbus.transports.amqp.errors import no_answer
from logbus.transports.amqp.pika_consume import AmqpConsumer
from logbus.transports.amqp.pika_convert import Endpoint
from logbus.transports.amqp.pika_errors import connect_error, local_error, reason
from logbus.transports.amqp.pika_inbound import open_connection
from logbus.transports.amqp.pika_loop import io_callback
from logbus.transports.amqp.pika_publish import Publisher
from logbus.transports.amqp.pika_restore import Restore
from logbus.transports.amqp.pika_settle import Settlements
from logbus.transports.amqp.pika_slot import ChannelSlot, Op
from logbus.transports.amqp.reconnect import DEFAULT_FIRST, ReconnectPolicy
from logbus.transports.amqp.window import BUDGET

__all__ = ["Core"]

log = get_logger("logbus.transports.amqp")
# A broker down for minutes fails every attempt: a line per window, then a count.
_repeats = Repeats(log)

T = TypeVar("T")

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
        budget: float = BUDGET,
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
        self.consumers: dict[str, AmqpConsumer] = {}
        self.decl = ChannelSlot(self, "declare")
        self.getter = ChannelSlot(self, "get", gets=True)
        self.publisher = Publisher(self, window, budget)
        self.restore = Restore(self, self.decl, self.consumers)
        self.declared = self.restore.declared
        self.resolve = self.restore.resolve
        self.settlements = Settlements(self)
        # Bound once: a consumer's deliveries settle through these, one call each.
        self.settle = self.settlements.settle
        self.settle_many = self.settlements.settle_many
        self._started: Future[None] = Future()
        self._order: list[int] = []
        self._failures: list[tuple[Endpoint, BaseException]] = []
        # Backoff, jitter and failover order: the policy the aio-pika transport uses too.
        policy = ReconnectPolicy(first=min(DEFAULT_FIRST, max_delay), cap=max_delay)
        self._attempts = policy.attempts(len(endpoints))
        self._timer: Any = None
        self._lock = threading.Lock()
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

    @property
    def accepting(self) -> bool:
        """Whether user calls are still taken (false once closing began)."""
        return self._accepting

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
        self.decl.push_front([*self.restore.ops(), Op("restore", self._restored, internal=True)])
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

    def _restored(self, _channel: Any, done: Callable[[Any], None]) -> None:
        self.ready = True
        self._attempts.restored()
        self.restore.finished()
        done(None)
        for consumer in list(self.consumers.values()):
            consumer.io_restore(self.connection)
        self.publisher.pump()
        self.getter.kick()
        if not self._started.done():
            self._started.set_result(None)
        else:
            log.info("amqp.restored", entities=len(self.declared), consumers=len(self.consumers))

    # -- blocking, closing -------------------------------------------------------

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
        self.settlements.io_release()  # acked by the user: the broker must hear of it
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
