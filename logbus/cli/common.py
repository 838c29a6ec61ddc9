"""What every command shares: the error boundary, debug flag and output choices."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.exceptions import Abort, Exit, TyperException

from logbus.errors import LogbusError

if TYPE_CHECKING:
    from logbus.settings import Settings

__all__ = [
    "ConfigOption",
    "JsonOption",
    "UrlOption",
    "fail",
    "make_settings",
    "quiet_connect",
    "run_guarded",
    "wants_json",
]

#: ``--url``, shared by every command that talks to a broker.
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help=(
            "Broker URL: amqp://user:pass@host:5672/vhost (several, comma-separated, are "
            "failover hosts), amqps://, memory://. Default: $LOGBUS_URL, else the URL in "
            "the file $LOGBUS_URL_FILE, else amqp://guest:***@localhost:5672/%2F. "
            "$LOGBUS_PASSWORD_FILE: a file whose content is the password (keeps it out "
            "of argv and the environment)."
        ),
        show_default=False,
    ),
]
#: ``--config``, the topology file.
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Topology file (TOML). Default: $LOGBUS_CONFIG, else the built-in default "
        "(config/logbus.toml).",
        show_default=False,
        dir_okay=False,
    ),
]
#: ``--json``: machine-readable output even on a terminal.
JsonOption = Annotated[
    bool, typer.Option("--json", help="JSON lines (the default when stdout is not a terminal).")
]


def make_settings(url: str | None = None, config: Path | None = None, **more: Any) -> Settings:
    """Settings from the environment, overridden by the options that were given."""
    from logbus.settings import load_settings  # with the topology: only when needed

    overrides: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if url is not None:
        overrides["url"] = url
    if config is not None:
        overrides["config"] = config
    return load_settings(**overrides)


#: ``--log-level`` choices: logbus's own events from that level up; ``trace`` is
#: ``debug`` plus the AMQP drivers' (pika, aio-pika, aiormq) own debug output, which
#: is hundreds of lines per connection and so never shown unless asked for.
LOG_LEVELS = ("trace", "debug", "info", "warning", "error")
_DRIVERS = ("pika", "aiormq", "aio_pika")


def configure_logging(debug: bool, level: str | None = None) -> None:
    """Events on stderr: logbus's from ``level`` up (default ``warning``, ``debug`` with
    ``--debug``); the drivers' own only with ``trace`` (see :data:`LOG_LEVELS`)."""
    chosen = level or ("debug" if debug else "warning")
    logging.basicConfig(
        level=logging.DEBUG if chosen == "trace" else logging.WARNING,
        stream=sys.stderr,
        format="logbus: %(levelname)s %(name)s: %(message)s",
    )
    if chosen != "trace":
        logging.getLogger("logbus").setLevel(getattr(logging, chosen.upper()))
        for name in _DRIVERS:  # their tracebacks on a dropped connection are noise here
            logging.getLogger(name).setLevel(logging.CRITICAL)


def take_global_options(args: list[str]) -> tuple[bool, str | None, list[str]]:
    """``--debug`` and ``--log-level LEVEL`` taken out of ``args``, wherever they are
    (``logbus emit ... --debug`` works as ``logbus --debug emit ...``), with
    ``LOGBUS_DEBUG=1`` and ``LOGBUS_LOG_LEVEL`` as defaults: (debug, level, the rest).

    A level not in :data:`LOG_LEVELS` is a usage error (exit 2).
    """
    debug = "--debug" in args or os.environ.get("LOGBUS_DEBUG") == "1"
    level = os.environ.get("LOGBUS_LOG_LEVEL") or None
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--debug":
            continue
        if arg == "--log-level":
            level = next(items, "")
        elif arg.startswith("--log-level="):
            level = arg.partition("=")[2]
        else:
            rest.append(arg)
    if level is not None:
        level = level.strip().lower()
        if level not in LOG_LEVELS:
            typer.echo(
                f"logbus: error: --log-level (or LOGBUS_LOG_LEVEL) {level!r} is not one of "
                f"{', '.join(LOG_LEVELS)}",
                err=True,
            )
            raise SystemExit(2)
    return debug, level, rest


@contextlib.contextmanager
def quiet_connect() -> Iterator[None]:
    """At the default level, a broker that cannot be reached is one error line, not warnings too.

    The transport warns about each failed attempt; the error that follows already
    names every host and why. Warnings after the first connect (a dropped
    connection, a reconnect) still show: an operator wants those.
    """
    logger = logging.getLogger("logbus.transports")
    if logger.getEffectiveLevel() <= logging.INFO:  # --log-level info or debug: all of it
        yield
        return
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def wants_json(flag: bool) -> bool:
    """JSON lines with ``--json`` or when stdout is not a terminal."""
    return flag or not sys.stdout.isatty()


def fail(message: str, code: int) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    typer.echo(f"logbus: error: {message}", err=True)
    return typer.Exit(code)


def run_guarded(app: typer.Typer, argv: list[str] | None = None, *, prog: str = "logbus") -> int:
    """Run the app; turn a LogbusError into one stderr line and its exit status.

    ``prog`` names the program in usage lines and in front of errors.
    """
    try:
        debug, level, args = take_global_options(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # a --log-level that is not a level: a usage error
        return exc.code if isinstance(exc.code, int) else 2
    configure_logging(debug, level)
    try:
        # Not standalone: click hands usage errors back, so they become one line like the rest.
        result = app(args=args, prog_name=prog, standalone_mode=False)
    except TyperException as exc:  # click's usage errors, as typer vendors them
        return _usage_error(exc, prog)
    except Abort:
        typer.echo(f"{prog}: interrupted", err=True)
        return 130
    except Exit as exc:
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except LogbusError as exc:
        if debug:
            import traceback  # only with --debug: not on every command's start-up

            traceback.print_exc()
        typer.echo(f"{prog}: error: {_safe(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo(f"{prog}: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


def _usage_error(exc: TyperException, prog: str) -> int:
    """A usage error as one line: what was wrong, and the ``--help`` that teaches the command."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help is the answer
        typer.echo(exc.format_message(), err=True)
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else prog
    message = _safe(exc.format_message().replace("\n", " "))
    typer.echo(f"{command}: error: {message} (see '{command} --help')", err=True)
    return exc.exit_code


def _safe(text: str) -> str:
    """Redact any URL password that found its way into a message."""
    from logbus._urls import redact_url

    return " ".join(redact_url(word) if "://" in word else word for word in text.split(" "))
