#!/usr/bin/env python3
"""RabbitMQ tutorial 3 (publish/subscribe), the consumer: an exclusive server-named queue
bound to the fanout exchange ``logs``."""

from __future__ import annotations

import sys
from typing import Any

import _peer


def main() -> int:
    args = _peer.consumer_parser(__doc__ or "").parse_args()
    connection = _peer.connect(args.url)
    channel = connection.channel()
    channel.exchange_declare(exchange="logs", exchange_type="fanout")
    result = channel.queue_declare(queue="", exclusive=True)
    queue_name = result.method.queue
    channel.queue_bind(exchange="logs", queue=queue_name)
    _peer.say(" [*] Waiting for logs. To exit press CTRL+C")

    def callback(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        _peer.say(_peer.as_json(method, body) if args.json else f" [x] {body!r}")

    return _peer.consume(channel, queue_name, callback, args, auto_ack=True)


if __name__ == "__main__":
    sys.exit(main())
