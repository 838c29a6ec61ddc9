"""A one-record ``logbus emit`` imports no pydantic (issue 12's start-up budget).

pydantic and its schema building cost a one-record emit more than everything
else it does, so the core (records, topologies, settings, the TOML loader) is
plain Python and pydantic stays at the edges (sink options, service files).
These tests run the real command with ``-X importtime`` and read which modules
it imported: they fail as soon as anything on the path imports pydantic again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: What must stay off the one-record path.
PYDANTIC = {"pydantic", "pydantic_core", "pydantic_settings", "annotated_types"}


def emit_imports(
    args: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``logbus emit ARGS`` with import timings; the process and every module it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "logbus", "emit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    return proc, imported


def test_emit_to_a_topology_file_on_rabbitmq_imports_no_pydantic(scratch) -> None:
    """The path bench/cli.py measures: a topology file read, pika publishing to RabbitMQ,
    the broker's confirm; the record is sent and pydantic never imported."""
    proc, imported = emit_imports(["kern.critical", "disk", "failed"], scratch.env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "logbus" in imported and "pika" in imported  # the timings were read
    assert not PYDANTIC & imported


def test_emit_to_the_default_topology_imports_no_pydantic(tmp_path: Path) -> None:
    """No --config: the built-in default topology, settings from the environment only
    (on the in-process broker, so the shared RabbitMQ keeps no default entities)."""
    env = {"LOGBUS_CONFIG": "", "LOGBUS_URL": "memory://"}
    proc, imported = emit_imports(["user.info", "hello", "--field", "n:=1"], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "logbus" in imported
    assert not PYDANTIC & imported


@pytest.mark.parametrize("option", ["--config", "LOGBUS_CONFIG"])
def test_a_bad_topology_file_is_still_one_line_without_pydantic(
    tmp_path: Path, option: str
) -> None:
    """The TOML loader's line-precise errors come without pydantic too."""
    path = tmp_path / "bad.toml"
    path.write_text('[[exchanges]]\nname = "x"\ntype = "topics"\n')
    args = ["kern.info", "x", "--url", "memory://"]
    env = {"LOGBUS_CONFIG": str(path)} if option == "LOGBUS_CONFIG" else {"LOGBUS_CONFIG": ""}
    proc, imported = emit_imports(
        [*args, "--config", str(path)] if option == "--config" else args, env
    )
    assert proc.returncode == 78
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert errors == [
        f'logbus: error: {path}:3: [[exchanges]] #1: type = "topics" is not allowed '
        "(use one of 'fanout', 'direct', 'topic' or 'headers')"
    ]
    assert not PYDANTIC & imported
