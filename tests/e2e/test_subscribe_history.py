"""``logbus subscribe --since/--from-start/--until`` end to end: real subprocesses reading the
history stream, on RabbitMQ and on the in-process broker (``process://``, ``local://``).

Each test has a topology of its own: the default one under a unique prefix, its
history stream included. Records are emitted through the Python API, before
the subscriber starts (history) and after it is bound (live).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from logbus import Emitter
from logbus.testing import prefixed
from logbus.topology import default, dumps
from logbus.transports import connect
from tests.e2e.support import Deployment, one_error_line
from tests.e2e.test_subscribe import Subscription


@pytest.fixture(params=["amqp", "process", "local"])
def deployment(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: str
) -> Iterator[tuple[str, Deployment]]:
    """A broker URL of each kind and a prefixed default topology written for it."""
    topology = prefixed(default(), f"{unique_name}.")
    config = tmp_path / "topology.toml"
    config.write_text(dumps(topology))
    keep = None
    if request.param == "amqp":
        url = str(request.getfixturevalue("amqp_url"))
    elif request.param == "local":
        url = str(request.getfixturevalue("served"))
    else:
        # Opened here first: the broker process lives as long as this test's process, and
        # the subprocesses find it through the environment this exports.
        url = f"process://hist-{unique_name[-8:]}"
        keep = connect(url)
    yield url, Deployment(config, topology, f"{unique_name}.", None)
    if keep is not None:
        keep.close()
    if request.param == "amqp":
        with connect(url) as transport:
            for q in topology.queues:
                transport.delete_queue(q.name)
            for e in topology.exchanges:
                transport.delete_exchange(e.name)


def emit_all(url: str, deployment: Deployment, *records: tuple[str, str]) -> None:
    """Emit (key, message) records through the Python API, each confirmed."""
    with Emitter(url, topology=deployment.topology) as emitter:
        for key, message in records:
            emitter.emit(key, message)


def wait_lines(subscription: Subscription, n: int, timeout: float = 30) -> None:
    """Wait until the subscriber printed ``n`` lines (or ended, or time ran out)."""
    deadline = time.monotonic() + timeout
    while len(subscription.out) < n and subscription.proc.poll() is None:
        assert time.monotonic() < deadline, f"only {subscription.out} after {timeout}s"
        time.sleep(0.05)


def test_since_prints_the_matching_history_then_new_records(deployment):
    """`subscribe --since 1m 'kern.*'`: the kern records of the last minute, then new ones."""
    url, dep = deployment
    emit_all(url, dep, ("kern.info", "k-old-1"), ("mail.info", "m-old"), ("kern.error", "k-old-2"))
    sub = Subscription(url, dep, "--since", "1m", "--json", "--count", "3", "kern.*")
    sub.wait_ready()
    wait_lines(sub, 2)
    emit_all(url, dep, ("auth.info", "a-new"), ("kern.warning", "k-new"))
    assert sub.finish() == 0, sub.stderr
    assert [r["message"] for r in sub.records] == ["k-old-1", "k-old-2", "k-new"]
    assert [r["key"] for r in sub.records] == ["kern.info", "kern.error", "kern.warning"]


def test_since_a_time_leaves_out_what_was_stamped_before_and_until_ends_it(deployment, logbus):
    """--since POINT --until 0s: only what came after POINT, then exit 0 on its own."""
    url, dep = deployment
    emit_all(url, dep, ("kern.info", "before"))
    point = datetime.now(UTC).isoformat()
    emit_all(url, dep, ("kern.info", "after"), ("mail.info", "not kern"))
    proc = logbus(
        "subscribe", "--since", point, "--until", "0s", "--json", "kern.*",
        "--url", url, "--config", str(dep.config),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if '"message":"after"' in line]
    assert len(proc.stdout.splitlines()) == 1, proc.stdout


def test_history_of_a_topology_without_a_stream_is_a_configuration_error(logbus, tmp_path):
    """Exit 78 and one line saying the topology has no history stream."""
    config = tmp_path / "t.toml"
    config.write_text('[[exchanges]]\nname = "t"\ntype = "topic"\n')
    proc = logbus("subscribe", "--since", "10m", "kern.*", "--url", "memory://", "--config", config)
    assert proc.returncode == 78
    assert one_error_line(proc.stderr).startswith(
        "logbus: error: this topology has no history stream:"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "10 minutes"], "is neither an RFC 3339 time"),
        (["--since", "1m", "--offset", "3"], "not --since and --offset"),
        (["--until", "1m"], "--until needs a place to start"),
    ],
)
def test_bad_history_options_are_usage_errors(logbus, args, words):
    """A bad time, two starting points, --until alone: exit 2, one line."""
    proc = logbus("subscribe", *args, "kern.*", "--url", "memory://")
    assert proc.returncode == 2
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_in_the_middle_of_a_replay_exits_0_at_once(deployment):
    """SIGTERM while a replay is printing (the stream holds more than it can show at
    once) stops it within seconds with exit 0, at whatever point it arrives; a signal
    that raised an exception into the transport's code could leave one of its locks
    held, and the close after it wait forever."""
    url, dep = deployment
    emit_all(url, dep, *(("kern.info", f"record {n}") for n in range(3000)))
    for delay in (0.0, 0.05, 0.1, 0.2, 0.3):
        sub = Subscription(url, dep, "--offset", "0", "--all", "--json")
        sub.wait_ready()
        time.sleep(delay)
        sub.proc.send_signal(signal.SIGTERM)
        assert sub.finish(timeout=10) == 0, sub.stderr
        assert "Traceback" not in sub.stderr
