"""``logbus topology apply|show|diff``: a config's topology declared, printed, compared."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from logbus.cli.common import (
    ConfigOption,
    JsonOption,
    UrlOption,
    make_settings,
    quiet_connect,
    wants_json,
)

if TYPE_CHECKING:
    from logbus.admin import Drift
    from logbus.management import ManagementApi
    from logbus.settings import Settings
    from logbus.topology import Topology

__all__ = ["ManagementOption", "register"]

#: ``--management-url``, for the commands that ask RabbitMQ what it has.
ManagementOption = Annotated[
    str | None,
    typer.Option(
        "--management-url",
        envvar="LOGBUS_MANAGEMENT_URL",
        help=(
            "RabbitMQ's management API, e.g. http://host:15672 (user and password: the "
            "AMQP URL's unless given here). Default: the AMQP URL's host, port 15672. "
            "'off': ask through AMQP only."
        ),
        show_default=False,
    ),
]

APPLY_EPILOG = """Examples:

\b
  logbus topology apply                  # the built-in default topology
  logbus topology apply --config config/logbus.toml
  logbus topology apply --url amqp://user:pass@mq1:5672/logs
  logbus topology apply --json | jq -r '.applied[].state'

Exit status: 0 declared, 69 broker unreachable, 78 an entity exists with
other properties (the error names the property, both values and the way out).
"""

SHOW_EPILOG = """Examples:

\b
  logbus topology show                   # the built-in default
  logbus topology show --config config/logbus.toml
  logbus topology show --json | jq -r '.queues[].name'
"""

DIFF_EPILOG = """Examples:

\b
  logbus topology diff                   # exit 0: in sync, 1: drift
  logbus topology diff --config config/logbus.toml
  logbus topology diff --url amqp://user:pass@mq1:5672/logs
  logbus topology diff --management-url http://mq1:15672
  logbus topology diff --management-url off   # AMQP only: no bindings
  logbus topology diff --json | jq '.missing, .different'
  logbus topology diff || logbus topology apply   # in a deploy script

Exit status: 0 in sync, 1 drift, 69 broker unreachable, 78 bad config.
"""


def apply(config: ConfigOption = None, url: UrlOption = None, as_json: JsonOption = False) -> None:
    """Declare the config's exchanges, queues and bindings on the broker.

    Idempotent: what exists with the same properties stays as it is. Prints one
    line per entity: created, existed, or bound (bindings). An entity that exists
    with other properties is refused, naming the property and both values.
    """
    from logbus import admin, management
    from logbus.settings import redact_url
    from logbus.transports import connect

    settings = make_settings(url, config)
    topology = settings.topology()
    with quiet_connect():
        transport = connect(settings.url, settings=settings)
    with transport:
        applied = admin.apply(transport, topology)
    where = f"{redact_url(settings.url)} (vhost {management.vhost_of(settings.url)})"
    if wants_json(as_json):
        rows = [a.to_dict() for a in applied]
        typer.echo(json.dumps({"url": redact_url(settings.url), "applied": rows}))
        return
    for a in applied:
        typer.echo(f"{a.state:<8} {a.entity:<9} {a.name}")
    created = sum(a.state == "created" for a in applied)
    typer.secho(f"applied {_counts(topology)} on {where}: {created} created", bold=True)


def show(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Print the config's topology: exchanges, queues with their arguments, bindings and
    emit targets. Reads the file only; no broker needed."""
    settings = make_settings(None, config)
    topology = settings.topology()
    if wants_json(as_json):
        typer.echo(json.dumps(topology.to_dict()))
        return
    typer.secho(f"topology: {_source(settings.config)}", bold=True)
    from logbus.cli._tables import add_row, print_table, table

    typer.echo("\nexchanges")
    exchanges = table("name", "type", "properties", header=False)
    for e in topology.exchanges:
        add_row(exchanges, e.name, e.type, _flags(asdict(e), e.arguments))
    print_table(exchanges, indent=2)
    typer.echo("\nqueues")
    queues = table("name", "properties", header=False)
    for q in topology.queues:
        add_row(queues, q.name, _flags(asdict(q), q.amqp_arguments()))
    print_table(queues, indent=2)
    typer.echo("\nbindings")
    for b in topology.bindings:
        args = f" {json.dumps(b.arguments, sort_keys=True)}" if b.arguments else ""
        typer.echo(
            f"  {b.source} -> {b.destination} ({b.destination_type}) key {b.routing_key!r}{args}"
        )
    typer.echo("\nemit")
    for t in topology.emit:
        typer.echo(f"  {t.exchange or '(default exchange)'}  key {t.key}")


