#!/usr/bin/env python3
"""RabbitMQ tutorial 5 (topics), the publisher: a topic exchange ``topic_logs`` keyed
``<facility>.<severity>`` (or anything the caller gives)."""

from __future__ import annotations

import _peer


def main() -> None:
    p = _peer.publisher_parser(__doc__ or "")
    p.add_argument("routing_key", nargs="?", default="anonymous.info")
    p.add_argument("words", nargs="*")
    args = p.parse_args()
    connection = _peer.connect(args.url)
    channel = connection.channel()
    channel.exchange_declare(exchange="topic_logs", exchange_type="topic")
    for message in _peer.bodies(args, args.words, "Hello World!"):
        channel.basic_publish(exchange="topic_logs", routing_key=args.routing_key, body=message)
        _peer.say(f" [x] Sent {args.routing_key}:{message!r}")
    connection.close()


if __name__ == "__main__":
    main()
