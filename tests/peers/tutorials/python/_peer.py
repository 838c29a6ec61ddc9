"""What the six tutorial programs share, kept out of them so they read like the tutorials.

The RabbitMQ tutorials hard-wire ``localhost`` and print for a person. The tests need
a broker URL (``--url``, else ``$AMQP_URL``), exact bodies in and out (``--body-b64``
to publish bytes that are not text; ``--json`` to print each delivery as one JSON
line with its body in base64), and consumers that stop by themselves (``--count N``,
``--timeout SECONDS``). Nothing else differs from the tutorials' behaviour.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import pika

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"

# Ctrl-C is KeyboardInterrupt here, as in a terminal, also when the program was started with
# SIGINT ignored (Python then keeps it ignored): a background job of a non-interactive
# shell is, so under a CI script run that way the test's Ctrl-C did nothing.
signal.signal(signal.SIGINT, signal.default_int_handler)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every program takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", default=None, help="broker URL (default: $AMQP_URL, else localhost)")
    return p


def consumer_parser(description: str) -> argparse.ArgumentParser:
    """:func:`parser` plus the options that make a consumer stop and print exactly."""
    p = parser(description)
    p.add_argument("--count", type=int, default=None, help="exit 0 after this many messages")
    p.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON line per message, body base64")
    return p


def publisher_parser(description: str) -> argparse.ArgumentParser:
    """:func:`parser` plus ``--body-b64`` (repeatable: one message each, in order)."""
    p = parser(description)
    p.add_argument(
        "--body-b64",
        action="append",
        default=[],
        help="publish these exact bytes (base64) instead of the message words; repeatable",
    )
    return p


def connect(url: str | None) -> pika.BlockingConnection:
    """A blocking connection to ``url``, else ``$AMQP_URL``, else the tutorials' localhost."""
    chosen = url or os.environ.get("AMQP_URL") or DEFAULT_URL
    return pika.BlockingConnection(pika.URLParameters(chosen))


def bodies(args: argparse.Namespace, words: list[str], default: str) -> list[bytes]:
    """What to publish: the ``--body-b64`` bodies, else the words joined (the tutorials' way)."""
    if args.body_b64:
        return [base64.b64decode(b, validate=True) for b in args.body_b64]
    return [(" ".join(words) or default).encode()]


def as_json(method: Any, body: bytes) -> str:
    """One delivery as a JSON line: exchange, routing key, redelivered, body in base64."""
    return json.dumps(
        {
            "exchange": method.exchange,
            "routing_key": method.routing_key,
            "redelivered": bool(method.redelivered),
            "body_b64": base64.b64encode(body).decode(),
        }
    )


def consume(
    channel: Any,
    queue: str,
    handle: Callable[[Any, Any, Any, bytes], None],
    args: argparse.Namespace,
    *,
    auto_ack: bool,
) -> int:
    """Consume ``queue`` with ``handle`` until ``--count`` messages or ``--timeout``; the
    exit status: 1 if the timeout came before ``--count`` messages, else 0."""
    seen = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal seen
        handle(ch, method, properties, body)
        seen += 1
        if args.count is not None and seen >= args.count:
            ch.stop_consuming()

    channel.basic_consume(queue=queue, on_message_callback=on_message, auto_ack=auto_ack)
    if args.timeout is not None:
        channel.connection.call_later(args.timeout, channel.stop_consuming)
    try:
        channel.start_consuming()
    except KeyboardInterrupt:
        # As the tutorials do: Ctrl-C ends the program, and the broker requeues what was
        # unacked when the socket closes.
        print("Interrupted", flush=True)
        return 0
    if channel.connection.is_open:
        channel.connection.close()
    return 1 if args.count is not None and seen < args.count else 0


def say(line: str) -> None:
    """Print a line at once (stdout is a pipe in the tests)."""
    print(line, flush=True)


def usage(text: str) -> None:
    """The tutorials' usage line, then exit 1."""
    sys.stderr.write(text + "\n")
    sys.exit(1)
