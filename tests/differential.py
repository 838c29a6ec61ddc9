"""The differential harness: one seeded operation sequence, run on RabbitMQ and on logbus.

A scenario is a list of plain tuples drawn from a seed (:func:`scenario`): queue
declares with TTLs, length limits, overflow, dead-lettering, quorum, priorities,
a single active consumer, ``x-expires`` and a delivery limit (valid and invalid
values); publishes with per-message expirations (valid, 0 and invalid),
priorities and ``CC``/``BCC`` headers; publishes through a direct exchange with an
alternate exchange (mandatory); ``basic.get``; consumers with prefetch, and their
cancels; ack/nack/reject with and without requeue and ``multiple``; connection
closes, purges, deletes, unbinds and redeclares. :class:`PikaSide` plays it on a
live RabbitMQ through plain pika, :class:`LogbusSide` through a logbus transport,
and :func:`play` writes down what a client could observe — every reply, error code,
delivery (body, redelivered flag), passive-declare count, and at the end each
queue's messages in order with their ``x-death`` — as lines of text, so two runs
are compared with ``==`` and a difference reads as a diff.

Both sides see one connection per client, with channels as logbus's AMQP transports
open them: one for declares and publishes, one for ``basic.get``, one per consumer.
A channel error closes that connection on both (pika's channel close and logbus's
session close requeue alike), so the two stay comparable after an error; a refused
``basic.get`` first returns what its channel got, on both. After every step each side is
pumped until its consumers have been quiet for a moment (RabbitMQ delivers
asynchronously): a wait on quiescence with a deadline, never an assertion on time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

Op = tuple[Any, ...]

#: Per-message expirations tried: valid, zero, short (expire while waiting), invalid.
EXPIRATIONS = (None,) * 8 + ("0", "0", "1", "1", "60000", "abc", "-1", "1.5")
#: Message priorities tried (None: no priority property; 9 is past every x-max-priority).
PRIORITIES = (None,) * 4 + (0, 1, 2, 5, 9)
CLIENTS = 2
QUEUES = 3


def queue_arguments(rng: random.Random, dlx: str) -> dict[str, Any]:
    """A random mix of the arguments whose semantics the differential checks."""
    args: dict[str, Any] = {}
    quorum = rng.random() < 0.2
    if quorum:
        args["x-queue-type"] = "quorum"
    if rng.random() < 0.35:
        args["x-message-ttl"] = rng.choice((0, 1, 60000))
    if rng.random() < 0.35:
        args["x-max-length"] = rng.choice((0, 1, 2, 3))
    if rng.random() < 0.2:
        args["x-max-length-bytes"] = rng.choice((0, 4, 10))
    if ("x-max-length" in args or "x-max-length-bytes" in args) and rng.random() < 0.5:
        args["x-overflow"] = rng.choice(("drop-head", "reject-publish"))
    if rng.random() < 0.4:
        args["x-dead-letter-exchange"] = dlx
        if rng.random() < 0.5:
            args["x-dead-letter-routing-key"] = "dead"
    if rng.random() < 0.1:
        args["x-unknown-arg"] = rng.choice(("a", "b"))
    if rng.random() < (0.02 if quorum else 0.2):  # refused on a quorum queue
        args["x-max-priority"] = rng.choice((0, 2, 5, 5, 300))
    if rng.random() < 0.15:
        args["x-single-active-consumer"] = rng.choice((True, True, True, False, "yes"))
    if rng.random() < 0.08:  # long enough never to run out within a scenario
        args["x-expires"] = rng.choice((60000, 60000, 0))
    if rng.random() < (0.4 if quorum else 0.02):  # refused on a classic queue
        args["x-delivery-limit"] = rng.choice((0, 1, 2))
    return args


def _copies(rng: random.Random) -> tuple[tuple[str, Any], ...]:
    """``CC``/``BCC`` headers of a publish: queue indexes, or a malformed value."""
    if rng.random() < 0.8:
        return ()
    if rng.random() < 0.1:
        return ((rng.choice(("CC", "BCC")), "not-a-list"),)
    return tuple(
        (header, tuple(rng.randrange(QUEUES) for _ in range(rng.choice((1, 2)))))
        for header in ("CC", "BCC")
        if rng.random() < 0.6
    )


def scenario(seed: int, length: int = 18) -> list[Op]:
    """The operation sequence of ``seed``: declares first, then ``length`` random steps."""
    rng = random.Random(seed)
    ops: list[Op] = []
    declared: list[dict[str, Any]] = []
    for q in range(QUEUES):
        args = queue_arguments(rng, "dlx")
        exclusive = "x-queue-type" not in args and rng.random() < 0.15
        declared.append(args)
        ops.append(("declare", 0, q, args, exclusive))
        if rng.random() < 0.5:
            ops.append(("bind", 0, q, f"k{q}"))
    body = 0
    for _ in range(length):
        kind = rng.choices(
            ("publish", "get", "consume", "settle", "close", "count", "wait", "purge",
             "delete", "redeclare", "unbind", "publishx", "cancel", "bind"),
            (30, 10, 8, 22, 4, 6, 5, 2, 2, 3, 2, 5, 3, 2),
        )[0]  # fmt: skip
        client, q = rng.randrange(CLIENTS), rng.randrange(QUEUES)
        if kind == "publish":
            for _ in range(rng.choice((1, 1, 2, 3))):
                expiration, priority = rng.choice(EXPIRATIONS), rng.choice(PRIORITIES)
                ops.append(("publish", client, q, f"m{body}", expiration, priority, _copies(rng)))
                body += 1
        elif kind == "publishx":  # through the direct exchange: a bound key or none (the AE)
            key = rng.choice((f"k{q}", f"k{q}", "none"))
            ops.append(("publishx", client, key, f"m{body}", rng.choice(PRIORITIES)))
            body += 1
        elif kind == "bind":
            ops.append(("bind", client, q, f"k{q}"))
        elif kind == "get":
            ops.append(("get", client, q, rng.random() < 0.3))
        elif kind == "consume":
            ops.append(("consume", client, q, rng.choice((1, 2, 3, 10))))
        elif kind == "settle":
            how = rng.choice(("ack", "ack", "nack", "reject"))
            multiple = how != "reject" and rng.random() < 0.3
            ops.append((how, client, rng.randrange(4), multiple, rng.random() < 0.6))
        elif kind == "delete":
            ops.append(("delete", client, q, rng.random() < 0.5, rng.random() < 0.5))
        elif kind == "redeclare":
            args = dict(declared[q]) if rng.random() < 0.4 else queue_arguments(rng, "dlx")
            if rng.random() < 0.3:
                args["x-unknown-arg"] = "c"
            ops.append(("declare", client, q, args, rng.random() < 0.2))
        elif kind == "unbind":
            ops.append(("unbind", client, q, rng.choice((f"k{q}", "missing"))))
        else:
            ops.append((kind, client, q))
    return ops


def reply_code(text: str) -> int:
    """The AMQP reply code named by an error text ("NOT_FOUND - ...")."""
    for code, word in (
        (404, "NOT_FOUND"),
        (405, "RESOURCE_LOCKED"),
        (406, "PRECONDITION_FAILED"),
        (403, "ACCESS_REFUSED"),
        (540, "NOT_IMPLEMENTED"),
        (503, "COMMAND_INVALID"),
    ):
        if word in text:
            return code
    return 0


class Held:
    """A delivery a client holds unsettled: its tag and what the trace calls it."""

    __slots__ = ("handle", "label", "scope", "tag")

    def __init__(self, tag: int, label: str, handle: Any, scope: str) -> None:
        # scope: the channel the delivery came on ("get", or the consumer's own), which
        # is what basic.ack's multiple reaches across.
        self.tag, self.label, self.handle, self.scope = tag, label, handle, scope


class Side:
    """What :func:`play` needs of a broker; :class:`PikaSide` and :class:`LogbusSide`."""

    quiet: float = 0.05

    def open(self, client: int) -> None: ...

    def close(self, client: int) -> None:
        """Cancel the client's consumers, oldest first, then close its connection.

        Cancelling first keeps RabbitMQ's answer deterministic. When a connection
        closes while several of its consumers on one quorum queue hold messages, what
        one channel returns goes to another of its consumers that is still closing,
        and is returned again, and RabbitMQ's x-delivery-count then depends on timing:
        probed on 3.10 with three consumers closed one at a time 0.2 s apart, 7 runs
        of 8 gave ``m2`` 2 and ``m1`` 3, one gave ``m1`` 3 and ``m2`` 3 (and earlier
        sessions saw 2 where 3 was usual). Cancelled consumers take nothing, and the
        channels still return what they hold in the order they were opened.
        """

    def declare(self, client: int, name: str, args: dict[str, Any], exclusive: bool) -> None: ...
    def declare_dlx(self, name: str, queue: str) -> None: ...
    def bind(self, client: int, queue: str, exchange: str, key: str, unbind: bool) -> None: ...
    def declare_exchange(self, name: str, type: str, args: dict[str, Any]) -> None: ...
    def publish(
        self,
        client: int,
        queue: str,
        body: str,
        expiration: str | None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
    ) -> bool: ...
    def publish_to(
        self, client: int, exchange: str, key: str, body: str, priority: int | None
    ) -> str:
        """Publish with ``mandatory``: "confirmed", "returned" or "nacked"."""
        return ""

    def cancel(self, client: int) -> bool:
        """Cancel the client's latest consumer still running; False if it has none."""
        return False

    def get(self, client: int, queue: str, auto_ack: bool) -> tuple[Any, int] | None: ...
    def consume(self, client: int, queue: str, prefetch: int) -> None: ...
    def settle(self, client: int, held: Held, how: str, multiple: bool, requeue: bool) -> None:
        """Ack, nack or reject ``held``."""

    def count(self, client: int, queue: str) -> tuple[int, int]: ...
    def purge(self, client: int, queue: str) -> int: ...
    def delete(self, client: int, queue: str, if_empty: bool, if_unused: bool) -> int: ...
    def pump(self, client: int) -> list[tuple[Any, int, str]]:
        """Consumer deliveries that arrived since the last pump: (message, tag, scope)."""
        return []

    def describe(self, message: Any) -> str:
        """Body, redelivered flag and x-death of a delivered message, as one string."""
        return ""

    def is_error(self, exc: BaseException) -> int | None:
        """The reply code of a channel or connection error, None if ``exc`` is not one."""
        return None


