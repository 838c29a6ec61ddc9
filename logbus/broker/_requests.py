"""What each request frame from a client does to its broker :class:`~logbus.broker.Session`.

A handler takes the session, the frame's arguments and its body, and returns
the reply's ``result`` and body; a :class:`~logbus.errors.LogbusError` it
raises is replied as an ``error`` frame naming its class. ``publish`` frames
carry many publishes (:mod:`logbus.wire.batch`) and are confirmed by one
outcome byte each; ``settle`` frames carry many tags and get no reply.
``consume`` is the server's own (it needs the client's outbox).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from logbus.broker.core import PublishOutcome
from logbus.broker.queues import Delivered
from logbus.broker.sessions import Session
from logbus.errors import DecodeError, LogbusError
from logbus.message import QueueInfo
from logbus.wire.batch import ERROR, OUTCOMES, decode_publishes
from logbus.wire.frames import (
    Frame,
    arg_bool,
    arg_str,
    arg_table,
    message_args,
)

__all__ = ["HANDLERS", "Handler", "error_frame", "settle"]

#: (session, args, body) -> (result, reply body)
Handler = Callable[[Session, dict[str, Any], bytes], tuple[Any, bytes]]


def _delivered_frame(op: str, ident: int, item: Delivered, extra: dict[str, Any]) -> Frame:
    args = message_args(item.message)
    args.update(
        extra,
        tag=item.delivery_tag,
        redelivered=item.redelivered,
        queue=item.queue,
        consumer_tag=item.consumer_tag,
    )
    return Frame(op, ident, args, item.message.body)


def error_frame(ident: int, exc: LogbusError) -> Frame:
    """The reply that reports ``exc`` to the request ``ident``."""
    return Frame("error", ident, {"class": type(exc).__name__, "message": str(exc)})


def settle(session: Session, frame: Frame) -> None:
    """Pipeline a ``settle`` frame's settlements: ``tags`` in order, all settled alike."""
    args = frame.args
    requeue = args.get("requeue")
    if requeue is not None and type(requeue) is not bool:
        raise DecodeError("frame: settle's requeue must be true, false or null")
    tags = args.get("tags")
    if not isinstance(tags, list) or not all(type(tag) is int for tag in tags):
        raise DecodeError(f"frame: settle's tags must be a list of integers, not {tags!r:.40}")
    multiple = arg_bool(args, "multiple", False)
    settle_later = session.settle_later
    for tag in tags:
        settle_later(tag, multiple=multiple, requeue=requeue)


# -- request handlers: (session, args, body) -> (result, reply body) ----------------


def _declare_exchange(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.declare_exchange(
        arg_str(a, "name"),
        arg_str(a, "type"),
        durable=arg_bool(a, "durable", True),
        auto_delete=arg_bool(a, "auto_delete", False),
        internal=arg_bool(a, "internal", False),
        arguments=arg_table(a, "arguments"),
        passive=arg_bool(a, "passive", False),
    )
    return None, b""


def _declare_queue(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    info: QueueInfo = session.declare_queue(
        arg_str(a, "name", ""),
        durable=arg_bool(a, "durable", True),
        exclusive=arg_bool(a, "exclusive", False),
        auto_delete=arg_bool(a, "auto_delete", False),
        arguments=arg_table(a, "arguments"),
        passive=arg_bool(a, "passive", False),
    )
    return [info.name, info.message_count, info.consumer_count], b""


def _bind(method: str, first: str, second: str) -> Handler:
    def handler(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
        getattr(session, method)(
            arg_str(a, first),
            arg_str(a, second),
            arg_str(a, "routing_key", ""),
            arg_table(a, "arguments"),
        )
        return None, b""

    return handler


def _publish(session: Session, a: dict[str, Any], body: bytes) -> tuple[Any, bytes]:
    """Publish a batch; the reply body has one outcome byte per message, errors as the result."""
    mandatory = arg_bool(a, "mandatory", False)
    messages = decode_publishes(a, body)
    outcomes = bytearray(len(messages))
    errors: list[list[Any]] = []
    publish, routed = session.publish, PublishOutcome.ROUTED
    for index, message in enumerate(messages):
        try:
            outcome = publish(message, mandatory=mandatory)
        except LogbusError as exc:
            outcomes[index] = ERROR
            errors.append([index, type(exc).__name__, str(exc)])
            continue
        if outcome is not routed:  # 0, ROUTED's byte, is there already
            outcomes[index] = OUTCOMES.index(outcome.value)
    return errors or None, bytes(outcomes)


def _get(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    item = session.get(arg_str(a, "queue"), auto_ack=arg_bool(a, "auto_ack", False))
    if item is None:
        return None, b""
    frame = _delivered_frame("got", 0, item, {})
    return dict(frame.args), frame.body


def _delete_exchange(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.delete_exchange(arg_str(a, "name"), if_unused=arg_bool(a, "if_unused", False))
    return None, b""


def _delete_queue(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    count = session.delete_queue(
        arg_str(a, "name"),
        if_unused=arg_bool(a, "if_unused", False),
        if_empty=arg_bool(a, "if_empty", False),
    )
    return count, b""


def _cancel(session: Session, a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.cancel(arg_str(a, "tag"))
    return None, b""


def _close(session: Session, _a: dict[str, Any], _b: bytes) -> tuple[Any, bytes]:
    session.close()
    return None, b""


HANDLERS: dict[str, Handler] = {
    "declare_exchange": _declare_exchange,
    "delete_exchange": _delete_exchange,
    "declare_queue": _declare_queue,
    "delete_queue": _delete_queue,
    "purge_queue": lambda s, a, _b: (s.purge_queue(arg_str(a, "name")), b""),
    "bind_queue": _bind("bind_queue", "queue", "exchange"),
    "unbind_queue": _bind("unbind_queue", "queue", "exchange"),
    "bind_exchange": _bind("bind_exchange", "destination", "source"),
    "unbind_exchange": _bind("unbind_exchange", "destination", "source"),
    "publish": _publish,
    "get": _get,
    "cancel": _cancel,
    "close": _close,
}
