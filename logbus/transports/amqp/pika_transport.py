"""``amqp://`` and ``amqps://`` — RabbitMQ through pika, safe to share between threads.

:class:`AmqpTransport` keeps one connection on an I/O thread of its own (see
``pika_core``): user calls are handed to that thread and wait for the broker's
answer with a deadline, so heartbeats flow however long the user pauses, and
any number of threads may publish, consume and settle through one transport.

It stays alive on its own: after a dropped connection it reconnects (backoff
with jitter, across the comma-separated failover URLs), declares again what it
declared, restores its consumers (the :class:`AmqpConsumer` objects keep
working) and re-sends publishes that were in flight — at least once. What the
broker does not confirm within ``confirm_timeout`` is reported as
:class:`~logbus.errors.NotConfirmed`, never dropped silently.

Options (keywords, winning over ``settings``): ``heartbeat``, ``connect_timeout``,
``confirm_timeout`` (also the deadline for every other broker round trip),
``connection_name`` (shown by ``rabbitmqctl list_connections``), ``ssl_context``
or ``cafile`` for ``amqps://`` (the URL may say ``?cafile=/path/ca.pem``;
certificates are verified by default), ``publish_window`` (the most publishes
in flight, default 5,000; fewer while the broker's pace needs fewer, and after a
reconnect: see ``window``), ``publish_budget`` (seconds of the broker's pace kept
in flight at most, default ``window.BUDGET``) and ``reconnect_max_delay`` (seconds).
"""

from __future__ import annotations

import os
import secrets
import socket
import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from itertools import islice
from typing import Any

from logbus.errors import ConfigError, InputError
from logbus.message import Message, QueueInfo
from logbus.settings import Settings, load_settings, redact_url
from logbus.transports.amqp.errors import blocked, not_confirmed, unconfirmed_in_time
from logbus.transports.amqp.pika_consume import AmqpConsumer
from logbus.transports.amqp.pika_convert import arguments, endpoints, from_pika, names
from logbus.transports.amqp.pika_core import Core
from logbus.transports.amqp.pika_publish import Progress, PublishBatch, outgoing
from logbus.transports.amqp.pika_topology import Declaration
from logbus.transports.amqp.window import BUDGET
from logbus.transports.base import DEFAULT_PREFETCH, Delivery, Settlement

__all__ = ["AmqpConsumer", "AmqpTransport"]

DEFAULT_WINDOW = 5000
#: Messages encoded and handed to the I/O thread at a time (half the window when that is less).
STEP = 1000
DEFAULT_MAX_DELAY = 10.0
_OPTIONS = frozenset(
    {
        "heartbeat",
        "connect_timeout",
        "confirm_timeout",
        "connection_name",
        "ssl_context",
        "cafile",
        "publish_window",
        "publish_budget",
        "reconnect_max_delay",
    }
)

Run = Callable[[Any, Callable[[Any], None]], None]