def play(side: Side, ops: Sequence[Op], prefix: str) -> list[str]:
    """Run ``ops`` on ``side`` with entity names under ``prefix``; the observed trace."""
    trace: list[str] = []
    held: list[list[Held]] = [[] for _ in range(CLIENTS)]
    names = [f"{prefix}-q{q}" for q in range(QUEUES)]
    dlq, aeq = f"{prefix}-dlq", f"{prefix}-aeq"
    exchange = f"{prefix}-x"
    for client in range(CLIENTS):
        side.open(client)
    side.declare_dlx(f"{prefix}-dlx", dlq)
    side.declare_dlx(f"{prefix}-ae", aeq)  # a fanout exchange and its queue: the AE
    side.declare_exchange(exchange, "direct", {"alternate-exchange": f"{prefix}-ae"})

    def failed(client: int, exc: BaseException) -> None:
        code = side.is_error(exc)
        if code is None:
            raise exc
        trace.append(f"  error {code}")
        side.close(client)
        held[client].clear()
        side.open(client)

    def pump() -> None:
        # Deliveries to different clients (connections) have no order between them: a
        # step's are listed client by client, each client's in the order they came.
        lines: list[tuple[int, str]] = []
        deadline = time.monotonic() + 5.0
        quiet_until = time.monotonic() + side.quiet
        while True:
            arrived = False
            for client in range(CLIENTS):
                for message, tag, scope in side.pump(client):
                    arrived = True
                    label = side.describe(message)
                    held[client].append(Held(tag, label, message, scope))
                    lines.append((client, f"  c{client} deliver {label}"))
            now = time.monotonic()
            if arrived:
                quiet_until = now + side.quiet
            elif now >= min(quiet_until, deadline):
                break
            else:
                time.sleep(0.001)
        trace.extend(line for _, line in sorted(lines, key=lambda item: item[0]))

    for op in ops:
        kind, client = op[0], op[1]
        trace.append(" ".join(map(str, op)))
        try:
            _step(side, op, names, exchange, prefix, held, trace)
        except Exception as exc:  # a channel error is an outcome to compare
            failed(client, exc)
        if kind == "wait":
            time.sleep(0.03)  # lets TTLs of 1 ms run out on both sides alike
        pump()
    trace.extend(_final(side, [*names, dlq, aeq], pump, failed))
    return trace


