"""The package's folders import one way: the arrows the architecture promises, read from code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "logbus"


def imported_by(path: Path) -> set[str]:
    """Every logbus module a file imports, anywhere in it (functions and TYPE_CHECKING too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "logbus" or name.startswith("logbus.")}


def imports_of(folder: str) -> dict[str, set[str]]:
    """File (relative to logbus/) -> the logbus modules it imports, for every file of ``folder``."""
    return {
        str(path.relative_to(PACKAGE)): imported_by(path)
        for path in sorted((PACKAGE / folder).glob("**/*.py"))
    }


def reaching(folder: str, target: str) -> list[str]:
    """The files of ``folder`` that import ``target`` or a module under it."""
    return [
        f"{file}: {name}"
        for file, names in imports_of(folder).items()
        for name in sorted(names)
        if name == target or name.startswith(target + ".")
    ]


@pytest.mark.parametrize("folder", ["broker", "wire"])
def test_the_broker_and_the_wire_format_never_import_the_transports(folder):
    """broker/ and wire/ sit below transports/: they never import it."""
    assert reaching(folder, "logbus.transports") == []


def test_the_wire_format_never_imports_the_broker():
    """wire/ is shared by broker/ and transports/, so it imports neither."""
    assert reaching("wire", "logbus.broker") == []


def test_the_sinks_never_import_the_archive_reader():
    """The sqlite and postgres sinks write the table; logbus.archive reads it through them."""
    assert reaching("sinks", "logbus.archive") == []


def test_the_broker_core_never_imports_its_sessions():
    """Sessions sit above the broker's core: core.py never imports sessions.py."""
    assert (
        imported_by(PACKAGE / "broker" / "core.py")
        & {
            "logbus.broker.sessions",
            "logbus.broker.Session",
            "logbus.broker.open_session",
        }
        == set()
    )


def test_the_worker_never_imports_the_command_line_or_the_services():
    """worker/ is what the CLI and the services call; it imports neither."""
    assert reaching("worker", "logbus.cli") + reaching("worker", "logbus.service") == []


@pytest.mark.parametrize("name", ["worker", "pools", "batching", "outcomes", "retry", "dlq"])
def test_the_worker_subsystem_lives_in_its_package(name):
    """No worker module is left loose at the top of logbus/."""
    assert not (PACKAGE / f"{name}.py").exists()
