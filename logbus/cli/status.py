"""``logbus status``: is the broker there, and how full are the queues."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from logbus.cli.common import (
    ConfigOption,
    JsonOption,
    UrlOption,
    make_settings,
    quiet_connect,
    wants_json,
)
from logbus.cli.topology import ManagementOption

if TYPE_CHECKING:
    from logbus.admin import Status

__all__ = ["register"]

EPILOG = """Examples:

\b
  logbus status                          # the config's queues
  logbus status --queue logbus.tasks --json | jq '.queues[0].ready'
  logbus status --all                    # every queue and exchange
  logbus status --url amqp://user:pass@mq1:5672/logs
  logbus status --management-url http://mq1:15672
  logbus status --management-url off     # AMQP only

Queue figures from the management API lag the broker by up to its
statistics interval (5 s by default). Through AMQP, the depth is current,
but unacked counts, rates, bindings and alarms are unknown.

Exit status: 0 answered, 69 broker unreachable, 78 bad config.
"""


def status(
    url: UrlOption = None,
    config: ConfigOption = None,
    management_url: ManagementOption = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            metavar="NAME",
            help="A queue to show (repeat for more). Default: the config's queues.",
            show_default=False,
        ),
    ] = None,
    everything: Annotated[
        bool,
        typer.Option("--all", help="Also every other queue, exchange and binding but amq.*."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show the broker's health and its queues: depth, unacked, consumers, rates.

    Connects over AMQP (version, cluster) and asks the management API for the rest
    (node, alarms, per-queue statistics, exchanges, bindings); without it, passive
    declares give each queue's ready messages and consumers.
    """
    from logbus import admin, management

    settings = make_settings(url, config)
    topology = settings.topology()
    api = management.management_api(settings.url, management_url)
    with quiet_connect():
        report = admin.status(
            settings, topology, management=api, queues=queue or (), everything=everything
        )
    if wants_json(as_json):
        typer.echo(json.dumps(report.to_dict()))
    else:
        _render(report)


def _render(report: Status) -> None:
    info = report.broker
    own = report.vhost is None  # logbus's own broker (local://, memory://): no vhosts
    who = " ".join(w for w in (info.product, info.version) if w) or (
        "logbus broker" if own else "broker"
    )
    place = report.url if own else f"{report.url} (vhost {report.vhost})"
    where = ", ".join(
        f"{k} {v}" for k, v in (("node", info.node), ("cluster", info.cluster_name)) if v
    )
    if info.alarms is None:
        alarms = "alarms unknown"
    else:
        alarms = "alarms: " + (", ".join(info.alarms) or "none")
    typer.secho(
        f"{who} at {place}; {where}{'; ' if where else ''}{alarms}",
        bold=True,
        fg=typer.colors.RED if info.alarms else None,
    )
    if report.via == "management":
        typer.echo(f"statistics from the management API at {report.management}")
    else:
        typer.echo(f"statistics through AMQP ({report.note})")
    from logbus.cli._tables import add_row, print_table, table

    typer.echo("")
    numbers = ("ready", "unacked", "consumers", "publish/s", "deliver/s")
    queues = table("queue", *numbers, numbers=numbers)
    for q in report.queues:
        add_row(
            queues,
            q.name,
            _n(q.ready),
            _n(q.unacked),
            _n(q.consumers),
            _rate(q.publish_rate),
            _rate(q.deliver_rate),
        )
    print_table(queues)
    typer.echo("")
    exchanges = table("exchange", "type", "durable")
    for e in report.exchanges:
        durable = "?" if e.durable is None else ("yes" if e.durable else "no")
        add_row(exchanges, e.name, e.type or "?", durable)
    print_table(exchanges)
    typer.echo("")
    if report.bindings is None:
        typer.echo("bindings: unknown (AMQP cannot list them; the management API can)")
    else:
        typer.echo("bindings")
        for b in report.bindings:
            typer.echo(f"  {b}")
    if report.missing:
        typer.secho(
            f"\nmissing: {', '.join(report.missing)} (`logbus topology apply` declares "
            "the config's)",
            fg=typer.colors.YELLOW,
        )


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def register(app: typer.Typer) -> None:
    """Add the ``status`` command to ``app``."""
    app.command("status", epilog=EPILOG)(status)
