#!/usr/bin/env python3
"""RabbitMQ tutorial 2 (work queues), the worker: prefetch 1 (fair dispatch), one second
of "work" per dot in the body (``--dot-seconds`` changes that), ack after the work.
Declares ``task_queue`` durable and quorum like the current tutorial (``--classic``:
classic, like the older ones)."""

from __future__ import annotations

import sys
import time
from typing import Any

import _peer


def main() -> int:
    p = _peer.consumer_parser(__doc__ or "")
    p.add_argument("--classic", action="store_true", help="declare task_queue classic")
    p.add_argument("--dot-seconds", type=float, default=1.0, help="work per dot in a body")
    args = p.parse_args()
    connection = _peer.connect(args.url)
    channel = connection.channel()
    arguments = None if args.classic else {"x-queue-type": "quorum"}
    channel.queue_declare(queue="task_queue", durable=True, arguments=arguments)
    _peer.say(" [*] Waiting for messages. To exit press CTRL+C")

    def callback(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        if not args.json:
            _peer.say(f" [x] Received {body.decode(errors='replace')}")
        time.sleep(body.count(b".") * args.dot_seconds)
        ch.basic_ack(delivery_tag=method.delivery_tag)
        _peer.say(_peer.as_json(method, body) if args.json else " [x] Done")

    channel.basic_qos(prefetch_count=1)
    return _peer.consume(channel, "task_queue", callback, args, auto_ack=False)


if __name__ == "__main__":
    sys.exit(main())
