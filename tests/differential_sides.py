"""The two sides of the differential: RabbitMQ through plain pika, logbus through a transport.

Each keeps one connection per client of the scenario (channels as in
:mod:`tests.differential`), opened again after an error closed it, and answers
:func:`tests.differential.play`'s questions in the same words.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pika
from pika import exceptions as pika_errors

from logbus.errors import AccessRefused, ChannelError, NotConfirmed, Unroutable
from logbus.message import Message, Properties
from logbus.transports import Consumer, Delivery, Transport
from tests.differential import Held, Side, reply_code, x_death


class PikaSide(Side):
    """A live RabbitMQ, reached with plain pika (the reference)."""

    quiet = 0.05

    def __init__(self, parameters: pika.URLParameters) -> None:
        self._parameters = parameters
        self._connections: dict[int, pika.BlockingConnection] = {}
        self._channels: dict[int, Any] = {}
        # basic.get on a channel of its own, as logbus's AMQP transports do: an error on
        # the main channel (a refused declare or publish) returns nothing got.
        self._getters: dict[int, Any] = {}
        self._inbox: dict[int, list[tuple[Any, int, str]]] = {}
        self._consumer_channels: dict[str, Any] = {}
        self._running: dict[int, list[tuple[Any, str]]] = {}  # client: (channel, tag)
        self._quorum: set[str] = set()  # queues last declared (successfully) as quorum
        self.created: list[tuple[str, str]] = []

    def open(self, client: int) -> None:
        connection = pika.BlockingConnection(self._parameters)
        channel = connection.channel()
        channel.confirm_delivery()
        self._connections[client], self._channels[client] = connection, channel
        self._getters[client] = connection.channel()
        self._inbox[client] = []
        self._running[client] = []

    def close(self, client: int) -> None:
        connection = self._connections.pop(client, None)
        if connection is not None and connection.is_open:
            with contextlib.suppress(pika_errors.AMQPError):
                connection.process_data_events(time_limit=0)  # take what came: never nacked
                for channel, tag in self._running.get(client, []):  # see Side.close
                    if channel.is_open:
                        channel.basic_cancel(tag)
                connection.close()

    def declare(self, client: int, name: str, args: dict[str, Any], exclusive: bool) -> None:
        self.created.append(("queue", name))
        self._channels[client].queue_declare(
            name, durable=True, exclusive=exclusive, arguments=args
        )
        if args.get("x-queue-type") == "quorum":
            self._quorum.add(name)

    def declare_dlx(self, name: str, queue: str) -> None:
        channel = self._channels[0]
        self.created.append(("exchange", name))
        channel.exchange_declare(name, "fanout", durable=False)
        if queue:
            self.created.append(("queue", queue))
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, name, "")

    def declare_exchange(self, name: str, type: str, args: dict[str, Any]) -> None:
        self.created.append(("exchange", name))
        self._channels[0].exchange_declare(name, type, durable=False, arguments=args)

    def bind(self, client: int, queue: str, exchange: str, key: str, unbind: bool) -> None:
        channel = self._channels[client]
        (channel.queue_unbind if unbind else channel.queue_bind)(queue, exchange, key)

    def publish(
        self,
        client: int,
        queue: str,
        body: str,
        expiration: str | None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
    ) -> bool:
        properties = pika.BasicProperties(expiration=expiration, priority=priority, headers=headers)
        try:
            self._channels[client].basic_publish("", queue, body.encode(), properties)
        except pika_errors.NackError:
            return False
        return True

    def publish_to(
        self, client: int, exchange: str, key: str, body: str, priority: int | None
    ) -> str:
        properties = pika.BasicProperties(priority=priority)
        try:
            channel = self._channels[client]
            channel.basic_publish(exchange, key, body.encode(), properties, mandatory=True)
        except pika_errors.UnroutableError:
            return "returned"
        except pika_errors.NackError:
            return "nacked"
        return "confirmed"

    def cancel(self, client: int) -> bool:
        running = self._running.get(client)
        if not running:
            return False
        channel, tag = running.pop()
        channel.basic_cancel(tag)
        return True

    def get(self, client: int, queue: str, auto_ack: bool) -> tuple[Any, int] | None:
        method, properties, body = self._getters[client].basic_get(queue, auto_ack=auto_ack)
        if method is None:
            return None
        return (method, properties, body), method.delivery_tag

    def consume(self, client: int, queue: str, prefetch: int) -> None:
        # A channel per consumer, as logbus's amqp:// transport opens them.
        channel, inbox = self._connections[client].channel(), self._inbox[client]
        scope = f"c{len(self._consumer_channels)}"
        self._consumer_channels[scope] = channel
        channel.basic_qos(prefetch_count=prefetch)
        try:
            tag = channel.basic_consume(
                queue, lambda _c, m, p, b: inbox.append(((m, p, b), m.delivery_tag, scope))
            )
        except pika_errors.ChannelClosedByBroker:
            self.close(client)  # the other sides close their connection on any error
            raise
        self._running[client].append((channel, tag))

    def settle(self, client: int, held: Held, how: str, multiple: bool, requeue: bool) -> None:
        channel = self._getters[client]
        if held.scope != "get":
            channel = self._consumer_channels[held.scope]
        if how == "ack":
            channel.basic_ack(held.tag, multiple=multiple)
        elif how == "nack":
            channel.basic_nack(held.tag, multiple=multiple, requeue=requeue)
        else:
            channel.basic_reject(held.tag, requeue=requeue)
        # Errors for a settlement come back asynchronously: a round trip brings them.
        self._connections[client].process_data_events(time_limit=0)

    def count(self, client: int, queue: str) -> tuple[int, int]:
        ok = self._channels[client].queue_declare(queue, passive=True).method
        return ok.message_count, ok.consumer_count

    def purge(self, client: int, queue: str) -> int:
        return int(self._channels[client].queue_purge(queue).method.message_count)

    def delete(self, client: int, queue: str, if_empty: bool, if_unused: bool) -> int:
        if queue in self._quorum and (if_empty or if_unused):
            # RabbitMQ answers this with 540, which closes the whole connection, and a
            # connection closed by the broker has its channels shut in no set order
            # (rabbit_reader walks its process dictionary). Asked on a connection of its
            # own, the 540 leaves the client's connection for play() to close in order.
            with pika.BlockingConnection(self._parameters) as connection:
                connection.channel().queue_delete(queue, if_unused=if_unused, if_empty=if_empty)
        channel = self._channels[client]
        ok = channel.queue_delete(queue, if_unused=if_unused, if_empty=if_empty)
        if queue in self._quorum:
            self._quorum.discard(queue)
        return int(ok.method.message_count)

    def pump(self, client: int) -> list[tuple[Any, int, str]]:
        connection = self._connections.get(client)
        if connection is None or not connection.is_open:
            return []
        connection.process_data_events(time_limit=0)
        inbox = self._inbox[client]  # the consumers' callbacks hold this very list
        out = inbox[:]
        inbox.clear()
        return out

    def describe(self, message: Any) -> str:
        method, properties, body = message
        flag = "R" if method.redelivered else ""
        return body.decode() + flag + x_death(properties.headers)

    def is_error(self, exc: BaseException) -> int | None:
        closed = pika_errors.ChannelClosedByBroker | pika_errors.ConnectionClosedByBroker
        if isinstance(exc, closed):
            return int(exc.reply_code)
        wrong_state = pika_errors.ChannelWrongStateError | pika_errors.ConnectionWrongStateError
        if isinstance(exc, wrong_state):
            return -1  # used after an error closed it asynchronously
        return None

    def cleanup(self) -> None:
        """Delete what the scenario declared (queues first), on a fresh connection."""
        for client in list(self._connections):
            self.close(client)
        with pika.BlockingConnection(self._parameters) as connection:
            channel = connection.channel()
            for kind, name in sorted(set(self.created), key=lambda c: c[0] != "queue"):
                if kind == "queue":
                    channel.queue_delete(name)
                else:
                    channel.exchange_delete(name)


class LogbusSide(Side):
    """logbus's in-process broker behind a transport URL (memory://, process://, local://)."""

    def __init__(self, connect: Callable[[], Transport], quiet: float) -> None:
        self._connect = connect
        self.quiet = quiet
        self._transports: dict[int, Transport] = {}
        self._consumers: dict[int, list[Consumer]] = {}
        self._cancelled: list[Consumer] = []

    def open(self, client: int) -> None:
        self._transports[client] = self._connect()
        self._consumers[client] = []

    def close(self, client: int) -> None:
        transport = self._transports.pop(client, None)
        if transport is not None:
            for consumer in self._consumers.get(client, []):  # see Side.close
                if consumer not in self._cancelled:
                    consumer.cancel()
            transport.close()

    def declare(self, client: int, name: str, args: dict[str, Any], exclusive: bool) -> None:
        self._transports[client].declare_queue(
            name, durable=True, exclusive=exclusive, arguments=args
        )

    def declare_dlx(self, name: str, queue: str) -> None:
        transport = self._transports[0]
        transport.declare_exchange(name, "fanout", durable=False)
        if queue:
            transport.declare_queue(queue, durable=True)
            transport.bind_queue(queue, name, "")

    def declare_exchange(self, name: str, type: str, args: dict[str, Any]) -> None:
        self._transports[0].declare_exchange(name, type, durable=False, arguments=args)

    def bind(self, client: int, queue: str, exchange: str, key: str, unbind: bool) -> None:
        transport = self._transports[client]
        (transport.unbind_queue if unbind else transport.bind_queue)(queue, exchange, key)

    def publish(
        self,
        client: int,
        queue: str,
        body: str,
        expiration: str | None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
    ) -> bool:
        properties = Properties(expiration=expiration, priority=priority, headers=headers or {})
        message = Message(body.encode(), properties, "", queue)
        try:
            self._transports[client].publish(message, mandatory=False)
        except NotConfirmed:
            return False
        return True

    def publish_to(
        self, client: int, exchange: str, key: str, body: str, priority: int | None
    ) -> str:
        message = Message(body.encode(), Properties(priority=priority), exchange, key)
        try:
            self._transports[client].publish(message, mandatory=True)
        except Unroutable:
            return "returned"
        except NotConfirmed:
            return "nacked"
        return "confirmed"

    def cancel(self, client: int) -> bool:
        running = [c for c in self._consumers.get(client, []) if c not in self._cancelled]
        if not running:
            return False
        running[-1].cancel()
        self._cancelled.append(running[-1])
        return True

    def get(self, client: int, queue: str, auto_ack: bool) -> tuple[Any, int] | None:
        delivery = self._transports[client].get(queue, auto_ack=auto_ack)
        return None if delivery is None else (delivery, delivery.delivery_tag)

    def consume(self, client: int, queue: str, prefetch: int) -> None:
        consumer = self._transports[client].consume(queue, prefetch=prefetch)
        self._consumers[client].append(consumer)

    def settle(self, client: int, held: Held, how: str, multiple: bool, requeue: bool) -> None:
        delivery: Delivery = held.handle
        if how == "ack":
            delivery.ack(multiple=multiple)
        elif how == "nack":
            delivery.nack(multiple=multiple, requeue=requeue)
        else:
            delivery.reject(requeue=requeue)

    def count(self, client: int, queue: str) -> tuple[int, int]:
        info = self._transports[client].declare_queue(queue, passive=True)
        return info.message_count, info.consumer_count

    def purge(self, client: int, queue: str) -> int:
        return self._transports[client].purge_queue(queue)

    def delete(self, client: int, queue: str, if_empty: bool, if_unused: bool) -> int:
        return self._transports[client].delete_queue(queue, if_unused=if_unused, if_empty=if_empty)

    def pump(self, client: int) -> list[tuple[Any, int, str]]:
        out: list[tuple[Any, int, str]] = []
        for consumer in self._consumers.get(client, []):
            while (delivery := consumer.get(timeout=0)) is not None:
                out.append((delivery, delivery.delivery_tag, consumer.tag))
        return out

    def describe(self, message: Any) -> str:
        delivery: Delivery = message
        flag = "R" if delivery.redelivered else ""
        return delivery.body.decode() + flag + x_death(dict(delivery.properties.headers))

    def is_error(self, exc: BaseException) -> int | None:
        if isinstance(exc, ChannelError | AccessRefused):
            return reply_code(str(exc)) or getattr(exc, "reply_code", 0)
        return None
