"""``logbus status`` in real subprocesses against the real broker.

The management API's queue statistics lag the broker by its statistics
interval (5 s by default), so figures read through it are polled with a
deadline; through AMQP a passive declare answers with the current depth.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from logbus.errors import NotFound
from logbus.message import PERSISTENT, Message, Properties
from logbus.transports import connect
from tests.e2e.support import free_port, on_tty

DEADLINE = 15.0


def publish(url: str, exchange: str, key: str, count: int) -> None:
    """``count`` confirmed persistent messages to ``exchange`` with routing key ``key``."""
    message = Message(b"{}", Properties(delivery_mode=PERSISTENT), exchange, key)
    with connect(url) as transport:
        transport.publish_many([message] * count)


def status_until(logbus, env: dict[str, str], *args: str, ok: Any) -> dict[str, Any]:
    """``logbus status --json ARGS`` until ``ok(report)``; the last report after the deadline."""
    deadline = time.monotonic() + DEADLINE
    while True:
        proc = logbus("status", "--json", *args, env=env)
        assert proc.returncode == 0, proc.stderr
        report: dict[str, Any] = json.loads(proc.stdout)
        if ok(report) or time.monotonic() > deadline:
            return report


def test_status_shows_the_depth_of_a_topology_queue(logbus, scratch, via):
    """After 7 records reach the work queue, status shows 7 ready and no consumer."""
    how, env = via
    env = scratch.env | env
    assert logbus("topology", "apply", env=env).returncode == 0
    publish(env["LOGBUS_URL"], scratch.topology.exchanges[0].name, "kern.info", 7)
    queue = scratch.topology.queues[0].name

    def seven(report: dict[str, Any]) -> bool:
        # The management API lists a new queue before its first statistics (consumers
        # then unknown, None): wait for both.
        return any(
            q["name"] == queue and q["ready"] == 7 and q["consumers"] is not None
            for q in report["queues"]
        )

    report = status_until(logbus, env, ok=seven)
    assert report["via"] == how
    (row,) = report["queues"]
    assert (row["name"], row["ready"], row["consumers"]) == (queue, 7, 0)
    assert report["missing"] == []


def test_status_names_the_broker_and_its_version(logbus, scratch, via):
    """Product and version come from either way; node and alarms only from the management API."""
    how, env = via
    proc = logbus("status", "--json", env=scratch.env | env)
    assert proc.returncode == 0, proc.stderr
    broker = json.loads(proc.stdout)["broker"]
    assert broker["product"] == "RabbitMQ"
    assert broker["version"]
    if how == "management":
        assert broker["node"]
        assert isinstance(broker["alarms"], list)
    else:
        assert broker["alarms"] is None


def test_status_lists_what_the_topology_lacks_on_the_broker(logbus, scratch, via):
    """Nothing declared: exit 0, and the queue and every exchange are reported missing."""
    _how, env = via
    proc = logbus("status", "--json", env=scratch.env | env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["queues"] == []
    t = scratch.topology
    assert f"queue '{t.queues[0].name}'" in report["missing"]
    assert {f"exchange '{e.name}'" for e in t.exchanges} <= set(report["missing"])


def test_status_of_a_named_queue_outside_the_topology(logbus, scratch, amqp_url, unique_name):
    """--queue NAME shows that queue's depth, whatever the config says."""
    name = f"{unique_name}-other"
    with connect(amqp_url) as transport:
        transport.declare_queue(name, durable=False)
    try:
        publish(amqp_url, "", name, 3)  # the default exchange routes by queue name
        env = scratch.env | {"LOGBUS_MANAGEMENT_URL": "off"}
        proc = logbus("status", "--json", "--queue", name, env=env)
        assert proc.returncode == 0, proc.stderr
        (row,) = json.loads(proc.stdout)["queues"]
        assert (row["name"], row["ready"]) == (name, 3)
    finally:
        with connect(amqp_url) as transport, contextlib.suppress(NotFound):
            transport.delete_queue(name)


def test_status_prints_a_table_on_a_terminal(logbus, scratch):
    """On a TTY, status shows the broker line, the queue table and its queue."""
    assert logbus("topology", "apply", env=scratch.env).returncode == 0
    code, screen = on_tty(["status", "--management-url", "off"], scratch.env)
    assert code == 0, screen
    assert "RabbitMQ" in screen
    assert "ready" in screen
    assert "consumers" in screen
    assert scratch.topology.queues[0].name in screen
    assert "bindings: unknown" in screen


def test_status_of_an_unreachable_broker_is_exit_69_with_one_line_and_no_password(logbus):
    """No broker on the port: one line on stderr, exit 69, and the password is not shown."""
    url = f"amqp://guest:Sup3rSecret@127.0.0.1:{free_port()}/%2F"
    env = {"LOGBUS_CONFIG": "", "LOGBUS_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}"}
    proc = logbus("status", "--url", url, env=env)
    assert proc.returncode == 69, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Sup3rSecret" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
