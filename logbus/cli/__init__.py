"""The ``logbus`` command line: thin typer commands over the library.

Each command parses its options, builds :class:`~logbus.settings.Settings`,
makes one library call and renders the result. Errors are one line on stderr
with a sysexits status (65 bad input, 69 broker unavailable, 75 try again,
78 configuration); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import typer

from logbus.cli import demo as _demo
from logbus.cli.common import run_guarded

__all__ = ["app", "main"]

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


@app.callback()
def _root() -> None:
    """Route log records through RabbitMQ (or an in-process broker).

    Global option: --debug shows tracebacks. Exit statuses: 0 ok, 2 usage,
    65 bad input, 69 broker unavailable, 75 try again later, 78 configuration.
    """


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
)
for _name in COMMANDS:
    importlib.import_module(f"logbus.cli.{_name}").register(app)
app.command("demo", epilog=_demo.EPILOG)(_demo.demo)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``logbus`` console script."""
    sys.exit(run_guarded(app, argv))
