"""The in-process broker refuses on a stream what RabbitMQ refuses, with its code and words.

Each case runs once through plain pika against the live RabbitMQ and once
through a session of the in-process broker, on a stream of the same name, and
the reply codes and texts must be equal. These are the refusals the contract
suite cannot show on amqp:// (logbus's transport refuses a prefetch of 0 itself,
and RabbitMQ answers ``basic.get`` by closing the connection, which the
transport then retries).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from logbus.broker import Broker, Session, open_session
from logbus.errors import ChannelError
from logbus.message import Message

STREAM = {"x-queue-type": "stream"}

#: name -> (what pika does on a channel, what the in-process session does), given a queue name.
Case = tuple[Callable[[Any, str], object], Callable[[Session, str], object]]


def _pika_consume(channel: Any, q: str, prefetch: int | None = None) -> None:
    if prefetch is not None:
        channel.basic_qos(prefetch_count=prefetch)
    channel.basic_consume(q, lambda *_: None)
    channel.connection.process_data_events(0.2)


def _pika_nack(channel: Any, q: str) -> None:
    channel.basic_qos(prefetch_count=1)
    tags: list[int] = []
    channel.basic_consume(
        q, lambda _c, method, *_: tags.append(method.delivery_tag), arguments={"x-stream-offset": 0}
    )
    while not tags:
        channel.connection.process_data_events(0.1)
    channel.basic_nack(tags[0], requeue=True)
    channel.connection.process_data_events(0.5)


def _session_nack(session: Session, q: str) -> None:
    tags: list[int] = []
    session.consume(
        q, lambda d: tags.append(d.delivery_tag), prefetch=1, arguments={"x-stream-offset": 0}
    )
    session.nack(tags[0], requeue=True)


def _declare(**flags: Any) -> Case:
    def on_pika(channel: Any, q: str) -> None:
        channel.queue_declare(q + "-2", **{"durable": True, **flags, "arguments": STREAM})

    def on_session(session: Session, q: str) -> None:
        session.declare_queue(q + "-2", **{"durable": True, **flags, "arguments": STREAM})

    return on_pika, on_session


def _declare_arguments(arguments: dict[str, Any]) -> Case:
    def on_pika(channel: Any, q: str) -> None:
        channel.queue_declare(q + "-2", durable=True, arguments={**STREAM, **arguments})

    def on_session(session: Session, q: str) -> None:
        session.declare_queue(q + "-2", arguments={**STREAM, **arguments})

    return on_pika, on_session


CASES: dict[str, Case] = {
    "consume without prefetch": (
        _pika_consume,
        lambda s, q: s.consume(q, lambda _d: None, prefetch=0),
    ),
    "basic.get": (lambda c, q: c.basic_get(q), lambda s, q: s.get(q)),
    "queue.purge": (lambda c, q: c.queue_purge(q), lambda s, q: s.purge_queue(q)),
    "basic.nack": (_pika_nack, _session_nack),
    "non-durable": _declare(durable=False),
    "exclusive": _declare(exclusive=True),
    "auto-delete": _declare(auto_delete=True),
    "x-max-length": _declare_arguments({"x-max-length": 5}),
    "x-dead-letter-exchange": _declare_arguments({"x-dead-letter-exchange": "x"}),
    "x-max-age 7 days": _declare_arguments({"x-max-age": "7days"}),
}


def _rabbitmq(amqp_url: str, q: str, case: Case) -> tuple[int, str]:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.queue_declare(q, durable=True, arguments=STREAM)
        channel.confirm_delivery()
        channel.basic_publish("", q, b"m0")
        try:
            case[0](channel, q)
        except (
            pika.exceptions.ChannelClosedByBroker,
            pika.exceptions.ConnectionClosedByBroker,
        ) as e:
            return e.reply_code, e.reply_text
        return 0, "no error"
    finally:
        cleanup = pika.BlockingConnection(pika.URLParameters(amqp_url))
        cleanup.channel().queue_delete(q)
        cleanup.close()
        if connection.is_open:
            connection.close()


def _inprocess(q: str, case: Case) -> tuple[int, str]:
    broker = Broker("parity")
    session = open_session(broker)
    session.declare_queue(q, arguments=STREAM)
    session.publish(Message(b"m0", exchange="", routing_key=q))
    try:
        case[1](session, q)
    except ChannelError as e:
        return e.reply_code, str(e)
    finally:
        broker.close()
    return 0, "no error"


@pytest.mark.parametrize("name", list(CASES))
def test_a_stream_refuses_as_rabbitmq_does(amqp_url: str, name: str) -> None:
    """The same refusal, code and text, from RabbitMQ and from the in-process broker."""
    q = f"parity-stream-{secrets.token_hex(4)}"
    expected = _rabbitmq(amqp_url, q, CASES[name])
    assert expected[0] in (406, 540), expected  # the case does provoke a refusal
    assert _inprocess(q, CASES[name]) == expected
