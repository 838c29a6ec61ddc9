"""The fast `logbus emit` path reads its arguments exactly as the typer command does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from logbus.cli import build_app
from logbus.cli._fast import _PID, _SECONDS, _fields, _parse


def click_params(args: list[str]) -> dict[str, Any]:
    """What the typer command's parser makes of ``emit ARGS``."""
    group: Any = typer.main.get_command(build_app())
    command = group.commands["emit"]
    with command.make_context("emit", list(args)) as ctx:
        # As typer hands them to the function: lists (None when empty), paths as Path.
        params = {
            name: (list(value) or None) if isinstance(value, tuple) else value
            for name, value in ctx.params.items()
        }
    if params["config"] is not None:
        params["config"] = Path(params["config"])
    return params


def fast_params(args: list[str]) -> dict[str, Any] | None:
    """The same parameters from the fast path's parser, or None when it steps aside."""
    parsed = _parse(args)
    if parsed is None:
        return None
    options = parsed.options
    pid, timeout, config = options.get("--pid"), options.get("--timeout"), options.get("--config")
    if (pid is not None and not _PID.fullmatch(pid)) or (
        timeout is not None and not _SECONDS.fullmatch(timeout)
    ):
        return None  # the fast path steps aside for these too
    return {
        "key": parsed.words[0],
        "message": parsed.words[1:] or None,
        "host": options.get("--host"),
        "app": options.get("--app"),
        "pid": None if pid is None else int(pid),
        "field": parsed.fields or None,
        "timeout": None if timeout is None else float(timeout),
        "url": options.get("--url"),
        "config": None if config is None else Path(config),
    }


@pytest.mark.parametrize(
    "args",
    [
        ["kern.info", "disk", "failed"],
        ["kern.info", "x", "--host", "web1", "--app=smartd", "--pid", "42"],
        ["--host", "h", "kern.info", "--field", "a=1", "m", "--field=b:=[1]", "--host", "h2"],
        ["kern.info", "", "--url", "amqp://u:p@h/", "--config", "c.toml", "--timeout", "2.5"],
        ["kern.info", "m", "--host="],
    ],
)
def test_plain_arguments_are_read_as_click_reads_them(args: list[str]) -> None:
    """Key, message words and the plain options, in any order: the typer command's values."""
    mine = fast_params(args)
    assert mine is not None
    theirs = click_params(args)
    assert {k: theirs[k] for k in mine} == mine


@pytest.mark.parametrize(
    "args",
    [
        ["kern.info"],  # no message: stdin
        ["kern.info", "-"],
        ["kern.info", "m", "--json"],
        ["kern.info", "m", "--help"],
        ["kern.info", "m", "-h"],
        ["kern.info", "m", "--file", "x"],
        ["kern.info", "m", "--exchange", "x"],
        ["kern.info", "m", "--queue", "q"],
        ["kern.info", "m", "--debug"],
        ["kern.info", "--", "-m"],
        ["kern.info", "-5", "degrees"],
        ["kern.info", "m", "--host"],
        ["kern.info", "m", "--host", "--app"],
        ["kern.info", "m", "--hos", "x"],
        [],
    ],
)
def test_anything_else_is_left_to_the_typer_command(args: list[str]) -> None:
    """Help, stdin, files, other targets, unknown or valueless options: it steps aside."""
    assert _parse(args) is None


WORDS = st.sampled_from(
    ["kern.info", "m", "x y", "", "-", "--", "-5", "--host", "--app", "--pid", "--field", "--url",
     "--config", "--timeout", "--json", "--host=h", "--pid=7", "--field=a=b", "--field=t:=3",
     "12", "1.5", "a=b", "c:=[1]", "é"]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(st.lists(WORDS, max_size=8))
def test_generated_arguments_agree_with_click_whenever_the_fast_path_answers(
    args: list[str],
) -> None:
    """If the fast parser accepts arguments, click accepts them and gives the same values."""
    mine = fast_params(args)
    if mine is None:
        return
    theirs = click_params(args)
    assert {k: theirs[k] for k in mine} == mine


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["user=root", "tries:=3", "port=22"], {"user": "root", "tries": 3, "port": "22"}),
        (["a=1", "a=2"], {"a": "2"}),
        (['tags:=["x", null, true]'], {"tags": ["x", None, True]}),
        (["noequals"], None),
        ([":=1"], None),
        (["bad:=not json"], None),
        (["f:=1.5"], None),  # floats: pydantic writes them differently
    ],
)
def test_fields_parse_like_the_typer_command(items: list[str], expected: Any) -> None:
    """KEY=VALUE strings, KEY:=JSON values; what the command refuses or floats give None."""
    assert _fields(items) == expected


def test_importing_the_command_line_imports_no_typer() -> None:
    """`import logbus.cli` is cheap: the typer app is built only when it is needed."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import logbus.cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "logbus.cli" in imported
    assert not {"typer", "pydantic", "pika"} & imported
