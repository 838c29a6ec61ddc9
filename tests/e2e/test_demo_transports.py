"""``logbus demo`` on every transport gives the same routing table as on ``memory://``.

The same ``--seed`` and ``--records`` make the same stream, so each subscriber
must receive the same number of records whichever engine routed them: the
in-process broker reached from threads (``memory://``), greenlets
(``gevent://``), a broker process (``process://``) or a ``logbus broker serve``
(``local://``) — and RabbitMQ, the reference for all of them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from typing import Any

import pytest

RECORDS = 150
SEED = 11
DEADLINE = 30.0


def demo(url: str) -> dict[str, Any]:
    """Run ``logbus demo --url URL --json`` with this module's seed; its report."""
    seeded = ["--records", str(RECORDS), "--seed", str(SEED)]
    proc = subprocess.run(
        [sys.executable, "-m", "logbus", "demo", "--url", url, "--json", *seeded],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def routing_table(report: dict[str, Any]) -> dict[str, int]:
    """Each subscriber's received count, by name."""
    return {sub["name"]: sub["received"] for sub in report["subscribers"]}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The demo's report on memory://."""
    return demo("memory://")


@pytest.fixture(params=["process", "gevent", "local", "amqp"])
def url(request: pytest.FixtureRequest) -> str:
    """A URL of each transport (local: a served broker; amqp: the test RabbitMQ)."""
    if request.param == "process":
        return f"process://demo-{secrets.token_hex(4)}"
    if request.param == "gevent":
        return "gevent://"
    if request.param == "local":
        return str(request.getfixturevalue("served"))
    return str(request.getfixturevalue("amqp_url"))


def test_demo_on_memory_is_complete(reference):
    """The reference run: every subscriber got what routing promised, workers got all."""
    assert reference["complete"] is True
    assert reference["emitted"] == RECORDS
    assert routing_table(reference)["fanout (all)"] == RECORDS
    assert sum(w["received"] for w in reference["workers"]) == RECORDS


def test_demo_routes_the_same_on_every_transport_as_on_memory(reference, url):
    """process://, gevent://, local:// and amqp:// complete with memory://'s routing table."""
    report = demo(url)
    assert report["complete"] is True, report
    assert routing_table(report) == routing_table(reference)
    assert sum(w["received"] for w in report["workers"]) == RECORDS
