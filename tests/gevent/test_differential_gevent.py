"""The differential test on gevent://, in this tier's monkey-patched process.

The same seeded scenarios as ``tests/integration/test_differential.py`` (and the
same ``LOGBUS_DIFF_*`` variables); RabbitMQ's side runs here too, through pika
on patched sockets.
"""

from __future__ import annotations

import difflib
import secrets
from collections.abc import Callable

import pika
import pytest

from logbus.transports import Transport, connect
from tests.differential import play, scenario
from tests.differential_sides import LogbusSide, PikaSide
from tests.integration.test_differential import _QUIET, _SLOW, SEED, _seeds


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

    for seed in seeds:
        expected, got = on_rabbitmq(seed, _QUIET), on_gevent(seed, _QUIET)
        if got != expected:  # played again on both sides, slower, before it counts (_SLOW)
            expected, got = on_rabbitmq(seed, _SLOW), on_gevent(seed, _SLOW)
        if got != expected:
            diff = "\n".join(difflib.unified_diff(expected, got, "rabbitmq", "gevent", n=2))
            differences.append(f"seed {seed} (LOGBUS_DIFF_ONLY={seed % 1_000_000}):\n{diff}")
    print(
        f"differential gevent: {len(seeds)} scenarios, {len(differences)} differences "
        f"(LOGBUS_DIFF_SEED={SEED})"
    )
    assert not differences, "\n\n".join(differences[:5])
