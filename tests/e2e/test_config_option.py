"""`--config` (the topology file) means the same on `query` and `broker serve` as elsewhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from logbus.demo import demo_topology
from logbus.topology import dumps
from tests.e2e.test_broker_serve import Running, sock  # noqa: F401 (the socket fixture)
from tests.e2e.test_query import sqlite_archive  # noqa: F401 (the archive fixture)


def test_query_takes_a_topology_file(logbus: Any, sqlite_archive: str, tmp_path: Path) -> None:  # noqa: F811
    """`logbus query --config FILE` runs with a valid topology file."""
    config = tmp_path / "logbus.toml"
    config.write_text(dumps(demo_topology("cfg.")))
    proc = logbus("query", "--config", str(config), "--archive", sqlite_archive, "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 6


def test_query_with_a_missing_topology_file_is_a_config_error(
    logbus: Any,
    sqlite_archive: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A --config that does not exist is one line naming it, exit 78, as for other commands."""
    missing = tmp_path / "nope.toml"
    proc = logbus("query", "--config", str(missing), "--archive", sqlite_archive)
    assert proc.returncode == 78, proc.stderr
    assert proc.stderr.count("\n") == 1 and str(missing) in proc.stderr


def test_broker_serve_declares_the_topology_file(logbus: Any, sock: str, tmp_path: Path) -> None:  # noqa: F811
    """`broker serve --config FILE` declares that topology before clients connect."""
    config = tmp_path / "logbus.toml"
    config.write_text(dumps(demo_topology("served.")))
    server = Running("broker", "serve", "--listen", sock, "--config", str(config))
    try:
        server.wait_for("listening on")
        proc = logbus("status", "--json", "--url", f"local://{sock}", "--config", str(config))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [q["name"] for q in report["queues"]] == ["served.logbus.tasks"]
    assert report["missing"] == []


def test_broker_serve_with_a_bad_topology_file_is_a_config_error(
    logbus: Any,
    sock: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A topology file that does not parse stops `broker serve` before it listens: 78."""
    config = tmp_path / "logbus.toml"
    config.write_text("[[exchanges]]\nname = \n")
    proc = logbus("broker", "serve", "--listen", sock, "--config", str(config))
    assert proc.returncode == 78, proc.stderr
    assert str(config) in proc.stderr and not Path(sock).exists()
