"""What the ``logbus`` command does before its first record: no scan for pydantic plugins.

A one-record emit imports no pydantic at all; commands that do use it (a worker's
sink options, service files) still must not read every package's entry points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

PLUGIN = """
import sys

print("fakeplug loaded", file=sys.stderr)


class Plugin:
    def new_schema_validator(self, *args, **kwargs):
        return None, None, None


plugin = Plugin()
"""


def _installed_plugin(root: Path) -> dict[str, str]:
    """A pydantic plugin installed as any package would: its module and an entry point."""
    info = root / "fakeplug-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[pydantic]\nfake = fakeplug:plugin\n")
    (root / "fakeplug.py").write_text(PLUGIN)
    return {"PYTHONPATH": str(root)}


#: Commands that run without a broker: a one-record emit, and a worker whose sink
#: options (pydantic models) are refused before it connects.
COMMANDS = {
    "emit": ("emit", "user.info", "hello", "--url", "memory://"),
    "worker": ("worker", "--url", "memory://", "--queue", "q", "--sink", "console?bogus=1"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_commands_do_not_load_pydantic_plugins(logbus: Any, tmp_path: Path, command: str) -> None:
    """`logbus emit` and `logbus worker` read no package's entry points for pydantic
    plugins (a cost of every start-up), so an installed plugin is not loaded."""
    env = _installed_plugin(tmp_path)
    proc = logbus(*COMMANDS[command], env=env)
    assert proc.returncode in (0, 78), proc.stderr
    assert "fakeplug loaded" not in proc.stderr


def test_an_empty_pydantic_disable_plugins_lets_plugins_in(logbus: Any, tmp_path: Path) -> None:
    """PYDANTIC_DISABLE_PLUGINS set but empty is the way to have pydantic plugins again
    (in a command that uses pydantic: the worker's sink options)."""
    env = {**_installed_plugin(tmp_path), "PYDANTIC_DISABLE_PLUGINS": ""}
    proc = logbus(*COMMANDS["worker"], env=env)
    assert proc.returncode == 78, proc.stderr
    assert "fakeplug loaded" in proc.stderr
