"""What the ``logbus`` command does before its first record: no scan for pydantic plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def test_emit_does_not_load_pydantic_plugins(logbus: Any, tmp_path: Path) -> None:
    """One `logbus emit` reads no package's entry points for pydantic plugins (a cost
    of every start-up), so an installed plugin is not loaded."""
    env = _installed_plugin(tmp_path)
    proc = logbus("emit", "user.info", "hello", "--url", "memory://", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "fakeplug loaded" not in proc.stderr


def test_an_empty_pydantic_disable_plugins_lets_plugins_in(logbus: Any, tmp_path: Path) -> None:
    """PYDANTIC_DISABLE_PLUGINS set but empty is the way to have pydantic plugins again."""
    env = {**_installed_plugin(tmp_path), "PYDANTIC_DISABLE_PLUGINS": ""}
    proc = logbus("emit", "user.info", "hello", "--url", "memory://", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "fakeplug loaded" in proc.stderr
