"""One confirmed publish on a plain socket: the AMQP 0-9-1 a single ``logbus emit`` needs.

Starting pika's machinery (and importing it) costs a one-record ``logbus emit``
more than talking to the broker does. For one plain ``amqp://`` URL — no TLS,
no failover list, no query parameters — :func:`publish` does the whole
conversation itself: connection handshake with PLAIN login, one channel,
the declarations, ``confirm.select``, the publishes, their acks, nacks and
returns, ``connection.close``. Everything else takes the pika transport.

What it reports must be what the pika transport reports, word for word, so it
raises the same :mod:`logbus.errors` with the same texts (``_amqp_errors``
builds both) where it can be sure of them: a host that cannot be reached or
resolved, a refused login or vhost, a handshake or confirm timeout, a nack, a
returned message, a publish the broker refused. Where it cannot be sure, it
steps aside:

- :class:`Unsure` — nothing was published; the caller runs the full path,
  which meets the same condition and reports it in its own words (a refused
  declaration, a dropped connection before publishing, a broker answering
  something unexpected).
- :class:`Unsettled` — messages went out but the connection ended before the
  broker settled them; like the pika transport after a reconnect, the caller
  sends them again through the full path (at least once).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from logbus.errors import LogbusError, TransportError
from logbus.message import Properties
from logbus.transports import _amqp_codec as codec
from logbus.transports._amqp_errors import (
    blocked,
    nacked,
    named_exchange,
    no_answer,
    not_confirmed,
    reply_error,
    unconfirmed_in_time,
    unroutable,
)
from logbus.transports._amqp_link import (
    CLOSE,
    CLOSE_OK,
    Broker,
    Closed,
    Link,
    Unsure,
    broker,
    connect,
)

__all__ = ["Broker", "Outgoing", "Unsettled", "Unsure", "broker", "publish"]

Item = Mapping[str, Any]
Failure = Callable[[int], LogbusError]

# Method ids (class, method).
_BLOCKED, _UNBLOCKED = (10, 60), (10, 61)
_CHANNEL_OPEN, _CHANNEL_OPEN_OK, _CHANNEL_CLOSE, _CHANNEL_CLOSE_OK = (
    (20, 10),
    (20, 11),
    (20, 40),
    (20, 41),
)
_SELECT, _SELECT_OK = (85, 10), (85, 11)
_PUBLISH, _RETURN, _ACK, _NACK = (60, 40), (60, 50), (60, 80), (60, 120)
_DECLARED = {
    "exchange": ((40, 10), (40, 11)),
    "queue": ((50, 10), (50, 11)),
    "bind_exchange": ((40, 30), (40, 31)),
    "bind_queue": ((50, 20), (50, 21)),
}


class Unsettled(Exception):
    """Messages were sent, but the connection ended before the broker settled them."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish (mandatory, confirmed)."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Properties


# -- publishing -------------------------------------------------------------------


def _declaration(channel: int, kind: str, item: Item) -> tuple[bytes, tuple[int, int], str]:
    """The frame declaring ``item``, the reply that confirms it, and what the pika
    transport calls that operation (its timeout error names it)."""
    ids, ok = _DECLARED[kind]
    if kind == "exchange":
        name = item["name"]
        frame = codec.method(
            channel,
            *ids,
            codec.u16(0),
            codec.short_string(name),
            codec.short_string(item["type"]),
            codec.bits(False, item["durable"], item["auto_delete"], item["internal"], False),
            codec.encode_table(item["arguments"]),
        )
        return frame, ok, f"declare exchange {name!r}"
    if kind == "queue":
        name = item["name"]
        frame = codec.method(
            channel,
            *ids,
            codec.u16(0),
            codec.short_string(name),
            codec.bits(False, item["durable"], item["exclusive"], item["auto_delete"], False),
            codec.encode_table(item["arguments"]),
        )
        return frame, ok, f"declare queue {name!r}"
    destination, source = item["destination"], item["source"]
    frame = codec.method(
        channel,
        *ids,
        codec.u16(0),
        codec.short_string(destination),
        codec.short_string(source),
        codec.short_string(item["routing_key"]),
        codec.bits(False),
        codec.encode_table(item["arguments"]),
    )
    kind_name = "queue" if kind == "bind_queue" else "exchange"
    return frame, ok, f"bind {kind_name} {destination!r} to exchange {source!r}"


class _Item:
    """A message on its way, and how it ended."""

    __slots__ = ("message", "properties", "publish", "returned")

    def __init__(self, message: Outgoing) -> None:
        self.message = message
        self.properties = b"".join(codec.encode_properties(partial(_property, message.properties)))
        self.publish = (
            codec.short_string(message.exchange),
            codec.short_string(message.routing_key),
            codec.bits(True, False),  # mandatory, not immediate
        )
        self.returned = False

    def frames(self, channel: int, frame_max: int) -> bytes:
        return codec.method(channel, *_PUBLISH, codec.u16(0), *self.publish) + codec.content(
            channel, self.properties, self.message.body, frame_max
        )


