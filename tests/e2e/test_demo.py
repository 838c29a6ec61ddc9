"""``logbus demo``: the main job end to end, in a real subprocess."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys


def test_demo_json_reports_every_subscriber_complete(logbus):
    """The JSON report shows each subscriber got exactly its routed share, exit 0."""
    proc = logbus("demo", "--json", "--records", "200", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["complete"] is True
    assert report["emitted"] == 200
    by_name = {s["name"]: s for s in report["subscribers"]}
    assert set(by_name) == {
        "fanout (all)",
        "direct kern.critical",
        "topic kern.*",
        "topic *.critical",
        "headers host=web1",
    }
    assert by_name["fanout (all)"]["received"] == 200
    for sub in report["subscribers"]:
        assert sub["received"] == sub["expected"], sub
    assert set(by_name["direct kern.critical"]["keys"]) == {"kern.critical"}
    assert all(k.startswith("kern.") for k in by_name["topic kern.*"]["keys"])
    assert all(k.endswith(".critical") for k in by_name["topic *.critical"]["keys"])


def test_demo_splits_the_work_fairly_between_two_workers(logbus):
    """Both competing workers get a fair share and together every record."""
    proc = logbus("demo", "--json", "--records", "400", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    workers = json.loads(proc.stdout)["workers"]
    counts = [w["received"] for w in workers]
    assert sum(counts) == 400
    assert min(counts) >= 400 * 0.3, counts


def test_demo_prints_a_table_on_a_terminal():
    """On a TTY the demo prints a human table, not JSON."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "logbus", "demo", "--records", "50"],
        stdout=follower,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    screen = b"".join(chunks).decode()
    assert "subscriber" in screen
    assert "worker-1" in screen
    assert "every subscriber got exactly what routing promised" in screen
    assert not screen.lstrip().startswith("{")


def test_demo_rejects_a_bad_record_count_with_usage_status(logbus):
    """A record count of 0 is a usage error (exit 2) with a one-line reason."""
    proc = logbus("demo", "--records", "0")
    assert proc.returncode == 2
    assert "records" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_with_an_unknown_url_scheme_is_a_config_error(logbus):
    """An unknown transport scheme exits 78 with one line naming the known schemes."""
    proc = logbus("demo", "--url", "carrier-pigeon://loft")
    assert proc.returncode == 78, proc.stderr
    assert "memory://" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
