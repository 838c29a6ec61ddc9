"""The in-process broker against a live RabbitMQ, on seeded operation sequences.

Every scenario of :mod:`tests.differential` is played once on RabbitMQ through
plain pika and once on each in-process transport; the observed traces (replies,
error codes, deliveries with their redelivered flag, counts, and each queue's
final contents with ``x-death``) must be equal. RabbitMQ is the reference.

``LOGBUS_DIFF_SCENARIOS`` (default 40) sets how many scenarios run per transport,
``LOGBUS_DIFF_SEED`` (default 1) which ones: scenario ``i`` uses seed
``SEED * 1_000_000 + i``, printed with any difference so it can be replayed alone
(``LOGBUS_DIFF_SEED=... LOGBUS_DIFF_ONLY=i``). ``LOGBUS_DIFF_FIRST`` (default 0) is
the first ``i``, so that a long run can be split into parts run side by side.
gevent:// needs a monkey-patched process of its own:
``tests/gevent/test_differential_gevent.py`` runs it there.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pika
import pytest

from logbus.transports import connect
from tests.differential import play, scenario
from tests.differential_sides import LogbusSide, PikaSide

SCENARIOS = int(os.environ.get("LOGBUS_DIFF_SCENARIOS", "40"))
SEED = int(os.environ.get("LOGBUS_DIFF_SEED", "1"))
ONLY = os.environ.get("LOGBUS_DIFF_ONLY")
FIRST = int(os.environ.get("LOGBUS_DIFF_FIRST", "0"))
_PROCESS_URL = f"process://diff-{secrets.token_hex(4)}"


def _seeds() -> list[int]:
    if ONLY is not None:
        return [SEED * 1_000_000 + int(i) for i in ONLY.split(",")]
    return [SEED * 1_000_000 + i for i in range(FIRST, FIRST + SCENARIOS)]


@pytest.fixture(scope="module")
def reference(amqp_url: str) -> Iterator[Callable[..., list[str]]]:
    """RabbitMQ's trace of a seed, played once per module and remembered."""
    parameters = pika.URLParameters(amqp_url)
    traces: dict[int, list[str]] = {}

    def trace(seed: int, quiet: float | None = None) -> list[str]:
        """The remembered trace; with ``quiet``, played again with that quiet window."""
        if seed not in traces or quiet is not None:
            side = PikaSide(parameters)
            if quiet is not None:
                side.quiet = quiet
            try:
                traces[seed] = play(side, scenario(seed), f"diff-{seed}-{secrets.token_hex(2)}")
            finally:
                side.cleanup()
        return traces[seed]

    yield trace


@contextlib.contextmanager
def _broker(transport: str) -> Iterator[str]:
    """The URL of a broker for one scenario: a fresh one for memory:// and local://
    (a BrokerServer of its own, closed after), the module's process:// broker."""
    if transport == "memory":
        yield f"memory://diff-{secrets.token_hex(4)}"
        return
    if transport == "process":
        yield _PROCESS_URL
        return
    from logbus.broker import Broker
    from logbus.broker.server import BrokerServer, listen

    directory = tempfile.mkdtemp(prefix="logbus-diff-")  # short: AF_UNIX paths are limited
    path = os.path.join(directory, "broker.sock")
    listener, key = listen(path)
    broker = Broker(f"diff-local-{secrets.token_hex(3)}")
    try:
        with BrokerServer(broker, listener, authkey=key):
            yield f"local://{path}"
    finally:
        broker.close()
        shutil.rmtree(directory, ignore_errors=True)


# Quiet this long after a step: well past a 1 ms TTL, and long enough for a delivery
# through a broker process to arrive on a loaded machine (0.02 s was not, under load 16).
_QUIET = 0.05
# A scenario that differs is played again on both sides with this window before it counts:
# on a busy machine RabbitMQ's redeliveries after a nack came more than 0.05 s late, so
# they were listed under the next step, and every transport "differed" from that trace.
_SLOW = 0.3
# A scenario that still differs is played this many more times on RabbitMQ: where RabbitMQ
# itself is not deterministic (a quorum queue whose consumers' connection closes while they
# hold messages: x-delivery-count and the dead-letter order vary from run to run), a trace
# that is one of RabbitMQ's own outcomes is not a difference.
_REPLAYS = 4

Play = Callable[[int, float], list[str]]


def judge(seed: int, rabbitmq: Play, side: Play, name: str) -> tuple[str | None, bool]:
    """The difference of ``side``'s trace of ``seed`` from RabbitMQ's (None if there is
    none), and whether it matched only one of RabbitMQ's varying outcomes."""
    expected, got = rabbitmq(seed, _QUIET), side(seed, _QUIET)
    if got == expected:
        return None, False
    expected, got = rabbitmq(seed, _SLOW), side(seed, _SLOW)  # slower, before it counts
    if got == expected:
        return None, False
    outcomes = [rabbitmq(seed, _SLOW) for _ in range(_REPLAYS)]
    if got in outcomes:
        return None, True
    diff = "\n".join(difflib.unified_diff(expected, got, "rabbitmq", name, n=2))
    varied = " (RabbitMQ's own outcome varied)" if any(o != expected for o in outcomes) else ""
    return f"seed {seed} (LOGBUS_DIFF_ONLY={seed % 1_000_000}){varied}:\n{diff}", False


def report(name: str, seeds: list[int], differences: list[str], varied: int) -> str:
    """The line the run prints: scenarios, differences, and RabbitMQ's own variations."""
    return (
        f"differential {name}: {len(seeds)} scenarios, {len(differences)} differences "
        f"({varied} matched one of RabbitMQ's varying outcomes; LOGBUS_DIFF_SEED={SEED}, "
        f"seeds {seeds[0]}..{seeds[-1]})"
    )


@pytest.mark.timeout(120 + 10 * len(_seeds()))  # about 1.5 s a scenario on RabbitMQ
@pytest.mark.parametrize("transport", ["memory", "process", "local"])
def test_in_process_broker_matches_rabbitmq(
    transport: str,
    reference: Callable[..., list[str]],
) -> None:
    """Every seeded scenario leaves the same observable trace as on RabbitMQ."""
    differences: list[str] = []
    varied = 0
    seeds = _seeds()

    def on_transport(seed: int, quiet: float) -> list[str]:
        with _broker(transport) as url:
            side = LogbusSide(lambda url=url: connect(url), quiet)
            return play(side, scenario(seed), f"diff-{seed}-{secrets.token_hex(2)}")

    def on_rabbitmq(seed: int, quiet: float) -> list[str]:
        return reference(seed, None if quiet == _QUIET else quiet)

    for seed in seeds:
        difference, only_one_of_many = judge(seed, on_rabbitmq, on_transport, transport)
        varied += only_one_of_many
        if difference is not None:
            differences.append(difference)
    print(report(transport, seeds, differences, varied))
    assert not differences, "\n\n".join(differences[:5])
