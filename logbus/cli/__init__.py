"""The ``logbus`` command line: thin typer commands over the library.

Each command parses its options, builds :class:`~logbus.settings.Settings`,
makes one library call and renders the result. Errors are one line on stderr
with a sysexits status (65 bad input, 69 broker unavailable, 75 try again,
77 permission denied, 78 configuration); ``--debug`` shows the traceback instead.

Importing this package is cheap: the typer app is built on first use
(:func:`build_app`, or the ``app`` attribute), and each command imports what
it needs (pydantic, pika, rich) inside its function, so that ``logbus emit``
pays only for what a record needs.
"""

from __future__ import annotations

import importlib
import os
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

__all__ = ["COMMANDS", "app", "build_app", "main", "typer_main"]

#: Command modules; each has ``register(app)`` and keeps heavy imports inside its
#: functions, so that ``logbus emit`` starts quickly.
COMMANDS: tuple[str, ...] = (
    "emit",
    "subscribe",
    "worker",
    "topology",
    "status",
    "broker",
    "query",
    "dlq",
    "ingest",
)


@cache
def build_app(only: str | None = None) -> typer.Typer:
    """The typer app: every command of :data:`COMMANDS`, and ``demo``; with ``only``,
    that one command (under the same root options), which is all a command line that
    names it needs: typer reads every registered command's signature when it starts."""
    import typer

    from logbus.cli import demo as _demo

    app = typer.Typer(
        name="logbus",
        help=(
            "Route log records through RabbitMQ (or an in-process broker).\n\n"
            "Try it with no broker at all:  logbus demo"
        ),
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain one-line errors, and no rich import at start-up
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    from logbus.cli._root import root

    app.callback()(root)

    for name in COMMANDS:
        if only is None or name == only:
            importlib.import_module(f"logbus.cli.{name}").register(app)
    if only is None or only == "demo":
        app.command("demo", epilog=_demo.EPILOG)(_demo.demo)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from logbus.cli import app` builds it
        return build_app()
    raise AttributeError(f"module 'logbus.cli' has no attribute {name!r}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``logbus`` console script."""
    # pydantic looks for plugins in every installed package's entry points when it
    # builds its first model: tens of ms of one `logbus emit` spent reading metadata
    # for plugins nobody installs into a command line. PYDANTIC_DISABLE_PLUGINS=
    # (empty) lets them in again.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    sys.exit(typer_main(argv))


def typer_main(argv: list[str] | None = None) -> int:
    """Run the typer app on ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    from logbus.cli.common import run_guarded, take_global_options

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        words = take_global_options(args)[2]
    except SystemExit as exc:  # a --log-level that is not a level, said in one line
        return exc.code if isinstance(exc.code, int) else 2
    named = words[0] if words and words[0] in (*COMMANDS, "demo") else None
    return run_guarded(build_app(named), args)
