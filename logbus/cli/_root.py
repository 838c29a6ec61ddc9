"""The ``logbus`` command's own options: ``--version``, ``--debug``, ``--log-level``.

``--debug`` and ``--log-level`` are taken out of the arguments before typer sees
them (:func:`logbus.cli.common.take_global_options`), so that they work after a
command's name too; they are declared here so that ``logbus --help`` documents them.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["root"]


def _version(wanted: bool) -> None:
    if wanted:
        from logbus import __version__

        typer.echo(f"logbus {__version__}")
        raise typer.Exit()


def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="Tracebacks for errors, and logbus's debug events (not the AMQP drivers'). "
            "Anywhere on the line; also LOGBUS_DEBUG=1.",
        ),
    ] = False,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            help="logbus's events on stderr from LEVEL up: error, warning (default), info, "
            "debug; trace is debug plus the AMQP drivers' own (pika, aio-pika, aiormq: "
            "hundreds of lines per connection). Anywhere on the line; also LOGBUS_LOG_LEVEL.",
        ),
    ] = "warning",
) -> None:
    """Route log records through RabbitMQ (or an in-process broker).

    Exit statuses: 0 ok, 2 usage, 65 bad input, 69 broker unavailable, 75 try
    again later, 77 permission denied, 78 configuration.
    """
