"""The command line every service shares: ``python -m services.NAME --config FILE [--url URL]``.

Thin, like the ``logbus`` commands: options, then :func:`logbus.service.run_service`,
then one line on how it ended. Errors are one line with DESIGN.md's exit status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer

from logbus._log import log_json_lines
from logbus.cli.common import UrlOption, run_guarded
from logbus.cli.worker import LogFormat, stopping_reporter
from logbus.service import ServiceConfig, load_service, run_service
from logbus.sinks import Sink

__all__ = ["ServiceFileOption", "service_main"]

#: ``--config``: the service's own file (not a topology file, as for ``logbus``).
ServiceFileOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="The service file (TOML): its queue, worker, retry, metrics and sink tables. "
        "Start from the one in config/services/.",
        show_default=False,
        dir_okay=False,
    ),
]


def service_main(
    name: str,
    summary: str,
    *,
    argv: Sequence[str] | None = None,
    extra_sections: Sequence[str] = (),
    wrap: Callable[[ServiceConfig], Callable[[Sink], Sink]] | None = None,
    epilog: str = "",
) -> int:
    """Run service ``name`` as a command; returns the exit status.

    0 after a clean stop (SIGTERM, Ctrl-C); otherwise the status DESIGN.md gives
    the error (2 usage, 78 a bad file, 69 an unreachable broker), printed as one line.
    ``extra_sections`` are the service's own tables in its file; ``wrap`` puts the
    service's logic around its sinks.
    """
    app = typer.Typer(add_completion=False, rich_markup_mode=None)

    @app.command(help=summary, epilog=epilog)
    def run(
        config: ServiceFileOption = None,
        url: UrlOption = None,
        log_format: Annotated[
            LogFormat,
            typer.Option(
                help="console: warnings and errors as text lines. json: every event of the "
                "service's worker, info and up, one JSON object per line on stderr.",
            ),
        ] = LogFormat.console,
    ) -> None:
        if log_format is LogFormat.json:
            log_json_lines()
        if config is None:
            raise typer.BadParameter(
                f"name the service file, e.g. --config config/services/{name}.toml",
                param_hint="--config",
            )
        loaded = load_service(config, extra_sections=extra_sections)
        done = run_service(
            loaded,
            url=url,
            wrap=wrap(loaded) if wrap is not None else None,
            on_started=lambda text: typer.echo(f"{name}: {text}", err=True),
            report=stopping_reporter(name) if log_format is LogFormat.console else None,
        )
        typer.echo(f"{name}: stopped: {done}", err=True)

    args = list(argv) if argv is not None else None
    return run_guarded(app, args, prog=f"python -m services.{name}")
