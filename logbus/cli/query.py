"""``logbus query``: search the archive that a sqlite or postgres sink writes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from logbus.cli.common import ConfigOption, JsonOption, make_settings, wants_json

if TYPE_CHECKING:
    from logbus.record import LogRecord

__all__ = ["EPILOG", "query", "register"]

EPILOG = """Examples:

\b
  logbus query --archive sqlite:/var/lib/logbus/archive.db --since 1h
  export LOGBUS_ARCHIVE=postgres:postgresql://logbus@db1:5432/logs
  logbus query --since 15m --min-severity error        # error, critical, alert, emergency
  logbus query --facility kern --severity critical --severity alert --host web1
  logbus query --grep 'disk /dev/sda1' --limit 20 --reverse
  logbus query --since 2025-01-02T00:00:00Z --until 2025-01-03T00:00:00Z --json | jq .message
  logbus query --archive 'sqlite:/var/lib/logbus/archive.db?table=audit' --app sshd

Newest first; --reverse puts the oldest first (the limit then keeps the oldest).
Times are RFC 3339 (UTC when no offset is given) or a duration ago: 90s, 15m,
2h, 1d, 1w. --since is inclusive, --until exclusive.

\b
Exit status:
  0   the query ran (also when nothing matched)
  2   usage (an unknown option, --limit not a number)
  65  bad input (a time, a severity or a facility that does not parse)
  69  the archive cannot be opened or reached
  78  configuration (no archive given, not sqlite:/postgres:, no such table)
"""

_SEVERE = {"emergency", "alert", "critical", "error"}


def query(
    archive: Annotated[
        str | None,
        typer.Option(
            "--archive",
            envvar="LOGBUS_ARCHIVE",
            metavar="SPEC",
            help="sqlite:PATH or postgres:URL, as the sink was named (?table=NAME if not logs). "
            "Default: $LOGBUS_ARCHIVE.",
            show_default=False,
            show_envvar=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="TIME", help="From this time on: RFC 3339 or 15m, 2h, 1d."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="TIME", help="Before this time: RFC 3339 or 15m, 2h, 1d."),
    ] = None,
    facility: Annotated[
        list[str] | None,
        typer.Option("--facility", "-f", metavar="NAME", help="This facility (repeat for more)."),
    ] = None,
    severity: Annotated[
        list[str] | None,
        typer.Option(
            "--severity", "-s", metavar="LEVEL", help="Exactly this severity (repeat for more)."
        ),
    ] = None,
    min_severity: Annotated[
        str | None,
        typer.Option("--min-severity", metavar="LEVEL", help="This severity or worse."),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", metavar="NAME", help="From this host (repeat for more)."),
    ] = None,
    app: Annotated[
        list[str] | None,
        typer.Option("--app", metavar="NAME", help="From this app (repeat for more)."),
    ] = None,
    grep: Annotated[
        str | None,
        typer.Option("--grep", metavar="TEXT", help="Messages containing TEXT (case-sensitive)."),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", "-n", min=0, metavar="N", help="Records at most; 0: all of them."),
    ] = 100,
    reverse: Annotated[
        bool, typer.Option("--reverse", help="Oldest first (and the limit keeps the oldest).")
    ] = False,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Search the archive of records that a sqlite or postgres sink stored.

    Every filter given must match; repeating one (--host a --host b) matches any
    of its values. A table on a terminal, the records' wire JSON one per line
    when piped or with --json. --config is the topology file, as for every
    command (so that one LOGBUS_CONFIG or --config serves them all); query reads
    the archive, not the broker, so it only checks that the file is valid.
    """
    from logbus import archive as archives
    from logbus.errors import ConfigError
    from logbus.record import Severity, validate_facility

    make_settings(config=config).topology()  # a bad file is 78 here as everywhere
    if not archive:
        raise ConfigError(
            "no archive to query: give --archive sqlite:PATH or --archive postgres:URL, "
            "or set LOGBUS_ARCHIVE"
        )
    search = archives.Query(
        since=archives.parse_time(since, option="--since") if since else None,
        until=archives.parse_time(until, option="--until") if until else None,
        facilities=tuple(validate_facility(name) for name in facility or ()),
        severities=tuple(Severity.parse(level) for level in severity or ()),
        min_severity=Severity.parse(min_severity) if min_severity else None,
        hosts=tuple(host or ()),
        apps=tuple(app or ()),
        grep=grep,
        limit=limit or None,
        oldest_first=reverse,
    )
    from logbus._urls import redact_url
    from logbus.cli._progress import progress

    # A search over a large archive takes seconds; the rows arrive all at once, so the
    # terminal gets a spinner with the time elapsed, not a bar.
    with progress(f"searching {redact_url(archive)}"):
        records = archives.search(archive, search)
    if wants_json(as_json):
        for record in records:
            typer.echo(record.to_bytes().decode())
    else:
        _render(records)
    if limit and len(records) == limit:
        typer.echo(f"logbus query: showed the first {limit} (--limit); there may be more", err=True)


def _render(records: list[LogRecord]) -> None:
    from logbus.sinks.console import escape_controls

    if not records:
        typer.echo("no records matched", err=True)
        return
    cells = [
        (
            record.to_dict()["ts"],
            escape_controls(record.host or "-"),
            escape_controls(record.app or "-"),
            record.routing_key,
            escape_controls(record.message),
        )
        for record in records
    ]
    from logbus.cli._tables import add_row, print_table, table

    rows = table("TIME", "HOST", "APP", "KEY", "MESSAGE", whole={"TIME"})
    for record, row in zip(records, cells, strict=True):
        word = record.severity.word
        colour = "red" if word in _SEVERE else ("yellow" if word == "warning" else None)
        add_row(rows, *row, style=colour)
    print_table(rows)


def register(app: typer.Typer) -> None:
    """Add ``logbus query`` to the app."""
    app.command("query", epilog=EPILOG)(query)