def _step(
    side: Side,
    op: Op,
    names: list[str],
    exchange: str,
    prefix: str,
    held: list[list[Held]],
    trace: list[str],
) -> None:
    kind, client = op[0], op[1]
    if kind == "declare":
        args = dict(op[3])
        if "x-dead-letter-exchange" in args:
            args["x-dead-letter-exchange"] = f"{prefix}-dlx"
        side.declare(client, names[op[2]], args, op[4])
    elif kind == "bind" or kind == "unbind":
        side.bind(client, names[op[2]], exchange, op[3], unbind=kind == "unbind")
    elif kind == "publish":
        headers = {h: v if isinstance(v, str) else [names[i] for i in v] for h, v in op[6]}
        ok = side.publish(client, names[op[2]], op[3], op[4], op[5], headers or None)
        trace.append("  confirmed" if ok else "  nacked")
    elif kind == "publishx":
        trace.append("  " + side.publish_to(client, exchange, op[2], op[3], op[4]))
    elif kind == "cancel":
        if not side.cancel(client):
            trace.append("  no consumer")
    elif kind == "get":
        got = side.get(client, names[op[2]], op[3])
        if got is None:
            trace.append("  empty")
        else:
            label = side.describe(got[0])
            trace.append(f"  got {label}")
            if not op[3]:
                held[client].append(Held(got[1], label, got[0], "get"))
    elif kind == "consume":
        side.consume(client, names[op[2]], op[3])
    elif kind in ("ack", "nack", "reject"):
        mine = held[client]
        if not mine:
            trace.append("  nothing held")
            return
        target = mine[op[2] % len(mine)]
        side.settle(client, target, kind, op[3], op[4])
        if op[3]:
            mine[:] = [h for h in mine if h.scope != target.scope or h.tag > target.tag]
        else:
            mine.remove(target)
    elif kind == "close":
        side.close(client)
        held[client].clear()
        side.open(client)
    elif kind == "count":
        messages, consumers = side.count(client, names[op[2]])
        trace.append(f"  count {messages} {consumers}")
    elif kind == "purge":
        trace.append(f"  purged {side.purge(client, names[op[2]])}")
    elif kind == "delete":
        trace.append(f"  deleted {side.delete(client, names[op[2]], op[3], op[4])}")


