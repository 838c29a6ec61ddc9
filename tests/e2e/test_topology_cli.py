"""``logbus topology apply|show|diff`` in real subprocesses against the real broker.

Each test declares its own topology (the default one under a unique prefix) and
deletes it afterwards. Tests that need the management API skip when it does not
answer; the AMQP-only variants point ``--management-url`` at a closed port, so
the fallback is what they exercise.
"""

from __future__ import annotations

import json

import pytest

from logbus.topology import Topology, default
from tests.e2e.support import free_port, management_env, on_tty


def test_apply_twice_creates_then_finds_everything(logbus, scratch):
    """A second apply succeeds too and reports every exchange and queue as existing."""
    first = logbus("topology", "apply", "--json", env=scratch.env)
    assert first.returncode == 0, first.stderr
    second = logbus("topology", "apply", "--json", env=scratch.env)
    assert second.returncode == 0, second.stderr
    states = [
        {a["name"]: a["state"] for a in json.loads(p.stdout)["applied"] if a["entity"] != "binding"}
        for p in (first, second)
    ]
    names = {e.name for e in scratch.topology.exchanges} | {q.name for q in scratch.topology.queues}
    assert states[0] == dict.fromkeys(names, "created")
    assert states[1] == dict.fromkeys(names, "existed")


def test_apply_prints_one_line_per_entity_on_a_terminal(scratch):
    """On a TTY, apply lists each exchange, queue and binding on its own line."""
    code, screen = on_tty(["topology", "apply"], scratch.env)
    assert code == 0, screen
    lines = [line for line in screen.splitlines() if line.startswith(("created", "bound"))]
    t = scratch.topology
    assert len(lines) == len(t.exchanges) + len(t.queues) + len(t.bindings)
    assert f"created  queue     {t.queues[0].name}" in screen


def test_apply_over_another_max_length_is_a_config_error(logbus, scratch):
    """An existing queue with another x-max-length: exit 78, one line naming both values."""
    assert logbus("topology", "apply", env=scratch.env).returncode == 0
    scratch.path.write_text(
        scratch.path.read_text().replace("max_length = 100000", "max_length = 500")
    )
    proc = logbus("topology", "apply", env=scratch.env)
    assert proc.returncode == 78, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "x-max-length" in proc.stderr
    assert "broker has 100000, config has 500" in proc.stderr


def test_show_prints_the_default_topology_as_json(logbus):
    """Without a config, show --json is the built-in default, with no broker needed."""
    proc = logbus(
        "topology",
        "show",
        "--json",
        env={"LOGBUS_CONFIG": "", "LOGBUS_URL": "amqp://nowhere.invalid"},
    )
    assert proc.returncode == 0, proc.stderr
    assert Topology.from_dict(json.loads(proc.stdout)) == default()


def test_show_prints_a_table_of_the_default_topology_on_a_terminal():
    """On a TTY, show lists exchanges, the queue with its arguments, bindings and emit targets."""
    code, screen = on_tty(["topology", "show"], {"LOGBUS_CONFIG": ""})
    assert code == 0, screen
    for part in ("exchanges", "logbus.headers", "headers", "x-max-length=100000", "bindings"):
        assert part in screen
    assert "logbus.topic -> logbus.fanout (exchange) key '#'" in screen
    assert "key {facility}.{severity}" in screen


def test_diff_after_apply_is_in_sync(logbus, scratch, via):
    """Right after apply, diff exits 0, through the management API or AMQP."""
    how, env = via
    assert logbus("topology", "apply", env=scratch.env).returncode == 0
    proc = logbus("topology", "diff", "--json", env=scratch.env | env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert (report["in_sync"], report["via"]) == (True, how)


def test_diff_names_the_property_and_both_values_after_the_config_changed(logbus, scratch):
    """Another max_length in the config: exit 1, naming x-max-length, 500 and 100000."""
    env = scratch.env | management_env(scratch.env["LOGBUS_URL"], "management")
    assert logbus("topology", "apply", env=env).returncode == 0
    scratch.path.write_text(
        scratch.path.read_text().replace("max_length = 100000", "max_length = 500")
    )
    proc = logbus("topology", "diff", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    queue = scratch.topology.queues[0].name
    assert report["different"] == [
        {
            "entity": "queue",
            "name": queue,
            "property": "x-max-length",
            "config": 500,
            "broker": 100000,
        }
    ]
    assert report["missing"] == []


def test_diff_lists_every_missing_entity_of_an_undeclared_topology(logbus, scratch, via):
    """Nothing declared: exit 1 and every exchange and queue is listed as missing."""
    how, env = via
    proc = logbus("topology", "diff", "--json", env=scratch.env | env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    missing = {(m["entity"], m["name"]) for m in report["missing"]}
    t = scratch.topology
    assert {("exchange", e.name) for e in t.exchanges} <= missing
    assert ("queue", t.queues[0].name) in missing
    bindings = {m["name"] for m in report["missing"] if m["entity"] == "binding"}
    assert len(bindings) == (len(t.bindings) if how == "management" else 0)


def test_diff_without_the_management_api_falls_back_and_says_so(scratch, amqp_url):
    """With the API on a closed port, diff uses passive declares and says what it left out."""
    env = scratch.env | management_env(amqp_url, "amqp")
    code, screen = on_tty(["topology", "apply"], scratch.env)
    assert code == 0, screen
    code, screen = on_tty(["topology", "diff"], env)
    assert code == 0, screen
    port = env["LOGBUS_MANAGEMENT_URL"].rsplit(":", 1)[1]
    assert "through AMQP passive declares" in screen
    assert f"127.0.0.1:{port} does not answer" in screen
    assert "fell back to AMQP" in screen
    assert "not checked: bindings" in screen
    assert "in sync (as far as AMQP can tell)" in screen


@pytest.mark.parametrize("command", ["apply", "diff"])
def test_an_unreachable_broker_is_exit_69_with_one_line_and_no_password(logbus, command):
    """No broker on the port (and no management API): one line on stderr, exit 69, no password."""
    url = f"amqp://guest:Sup3rSecret@127.0.0.1:{free_port()}/%2F"
    env = {"LOGBUS_CONFIG": "", "LOGBUS_MANAGEMENT_URL": f"http://127.0.0.1:{free_port()}"}
    proc = logbus("topology", command, "--url", url, env=env)
    assert proc.returncode == 69, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Sup3rSecret" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