def _property(properties: Properties, name: str) -> Any:
    # What the pika transport hands pika: empty headers are no headers.
    if name == "headers":
        return dict(properties.headers) if properties.headers else None
    return getattr(properties, name, None)


class _Outcome:
    """Counts what failed and keeps the first failure, as a pika publish batch does."""

    def __init__(self, total: int) -> None:
        self.waiting = total
        self.failed = 0
        self.first: Failure | None = None

    def resolve(self, failure: Failure | None = None) -> None:
        self.waiting -= 1
        if failure is not None:
            self.failed += 1
            if self.first is None:
                self.first = failure


def publish(
    target: Broker,
    declarations: Iterable[tuple[str, Item]],
    messages: Iterable[Outgoing],
    *,
    connect_timeout: float,
    confirm_timeout: float,
    heartbeat: int,
    connection_name: str,
    version: str,
) -> None:
    """Declare, publish each message (mandatory) and wait for every confirm.

    Raises the :mod:`logbus.errors` the pika transport would, :class:`Unsure` or
    :class:`Unsettled` (see the module's docstring).
    """
    try:
        steps = [_declaration(1, kind, item) for kind, item in declarations]
        items = [_Item(message) for message in messages]
    except (ValueError, UnicodeError):  # what pika cannot encode either: its error, its words
        raise Unsure from None
    link, frame_max = connect(target, connection_name, version, connect_timeout, heartbeat)
    confirming = _Confirming(link, target, items, frame_max, confirm_timeout)
    close_wait: float | None = None  # the link's own
    try:
        try:
            confirming.blocked_by = _declare(link, target, steps, confirming)
        except (Closed, ValueError):  # the connection ended, or a malformed frame came
            raise Unsure from None
        try:
            confirming.run()
        except (Closed, ValueError):
            raise (Unsettled if confirming.sent_any else Unsure) from None
    except LogbusError:
        if confirming.timed_out:
            # The broker left us waiting past the deadline (blocked by an alarm, or not
            # reading at all): close-ok will not come either, and the deadline has passed.
            close_wait = 0.0
        raise
    finally:
        link.close(close_wait)


def _declare(
    link: Link,
    target: Broker,
    steps: list[tuple[bytes, tuple[int, int], str]],
    confirming: _Confirming,
) -> str | None:
    """Open channel 1, declare, select confirms; the blocking reason if RabbitMQ blocked us.

    A timeout is the pika transport's: the first declaration not answered (the
    channel opening counts as the first one's), else the ``count`` messages that
    could not go out.
    """
    timeout, count = confirming.timeout, confirming.outcome.waiting
    link.send(
        codec.method(1, *_CHANNEL_OPEN, codec.short_string(""))
        + b"".join(frame for frame, _ok, _what in steps)
        + codec.method(1, *_SELECT, codec.bits(False))
    )
    expected: list[tuple[tuple[int, int], str | None]] = [
        (_CHANNEL_OPEN_OK, steps[0][2] if steps else None),
        *((ok, what) for _frame, ok, what in steps),
        (_SELECT_OK, None),
    ]
    blocked_by: str | None = None
    deadline = time.monotonic() + timeout
    while expected:
        try:
            channel, ids, args = link.method(deadline)
        except TimeoutError:
            confirming.timed_out = True
            what = expected[0][1]
            if what is not None:
                raise no_answer(what, target.address, timeout) from None
            raise not_confirmed(count, timeout, _why(target, blocked_by)) from None
        if channel == 0 and ids == _BLOCKED:
            blocked_by = args.short() or "resource alarm"
        elif channel == 0 and ids == _UNBLOCKED:
            blocked_by = None
        elif channel == 1 and ids == expected[0][0]:
            expected.pop(0)
            deadline = time.monotonic() + timeout
        else:
            raise Unsure  # a refused declaration (channel.close) or something unexpected
    return blocked_by


def _why(target: Broker, blocked_by: str | None) -> str:
    return blocked(blocked_by) if blocked_by is not None else unconfirmed_in_time(target.address)


