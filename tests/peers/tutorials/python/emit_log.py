#!/usr/bin/env python3
"""RabbitMQ tutorial 3 (publish/subscribe), the publisher: a fanout exchange ``logs``."""

from __future__ import annotations

import _peer


def main() -> None:
    p = _peer.publisher_parser(__doc__ or "")
    p.add_argument("words", nargs="*")
    args = p.parse_args()
    connection = _peer.connect(args.url)
    channel = connection.channel()
    channel.exchange_declare(exchange="logs", exchange_type="fanout")
    for message in _peer.bodies(args, args.words, "info: Hello World!"):
        channel.basic_publish(exchange="logs", routing_key="", body=message)
        _peer.say(f" [x] Sent {message!r}")
    connection.close()


if __name__ == "__main__":
    main()