def _final(
    side: Side,
    queues: list[str],
    pump: Callable[[], None],
    failed: Callable[[int, BaseException], None],
) -> list[str]:
    """Counts of every queue, then all connections closed and each queue drained."""
    lines: list[str] = []
    for queue in queues:
        try:
            messages, consumers = side.count(0, queue)
            lines.append(f"final count {queue[-3:]} {messages} {consumers}")
        except Exception as exc:
            lines.append(f"final count {queue[-3:]}")
            failed(0, exc)
    for client in range(CLIENTS):
        side.close(client)
        # What it returned reaches the consumers of the clients still open before they
        # close in turn (on RabbitMQ, without the pause, whether it did varied by run).
        time.sleep(side.quiet)
    side.open(0)
    time.sleep(side.quiet)  # requeues of the closed connections land (a quorum queue's too)
    for queue in queues:
        bodies: list[str] = []
        try:
            while (got := side.get(0, queue, True)) is not None:
                bodies.append(side.describe(got[0]))
        except Exception as exc:
            bodies.append(f"error {side.is_error(exc)}")
            side.close(0)
            side.open(0)
        if queue.endswith("-dlq"):
            bodies.sort(key=_died_in)
        lines.append(f"final {queue[-3:]}: " + " ".join(bodies))
    side.close(0)
    return lines


def _died_in(label: str) -> str:
    """The queue a dead letter's label says it died in last ("m1[-q0/expired/1]" -> "-q0").

    Each queue dead-letters in its own order, but RabbitMQ runs queues as separate
    processes: when one publish (CC) or one step puts dead letters in from several
    queues at once, how they interleave is a race. The final dead-letter queue is
    therefore compared grouped by the queue they died in, each group in its order.
    """
    start = label.find("[")
    return label[start + 1 :].split("/", 1)[0] if start >= 0 else ""


def x_death(headers: dict[str, Any] | None) -> str:
    """``x-death`` as the trace shows it: queue suffix, reason, count; newest first;
    then the quorum ``x-delivery-count`` and which of ``CC``/``BCC`` are still there."""
    headers = headers or {}
    deaths = headers.get("x-death") or []
    parts = [f"{str(d.get('queue'))[-3:]}/{d.get('reason')}/{d.get('count')}" for d in deaths]
    shown = ("[" + ",".join(parts) + "]") if parts else ""
    if "x-delivery-count" in headers:
        shown += f"d{headers['x-delivery-count']}"
    for name in ("CC", "BCC"):
        if name in headers:
            shown += f"+{name}"
    return shown