class _Confirming:
    """Publishing on channel 1 (once not blocked) and settling every message as pika does.

    ``sent_any`` says whether publish frames went out: from then on, an ended
    connection leaves the messages unsettled rather than unsent.
    """

    def __init__(
        self, link: Link, target: Broker, items: list[_Item], frame_max: int, timeout: float
    ) -> None:
        self.link = link
        self.target = target
        self.frame_max = frame_max
        self.timeout = timeout
        self.blocked_by: str | None = None
        self.sent_any = False
        self.timed_out = False
        self.outcome = _Outcome(len(items))
        self.channel = 1
        self.unsent = list(items)
        self.inflight: dict[int, _Item] = {}
        self.opening = False  # a new channel is opening (after the broker closed one)

    def run(self) -> None:
        """Until every message is settled; then the first failure, if any, is raised."""
        outcome = self.outcome
        deadline = time.monotonic() + self.timeout
        while outcome.waiting:
            if self.unsent and not self.opening and self.blocked_by is None:
                self.sent_any = True
                frames = (item.frames(self.channel, self.frame_max) for item in self.unsent)
                self.link.send(b"".join(frames))
                self.inflight = dict(enumerate(self.unsent, start=1))  # a fresh channel
                self.unsent = []
            try:
                kind, number, payload = self.link.frame(deadline)
            except TimeoutError:
                self.timed_out = True
                why = _why(self.target, self.blocked_by)
                raise not_confirmed(outcome.waiting + outcome.failed, self.timeout, why) from None
            if number not in (0, self.channel):
                continue  # the rest of a channel the broker closed
            if kind != codec.FRAME_METHOD:
                raise ValueError(f"a frame of type {kind} where a method was due")
            ids, args = codec.parse_method(payload)
            if number == 0:
                self._connection_method(ids, args)
            elif self._channel_method(ids, args, deadline):
                deadline = time.monotonic() + self.timeout  # progress, as pika counts it
        if outcome.first is not None:
            raise outcome.first(outcome.failed)

    def _connection_method(self, ids: tuple[int, int], args: codec.Reader) -> None:
        if ids == _BLOCKED:
            self.blocked_by = args.short() or "resource alarm"
        elif ids == _UNBLOCKED:
            self.blocked_by = None
        else:  # connection.close, or something unexpected
            if ids == CLOSE:
                self.link.send_quietly(codec.method(0, *CLOSE_OK))
            raise Closed(f"connection method {ids}")

    def _channel_method(self, ids: tuple[int, int], args: codec.Reader, deadline: float) -> bool:
        """Handle one method on the publishing channel; whether it settled something."""
        if ids in (_ACK, _NACK):
            tag, multiple = args.u64(), args.octet() & 1
            done = sorted(t for t in self.inflight if t <= tag) if multiple else [tag]
            for t in done:
                item = self.inflight.pop(t, None)
                if item is None:
                    continue
                if ids == _NACK:
                    self.outcome.resolve(_nacked(item))
                elif item.returned:
                    self.outcome.resolve(_unroutable(item))
                else:
                    self.outcome.resolve()
            return True
        if ids == _RETURN:
            _code, _text = args.u16(), args.short()
            returned = (args.short(), args.short(), _content(self.link, self.channel, deadline))
            for item in self.inflight.values():
                message = item.message
                if not item.returned and returned == (
                    message.exchange,
                    message.routing_key,
                    message.body,
                ):
                    item.returned = True
                    break
            return False
        if ids == _CHANNEL_CLOSE:
            self._channel_closed(args.u16(), args.short())
            return True
        if ids == _CHANNEL_OPEN_OK and self.opening:
            return False
        if ids == _SELECT_OK and self.opening:
            self.opening = False
            return False
        raise ValueError(f"an unexpected method {ids} on the publishing channel")

    def _channel_closed(self, code: int, text: str) -> None:
        # The broker refused a publish: the messages to the exchange it names fail with
        # its error, the others go out again on a new channel, as pika's publisher does.
        self.link.send(codec.method(self.channel, *_CHANNEL_CLOSE_OK))
        error = reply_error(code, text)
        culprit = named_exchange(text)
        pending = list(self.inflight.values())
        self.inflight = {}
        for item in pending:
            if culprit is None or item.message.exchange == culprit:
                self.outcome.resolve(_refused(error))
            else:
                self.unsent.append(item)
        if self.unsent:
            self.channel += 1
            self.link.send(
                codec.method(self.channel, *_CHANNEL_OPEN, codec.short_string(""))
                + codec.method(self.channel, *_SELECT, codec.bits(False))
            )
            self.opening = True


def _content(link: Link, channel: int, deadline: float) -> bytes:
    """The body of a returned message: its header frame, then body frames."""
    try:
        kind, number, payload = link.frame(deadline)
        if kind != codec.FRAME_HEADER or number != channel:
            raise ValueError("a returned message without its content header")
        size = codec.Reader(payload, 4).u64()
        body = bytearray()
        while len(body) < size:
            kind, number, payload = link.frame(deadline)
            if kind != codec.FRAME_BODY or number != channel:
                raise ValueError("a returned message without its body")
            body += payload
    except TimeoutError:
        raise Closed("the rest of a returned message never came") from None
    return bytes(body)


def _nacked(item: _Item) -> Failure:
    exchange = item.message.exchange
    return lambda count: nacked(exchange, count)


def _unroutable(item: _Item) -> Failure:
    exchange, key = item.message.exchange, item.message.routing_key
    return lambda count: unroutable(exchange, key, count)


def _refused(error: TransportError) -> Failure:
    return lambda _count: error
