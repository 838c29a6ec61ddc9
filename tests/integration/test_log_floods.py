"""Repeated events are summarised, not logged one line each: reconnect attempts here
(per-record failures: tests/e2e/test_worker.py)."""

from __future__ import annotations

import logging
import re

import pytest

import logbus.transports.amqp.pika_core as amqp_io
from logbus.transports.amqp import AmqpTransport
from tests.proxy import Proxy, with_address
from tests.support import wait_until


def test_reconnect_attempts_are_reported_with_their_backoff_and_summarised(
    amqp_url: str,
    proxy: Proxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    unique_name: str,
) -> None:
    """A broker gone for good: the first failed attempt is a warning with its backoff;
    the dozens after it come as one line per window saying how many more there were."""
    monkeypatch.setattr(amqp_io._repeats, "window", 1.0)  # a 1 s window: a short test
    caplog.set_level(logging.WARNING, logger="logbus.transports.amqp")
    url = with_address(amqp_url, "127.0.0.1", proxy.port)
    transport = AmqpTransport(
        url, connection_name=f"floods-{unique_name}", reconnect_max_delay=0.02
    )
    try:
        proxy.cut()  # the connection drops and every attempt after is refused

        def failures() -> list[str]:
            return [
                r.getMessage()
                for r in list(caplog.records)
                if "amqp.reconnect_failed" in r.getMessage()
            ]

        def attempts() -> int:
            made = [int(m) for line in failures() for m in re.findall(r" attempt=(\d+)", line)]
            return max(made, default=0)

        wait_until(lambda: attempts() >= 30, 30, "thirty reconnect attempts")
    finally:
        transport.close()
    lines = failures()
    assert "retry_in=" in lines[0]
    assert any("more like this in the last" in line for line in lines), lines
    assert len(lines) < attempts() / 3, lines
