"""The differential test on gevent://, in this tier's monkey-patched process.

The same seeded scenarios as ``tests/integration/test_differential.py`` (and the
same ``LOGBUS_DIFF_*`` variables); RabbitMQ's side runs here too, through pika
on patched sockets.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pika
import pytest

from logbus.transports import Transport, connect
from tests.differential import play, scenario
from tests.differential_sides import LogbusSide, PikaSide
from tests.integration.test_differential import _seeds, judge, report


def _opener(url: str) -> Callable[[], Transport]:
    return lambda: connect(url)


@pytest.mark.timeout(120 + 5 * len(_seeds()))
def test_gevent_broker_matches_rabbitmq(logbus_broker_url: str) -> None:
    """Every seeded scenario leaves the same observable trace on gevent:// as on RabbitMQ."""
    parameters = pika.URLParameters(logbus_broker_url)
    differences: list[str] = []
    seeds = _seeds()

    def on_rabbitmq(seed: int, quiet: float) -> list[str]:
        side = PikaSide(parameters)
        side.quiet = quiet
        try:
            return play(side, scenario(seed), f"diffg-{seed}-{secrets.token_hex(2)}")
        finally:
            side.cleanup()

    def on_gevent(seed: int, quiet: float) -> list[str]:
        url = f"gevent://diff-{secrets.token_hex(4)}"
        return play(LogbusSide(_opener(url), quiet), scenario(seed), f"diffg-{seed}")

    varied = 0
    for seed in seeds:
        difference, only_one_of_many = judge(seed, on_rabbitmq, on_gevent, "gevent")
        varied += only_one_of_many
        if difference is not None:
            differences.append(difference)
    print(report("gevent", seeds, differences, varied))
    assert not differences, "\n\n".join(differences[:5])
