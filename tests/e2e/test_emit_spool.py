"""``logbus emit --spool DIR`` with the broker away: exit 0 with a line saying what was
spooled; with the broker back, the next emit sends the spool first, in order, and empties it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from logbus.spool import Spool
from tests.private_broker import PrivateBroker

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def _emit(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logbus", "emit", "user.info", *args, "--url", url],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _drain(url: str, queue: str) -> list[str]:
    """The queue's records' messages, in order, read with plain pika."""
    import json

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        out = []
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return out
            out.append(json.loads(body)["message"])
    finally:
        connection.close()


def _assert_empty(directory: Path) -> None:
    left = Spool(directory)
    try:
        assert len(left) == 0
    finally:
        left.close()


@pytest.fixture
def stopped(healthy_private_broker: PrivateBroker) -> Iterator[PrivateBroker]:
    """The private node, stopped (healthy_private_broker starts it again after the test)."""
    healthy_private_broker.stop()
    yield healthy_private_broker


def test_emit_spools_while_the_broker_is_away_and_sends_the_spool_first_when_it_is_back(
    stopped: PrivateBroker, tmp_path: Path, unique_name: str
) -> None:
    """Two emits with the broker stopped exit 0 saying they spooled; with it back, a third
    sends the spooled records first, in order, each at least once, and the spool is empty."""
    spool, queue = tmp_path / "spool", unique_name
    lines = "".join(f"rec {i}\n" for i in range(10))
    batch = _emit(stopped.url, "--queue", queue, "--spool", str(spool), "-", stdin=lines)
    assert batch.returncode == 0, batch.stderr
    assert f"10 records spooled in {spool}" in batch.stderr
    one = _emit(stopped.url, "--queue", queue, "--spool", str(spool), "rec", "10")
    assert one.returncode == 0, one.stderr
    assert f"1 record spooled in {spool}" in one.stderr
    assert "(11 waiting)" in one.stderr

    stopped.start()
    back = _emit(stopped.url, "--queue", queue, "--spool", str(spool), "rec", "11")
    assert back.returncode == 0, back.stderr
    assert "spooled" not in back.stderr
    got = _drain(stopped.url, queue)
    expected = [f"rec {i}" for i in range(12)]
    assert list(dict.fromkeys(got)) == expected, got  # in order, none missing
    print(f"arrived: {len(got)} for {len(expected)} records ({len(got) - len(expected)} twice)")
    _assert_empty(spool)


def test_emit_with_a_spool_and_the_broker_up_spools_nothing(
    healthy_private_broker: PrivateBroker, tmp_path: Path, unique_name: str
) -> None:
    """The spool changes nothing while the broker takes the records: confirmed, none kept."""
    spool = tmp_path / "spool"
    done = _emit(healthy_private_broker.url, "--queue", unique_name, "--spool", str(spool), "x")
    assert (done.returncode, "spooled" in done.stderr) == (0, False), done.stderr
    assert _drain(healthy_private_broker.url, unique_name) == ["x"]
    _assert_empty(spool)
