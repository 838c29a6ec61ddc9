#!/usr/bin/env python3
"""RabbitMQ tutorial 4 (routing), the consumer: an exclusive server-named queue bound to
``direct_logs`` once per severity given."""

from __future__ import annotations

import sys
from typing import Any

import _peer


def main() -> int:
    p = _peer.consumer_parser(__doc__ or "")
    p.add_argument("severities", nargs="*")
    args = p.parse_args()
    if not args.severities:
        _peer.usage(f"Usage: {sys.argv[0]} [info] [warning] [error]")
    connection = _peer.connect(args.url)
    channel = connection.channel()
    channel.exchange_declare(exchange="direct_logs", exchange_type="direct")
    result = channel.queue_declare(queue="", exclusive=True)
    queue_name = result.method.queue
    for severity in args.severities:
        channel.queue_bind(exchange="direct_logs", queue=queue_name, routing_key=severity)
    _peer.say(" [*] Waiting for logs. To exit press CTRL+C")

    def callback(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        line = f" [x] {method.routing_key}:{body!r}"
        _peer.say(_peer.as_json(method, body) if args.json else line)

    return _peer.consume(channel, queue_name, callback, args, auto_ack=True)


if __name__ == "__main__":
    sys.exit(main())
