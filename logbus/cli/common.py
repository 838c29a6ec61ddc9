"""What every command shares: the error boundary, debug flag and output choices."""

from __future__ import annotations

import os
import sys
import traceback

import typer

from logbus.errors import LogbusError
from logbus.settings import redact_url

__all__ = ["fail", "run_guarded", "wants_json"]


def wants_json(flag: bool) -> bool:
    """JSON lines with ``--json`` or when stdout is not a terminal."""
    return flag or not sys.stdout.isatty()


def fail(message: str, code: int) -> typer.Exit:
    """Print one error line on stderr and return the Exit to raise."""
    typer.echo(f"logbus: error: {message}", err=True)
    return typer.Exit(code)


def run_guarded(app: typer.Typer, argv: list[str] | None = None) -> int:
    """Run the app; turn a LogbusError into one stderr line and its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LOGBUS_DEBUG") == "1"
    if "--debug" in args:
        args.remove("--debug")
    try:
        app(args=args, prog_name="logbus")
    except SystemExit as exc:  # typer ends every run with one, usage errors with 2
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except LogbusError as exc:
        if debug:
            traceback.print_exc()
        typer.echo(f"logbus: error: {_safe(str(exc))}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        typer.echo("logbus: interrupted", err=True)
        return 130
    return 0


def _safe(text: str) -> str:
    """Redact any URL password that found its way into a message."""
    return " ".join(redact_url(word) if "://" in word else word for word in text.split(" "))
