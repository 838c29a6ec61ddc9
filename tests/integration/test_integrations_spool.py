"""The logging handler's ``spool=``: a program that logs while its broker is away keeps those
records on disk; the next program with the same spool sends them first once it is back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from logbus.spool import Spool
from tests.integration import test_integrations_faults as faults
from tests.private_broker import PrivateBroker

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]

durable_bus = faults.durable_bus  # the fixture: a durable exchange and queue, deleted after

PROGRAM = """
import json, logging, sys
from logbus.integrations import LogbusHandler

url, topology, spool, first, last = sys.argv[1:6]
handler = LogbusHandler(url, topology=topology, spool=spool, flush_timeout=20)
log = logging.getLogger("app.spool")
log.addHandler(handler)
log.setLevel(logging.INFO)
log.propagate = False
for n in range(int(first), int(last)):
    log.info("line %d", n)
handler.close()
print(json.dumps({"sent": handler.sent, "spooled": handler.spooled, "dropped": handler.dropped}))
"""


def _program(url: str, topology: Path, spool: Path, lines: range) -> dict[str, Any]:
    """Run a program that logs ``lines`` through the handler and exits; its counters."""
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, url, str(topology), str(spool), str(lines.start),
         str(lines.stop)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    counters: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return counters


def test_records_logged_while_the_broker_is_away_survive_the_program_and_arrive_in_order(
    private_broker: PrivateBroker, durable_bus: Path, tmp_path: Path, unique_name: str
) -> None:
    """Broker stopped: the program's 200 records are spooled, none dropped, and it exits.
    Broker back: the next program sends them first, then its own; every line arrives, in
    order of first arrival, and the spool is empty."""
    spool = tmp_path / "spool"
    _program(private_broker.url, durable_bus, spool, range(0))  # declares the bus
    private_broker.stop()
    try:
        away = _program(private_broker.url, durable_bus, spool, range(200))
    finally:
        private_broker.start()
    assert away == {"sent": 0, "spooled": 200, "dropped": 0}
    back = _program(private_broker.url, durable_bus, spool, range(200, 210))
    assert back == {"sent": 10, "spooled": 0, "dropped": 0}
    lines = faults.delivered_lines(private_broker.url, unique_name)
    assert list(dict.fromkeys(lines)) == list(range(210)), lines[:20]
    print(f"arrived: {len(lines)} for 210 records ({len(lines) - 210} twice)")
    left = Spool(spool)
    try:
        assert len(left) == 0
    finally:
        left.close()