def default_connection_name() -> str:
    """``logbus-<host>-<pid>-<random>``: unique, and says where the connection comes from."""
    return f"logbus-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class AmqpTransport:
    """A self-healing connection to RabbitMQ implementing the ``Transport`` Protocol."""

    def __init__(self, url: str, *, settings: Settings | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            known = ", ".join(sorted(_OPTIONS))
            raise ConfigError(f"unknown AMQP transport option(s) {unknown}; known: {known}")
        settings = settings if settings is not None else load_settings(url=url)
        heartbeat = _heartbeat(options.get("heartbeat"))
        connect_timeout = _positive(options, "connect_timeout", settings.connect_timeout)
        self._confirm_timeout = _positive(options, "confirm_timeout", settings.confirm_timeout)
        self._window = int(_positive(options, "publish_window", DEFAULT_WINDOW))
        self.url = url
        self.connection_name = str(options.get("connection_name") or default_connection_name())
        self._core = Core(
            endpoints(
                url,
                heartbeat=settings.heartbeat if heartbeat is None else heartbeat,
                heartbeat_wins=heartbeat is not None,
                connect_timeout=connect_timeout,
                connection_name=self.connection_name,
                ssl_context=options.get("ssl_context"),
                cafile=options.get("cafile"),
            ),
            name=self.connection_name,
            connect_timeout=connect_timeout,
            operation_timeout=self._confirm_timeout,
            max_delay=_positive(options, "reconnect_max_delay", DEFAULT_MAX_DELAY),
            window=self._window,
            budget=_positive(options, "publish_budget", BUDGET),
        )
        self._core.start()
        # A transport dropped without close() still closes its connection and thread.
        self._finalizer = weakref.finalize(self, self._core.close)

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now (it may be reconnecting)."""
        return self._core.ready

    # -- declarations -----------------------------------------------------------------

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
        """Declare an exchange; an existing one must match (else ``PreconditionFailed``)."""
        names(exchange=name, exchange_type=type)
        what = f"declare exchange {name!r}"
        if passive:
            self._rpc(
                what,
                lambda ch, done: ch.exchange_declare(
                    name, passive=True, callback=lambda _frame: done(None)
                ),
            )
            return
        declaration = Declaration(
            "exchange",
            name,
            options={
                "exchange_type": type,
                "durable": durable,
                "auto_delete": auto_delete,
                "internal": internal,
                "arguments": _table(arguments, what),
            },
        )
        self._rpc(what, partial(self._declare, declaration))

    def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """Delete an exchange and its bindings."""
        names(exchange=name)

        def run(ch: Any, done: Callable[[Any], None]) -> None:
            def deleted(_frame: Any) -> None:
                self._core.declared.forget_exchange(name)
                done(None)

            ch.exchange_delete(name, if_unused=if_unused, callback=deleted)

        self._rpc(f"delete exchange {name!r}", run)

    def declare_queue(
        self,
        name: str = "",
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> QueueInfo:
        """Declare a queue (an empty name gets a server-generated one)."""
        names(queue=name)
        what = f"declare queue {name!r}"
        options = {
            "durable": durable,
            "exclusive": exclusive,
            "auto_delete": auto_delete,
            "arguments": _table(arguments, what),
        }

        def run(ch: Any, done: Callable[[Any], None]) -> None:
            queue = self._core.resolve(name)
            if passive:
                ch.queue_declare(queue, passive=True, callback=lambda frame: done(frame.method))
                return
            declaration = Declaration("queue", queue, options=options, server_named=not queue)

            def declared(method: Any) -> None:
                self._core.declared.add(
                    Declaration("queue", method.queue, options=options, server_named=not queue)
                )
                done(method)

            declaration.run(ch, declared)

        method = self._rpc(what, run)
        return QueueInfo(method.queue, method.message_count, method.consumer_count)

    def delete_queue(self, name: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; returns how many messages it held."""
        names(queue=name)

        def run(ch: Any, done: Callable[[Any], None]) -> None:
            queue = self._core.resolve(name)

            def deleted(frame: Any) -> None:
                self._core.declared.forget_queue(queue)
                done(frame.method.message_count)

            ch.queue_delete(queue, if_unused=if_unused, if_empty=if_empty, callback=deleted)

        return int(self._rpc(f"delete queue {name!r}", run))

    def purge_queue(self, name: str) -> int:
        """Drop a queue's ready messages; returns how many."""
        names(queue=name)

        def run(ch: Any, done: Callable[[Any], None]) -> None:
            ch.queue_purge(
                self._core.resolve(name), callback=lambda frame: done(frame.method.message_count)
            )

        return int(self._rpc(f"purge queue {name!r}", run))

    def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        names(queue=queue, exchange=exchange, routing_key=routing_key)
        what = f"bind queue {queue!r} to exchange {exchange!r}"
        table = _table(arguments, what) or {}

        def run(ch: Any, done: Callable[[Any], None]) -> None:
            binding = Declaration(
                "bind_queue", self._core.resolve(queue), exchange, routing_key, table
            )
            self._declare(binding, ch, done)

        self._rpc(what, run)

    def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Remove a queue binding."""
        names(queue=queue, exchange=exchange, routing_key=routing_key)
        what = f"unbind queue {queue!r} from exchange {exchange!r}"
        table = _table(arguments, what) or {}

        def run(ch: Any, done: Callable[[Any], None]) -> None:
            name = self._core.resolve(queue)

            def unbound(_frame: Any) -> None:
                binding = Declaration("bind_queue", name, exchange, routing_key, table)
                self._core.declared.discard(binding)
                done(None)

            ch.queue_unbind(name, exchange, routing_key, arguments=table or None, callback=unbound)

        self._rpc(what, run)

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind an exchange to another: messages routed by ``source`` flow into ``destination``."""
        names(destination=destination, source=source, routing_key=routing_key)
        what = f"bind exchange {destination!r} to exchange {source!r}"
        binding = Declaration(
            "bind_exchange", destination, source, routing_key, _table(arguments, what) or {}
        )
        self._rpc(what, partial(self._declare, binding))

    # -- publishing ---------------------------------------------------------------------

    def publish(self, message: Message, *, mandatory: bool = True) -> None:
        """Publish one message and wait for the broker's confirm."""
        self._publish((message,), mandatory)

    def publish_many(self, messages: Iterable[Message], *, mandatory: bool = True) -> None:
        """Publish many messages, up to ``publish_window`` unconfirmed at a time; raise
        the first failure, counting every message that was not confirmed."""
        self._publish(messages, mandatory)

    def publish_stream(
        self,
        take: Callable[[int], tuple[list[Message], bool]],
        progress: Progress,
        *,
        mandatory: bool = True,
    ) -> None:
        """Publish what ``take(room)`` hands out, continuously, as ``publish_many`` does.

        ``take`` returns up to ``room`` messages that are ready (it may wait a little
        for them) and whether more may follow; ``progress(n)`` is called on the I/O
        thread as the next ``n`` messages of the stream are confirmed, in order, so
        a caller answers its senders per confirm instead of per batch. The stream
        stops taking at the first failure and raises it once what is in flight ended.
        """
        self._publish(None, mandatory, take, progress)

    def _publish(
        self,
        messages: Iterable[Message] | None,
        mandatory: bool,
        take: Callable[[int], tuple[list[Message], bool]] | None = None,
        progress: Progress | None = None,
    ) -> None:
        # The one engine of publish, publish_many and publish_stream: hand the I/O thread
        # a step of messages at a time while the window has room for one. Filling the
        # whole window and waiting for it to drain to half let the I/O thread run dry
        # while this thread encoded the next half: a deep window's worth takes a tenth
        # of a second and more, and the broker idled for it.
        core = self._core
        batch = PublishBatch(progress)
        if take is None:
            source = iter(messages or ())

            def take(room: int) -> tuple[list[Message], bool]:
                chunk = list(islice(source, room))
                return chunk, len(chunk) == room

        window = self._window
        step = max(1, min(STEP, window // 2))  # a small window still refills from half
        bad: InputError | None = None
        seq = 0
        more = True
        while more:
            with batch.cond:
                room = window - batch.outstanding
                stop = progress is not None and batch.failed > 0
            if stop:
                break
            if room < step:  # full: wait until a step's worth is confirmed
                if not batch.wait(window - step, self._confirm_timeout):
                    self._give_up(batch)
                continue
            ready, more = take(step)
            chunk, bad = outgoing(batch, ready, mandatory, seq)
            seq += len(chunk)
            if chunk:
                batch.add(len(chunk))
                core.submit(partial(core.publisher.submit, chunk))
            if bad is not None:
                break
        if not batch.wait(0, self._confirm_timeout):
            self._give_up(batch)
        error = batch.error()
        if error is not None:
            raise error
        if bad is not None:
            raise bad

    def _give_up(self, batch: PublishBatch) -> None:
        waiting = batch.abandon()
        core = self._core
        if core.publisher.blocked is not None:
            why = blocked(core.publisher.blocked)
        elif not core.is_open:
            why = f"the connection is down and was not restored ({core.last_error})"
        else:
            why = unconfirmed_in_time(core.address)
        raise not_confirmed(waiting + batch.failed, self._confirm_timeout, why)

    # -- consuming ----------------------------------------------------------------------

    def get(self, queue: str, *, auto_ack: bool = False) -> Delivery | None:
        """Take one message from a queue (``basic.get``), or None when it is empty."""
        names(queue=queue)
        core = self._core
        slot = core.getter

        def run(ch: Any, done: Callable[[Any], None]) -> None:
            name = core.resolve(queue)

            def got(_ch: Any, method: Any, properties: Any, body: bytes) -> None:
                if not auto_ack:
                    slot.unacked.add(method.delivery_tag)
                done((method, properties, body, slot.live_epoch, name))

            ch.basic_get(name, got, auto_ack=auto_ack)

        result = core.rpc(slot, f"get from queue {queue!r}", run)
        if result is None:
            return None
        method, properties, body, epoch, name = result
        delivery = Delivery(
            from_pika(properties, body, method.exchange, method.routing_key),
            delivery_tag=method.delivery_tag,
            redelivered=bool(method.redelivered),
            consumer_tag="",
            queue=name,
            settle=partial(core.settle, slot, epoch),
        )
        if auto_ack:
            delivery.settled = Settlement.ACK
        return delivery

    def consume(
        self,
        queue: str,
        *,
        prefetch: int = DEFAULT_PREFETCH,
        exclusive: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> AmqpConsumer:
        """Start consuming a queue with manual acks and ``prefetch`` unacked at most."""
        names(queue=queue)
        if not 1 <= prefetch <= 65535:
            raise ConfigError(f"prefetch must be 1..65535 (AMQP's 16 bits), not {prefetch}")
        consumer = AmqpConsumer(
            self._core, queue, prefetch, exclusive, owner=self, arguments=arguments
        )
        try:
            self._core.call(consumer.io_begin, f"consume queue {queue!r}")
        except BaseException:
            # Given up (timeout) or refused: make sure it does not linger and hoard messages.
            self._core.submit_quietly(consumer.io_end)
            raise
        return consumer

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Cancel consumers, close channels and the connection, stop the I/O thread.

        Idempotent. The broker requeues every delivery that was not settled.
        """
        self._finalizer()

    def __enter__(self) -> AmqpTransport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AmqpTransport {redact_url(self.url)} name={self.connection_name!r}>"

    # -- helpers ----------------------------------------------------------------------

    def _rpc(self, what: str, run: Run) -> Any:
        return self._core.rpc(self._core.decl, what, run)

    def _declare(self, declaration: Declaration, ch: Any, done: Callable[[Any], None]) -> None:
        def declared(method: Any) -> None:
            self._core.declared.add(declaration)
            done(method)

        declaration.run(ch, declared)


def _table(value: Mapping[str, Any] | None, what: str) -> dict[str, Any] | None:
    return arguments(value, f"arguments to {what}")


def _heartbeat(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(f"heartbeat must be whole seconds 0..65535 (0: off), not {value!r}")
    return value


def _positive(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number > 0:
        raise ConfigError(f"option {name} must be a positive number, not {value!r}")
    return number
