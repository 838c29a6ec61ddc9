#!/usr/bin/env python3
"""RabbitMQ tutorial 5 (topics), the consumer: an exclusive server-named queue bound to
``topic_logs`` once per binding key given (``kern.*``, ``*.critical``, ``#``)."""

from __future__ import annotations

import sys
from typing import Any

import _peer


def main() -> int:
    p = _peer.consumer_parser(__doc__ or "")
    p.add_argument("binding_keys", nargs="*")
    args = p.parse_args()
    if not args.binding_keys:
        _peer.usage(f"Usage: {sys.argv[0]} [binding_key]...")
    connection = _peer.connect(args.url)
    channel = connection.channel()
    channel.exchange_declare(exchange="topic_logs", exchange_type="topic")
    result = channel.queue_declare(queue="", exclusive=True)
    queue_name = result.method.queue
    for binding_key in args.binding_keys:
        channel.queue_bind(exchange="topic_logs", queue=queue_name, routing_key=binding_key)
    _peer.say(" [*] Waiting for logs. To exit press CTRL+C")

    def callback(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        line = f" [x] {method.routing_key}:{body!r}"
        _peer.say(_peer.as_json(method, body) if args.json else line)

    return _peer.consume(channel, queue_name, callback, args, auto_ack=True)


if __name__ == "__main__":
    sys.exit(main())
