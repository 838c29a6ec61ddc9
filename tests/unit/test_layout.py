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


# -- transports/: a folder per engine, arrows one way, no circle --------------------------

TRANSPORTS = PACKAGE / "transports"
#: The AMQP modules both drivers share; the rest of amqp/ is the pika driver (pika_*.py).
AMQP_SHARED = ["errors", "reconnect", "tls", "urls", "window"]


def module_of(path: Path) -> str:
    """The dotted module name of a file of logbus/ (a package is its __init__)."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def every_import(path: Path) -> set[str]:
    """Every top-level name of a module a file imports, logbus's own or a library's."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.partition(".")[0])
    return names


def transports_graph() -> dict[str, set[str]]:
    """Module of transports/ -> the modules of transports/ it imports (parents not implied)."""
    files = {module_of(path): path for path in TRANSPORTS.glob("**/*.py")}
    return {
        module: {name for name in imported_by(path) if name in files and name != module}
        for module, path in files.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``, each as the path that closes it (empty: none)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_circles_finds_a_circle_and_only_a_circle():
    """The circle finder sees a -> b -> a, and nothing in a chain."""
    assert circles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_module_of_the_transports_imports_itself_back():
    """No circle between modules of transports/, function-level and TYPE_CHECKING imports too."""
    assert circles(transports_graph()) == []


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("transports/amqp", ["logbus.transports.aio", "logbus.transports.inprocess"]),
        ("transports/inprocess", ["logbus.transports.amqp", "logbus.transports.aio"]),
        ("transports/aio", ["logbus.transports.inprocess"]),
    ],
)
def test_the_transport_folders_import_one_way(folder, forbidden):
    """aio/ -> amqp/ (its shared modules) is the one arrow between the engines' folders."""
    assert [hit for target in forbidden for hit in reaching(folder, target)] == []


def test_the_aio_driver_uses_only_what_amqp_shares():
    """aio/ imports amqp/'s shared modules, never the pika driver (amqp/pika_*.py)."""
    assert [
        f"{file}: {name}"
        for file, names in imports_of("transports/aio").items()
        for name in sorted(names)
        if name.startswith("logbus.transports.amqp.pika")
    ] == []


@pytest.mark.parametrize("name", AMQP_SHARED)
def test_what_the_amqp_drivers_share_imports_no_driver(name):
    """A shared AMQP module imports neither client library nor a driver module of logbus."""
    path = TRANSPORTS / "amqp" / f"{name}.py"
    drivers = {"pika", "aio_pika", "aiormq", "pamqp"}
    assert every_import(path) & drivers == set()
    logbus_drivers = ("logbus.transports.amqp.pika", "logbus.transports.aio")
    assert {n for n in imported_by(path) if n.startswith(logbus_drivers)} == set()


@pytest.mark.parametrize("path", [TRANSPORTS / "__init__.py", TRANSPORTS / "base.py"])
def test_the_scheme_map_and_the_protocols_import_no_transport(path):
    """transports/__init__ names its transports as strings, loaded on first use; base.py is
    what they all implement: neither imports a transport's folder."""
    folders = ("logbus.transports.amqp", "logbus.transports.aio", "logbus.transports.inprocess")
    assert {name for name in imported_by(path) if name.startswith(folders)} == set()


def test_the_transports_live_in_their_folders():
    """At the top of transports/ only the scheme map and the Protocols: each engine has a folder."""
    assert sorted(path.name for path in TRANSPORTS.glob("*.py")) == ["__init__.py", "base.py"]


def test_every_transport_in_the_scheme_map_is_in_a_folder():
    """Each URL scheme's "module:Class" names a module of amqp/ or inprocess/ that exists."""
    from logbus.transports import TRANSPORTS as SCHEMES

    for target in SCHEMES.values():
        module = target.partition(":")[0]
        parts = module.split(".")
        assert parts[2] in ("amqp", "inprocess"), target
        assert (PACKAGE.parent / Path(*parts)).with_suffix(".py").exists(), target


# -- sizes -----------------------------------------------------------------------------------


def test_no_module_of_the_package_is_over_500_lines():
    """One concept per module: a module past 500 lines is split by responsibility."""
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.glob("**/*.py")
    }
    assert {name: size for name, size in sizes.items() if size > 500} == {}


@pytest.mark.parametrize("folder", ["transports", "worker"])
def test_no_function_of_the_transports_or_the_worker_is_over_60_lines(folder):
    """Functions a reader can hold in view: none over 60 lines in transports/ or worker/."""
    long = []
    for path in sorted((PACKAGE / folder).glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 60:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({size})")
    assert long == []