def diff(
    config: ConfigOption = None,
    url: UrlOption = None,
    management_url: ManagementOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare the config with what the broker has; exit 1 on drift.

    Asks the management API (exchanges, queues and their arguments, bindings) and,
    when it does not answer, passive declares over AMQP, which tell only whether
    each exchange and queue exists. Drift is a missing entity or binding, or a
    property with another value (named, with both values). What the broker has
    beyond the config is not drift; entities named like the config's are listed.
    """
    from logbus import admin, management
    from logbus.settings import redact_url

    settings = make_settings(url, config)
    topology = settings.topology()
    api = management.management_api(settings.url, management_url)
    with quiet_connect():
        drift = admin.diff(topology, management.snapshot(settings, topology, management=api))
    if wants_json(as_json):
        extra = {
            "config": _source(settings.config),
            "url": redact_url(settings.url),
            "management": None if api is None else str(api),
        }
        typer.echo(json.dumps(extra | drift.to_dict()))
    else:
        _render_drift(settings, topology, drift, api)
    if not drift.in_sync:
        raise typer.Exit(1)


def _render_drift(
    settings: Settings, topology: Topology, drift: Drift, api: ManagementApi | None
) -> None:
    how = "the management API" if drift.via == "management" else "AMQP passive declares"
    typer.echo(f"compared {_source(settings.config)} with {_url(settings)} through {how}")
    if drift.via == "amqp":
        typer.echo(f"  ({drift.note}; fell back to AMQP)")
    for d in drift.differences:
        typer.secho(f"  {d}", fg=typer.colors.RED)
    for line in drift.unchecked:
        typer.echo(f"not checked: {line}")
    for line in drift.extra:
        typer.echo(f"also on the broker (not drift): {line}")
    if drift.in_sync:
        partly = " (as far as AMQP can tell)" if drift.via == "amqp" else ""
        typer.secho(f"in sync{partly}: {_counts(topology)}", fg=typer.colors.GREEN, bold=True)
        return
    missing = sum(d.prop is None for d in drift.differences)
    different = len(drift.differences) - missing
    typer.secho(
        f"drift: {missing} missing, {different} different (`logbus topology apply` creates "
        "what is missing; a different property needs the config changed or the entity "
        "deleted and declared again)",
        fg=typer.colors.RED,
        bold=True,
    )


def _url(settings: Settings) -> str:
    from logbus.management import vhost_of
    from logbus.settings import redact_url

    return f"{redact_url(settings.url)} (vhost {vhost_of(settings.url)})"


def _source(config: Path | None) -> str:
    return "built-in default" if config is None else str(config)


def _counts(topology: Topology) -> str:
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else 's'}"

    return ", ".join(
        n(len(items), word)
        for items, word in (
            (topology.exchanges, "exchange"),
            (topology.queues, "queue"),
            (topology.bindings, "binding"),
        )
    )


def _flags(fields: dict[str, Any], arguments: dict[str, Any]) -> str:
    words = ["durable" if fields["durable"] else "transient"]
    words += [
        f.replace("_", "-") for f in ("exclusive", "auto_delete", "internal") if fields.get(f)
    ]
    words += [f"{k}={json.dumps(v)}" for k, v in arguments.items()]
    return "  ".join(words)


def register(app: typer.Typer) -> None:
    """Add the ``topology`` command group to ``app``."""
    group = typer.Typer(
        name="topology",
        help="Declare, print or check the exchanges, queues and bindings of a config.",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    group.command("apply", epilog=APPLY_EPILOG)(apply)
    group.command("show", epilog=SHOW_EPILOG)(show)
    group.command("diff", epilog=DIFF_EPILOG)(diff)
    app.add_typer(group, name="topology")
