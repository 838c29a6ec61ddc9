#!/usr/bin/env python3
"""RabbitMQ tutorial 4 (routing), the publisher: a direct exchange ``direct_logs`` keyed
by severity alone."""

from __future__ import annotations

import _peer


def main() -> None:
    p = _peer.publisher_parser(__doc__ or "")
    p.add_argument("severity", nargs="?", default="info")
    p.add_argument("words", nargs="*")
    args = p.parse_args()
    connection = _peer.connect(args.url)
    channel = connection.channel()
    channel.exchange_declare(exchange="direct_logs", exchange_type="direct")
    for message in _peer.bodies(args, args.words, "Hello World!"):
        channel.basic_publish(exchange="direct_logs", routing_key=args.severity, body=message)
        _peer.say(f" [x] Sent {args.severity}:{message!r}")
    connection.close()


if __name__ == "__main__":
    main()
