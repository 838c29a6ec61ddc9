#!/usr/bin/env python3
"""RabbitMQ tutorial 2 (work queues), the producer: persistent messages on the durable
``task_queue``, declared quorum as the current tutorial does (``--classic``: as the
older tutorials did, a classic queue)."""

from __future__ import annotations

import _peer
import pika


def main() -> None:
    p = _peer.publisher_parser(__doc__ or "")
    p.add_argument("--classic", action="store_true", help="declare task_queue classic")
    p.add_argument("words", nargs="*")
    args = p.parse_args()
    connection = _peer.connect(args.url)
    channel = connection.channel()
    # Each publish confirmed (the tutorial does not): under load, the last few of 30
    # unconfirmed messages to the quorum task_queue once never arrived.
    channel.confirm_delivery()
    arguments = None if args.classic else {"x-queue-type": "quorum"}
    channel.queue_declare(queue="task_queue", durable=True, arguments=arguments)
    for message in _peer.bodies(args, args.words, "Hello World!"):
        channel.basic_publish(
            exchange="",
            routing_key="task_queue",
            body=message,
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
        _peer.say(f" [x] Sent {message!r}")
    connection.close()


if __name__ == "__main__":
    main()
