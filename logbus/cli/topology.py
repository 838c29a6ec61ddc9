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
    fail,
    make_settings,
    quiet_connect,
    wants_json,
)

if TYPE_CHECKING:
    from logbus.admin import Drift
    from logbus.management import ManagementApi, Snapshot
    from logbus.policies import PolicyApplied
    from logbus.settings import Settings
    from logbus.topology import Topology

__all__ = ["ManagementOption", "PoliciesOption", "register"]

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

#: ``--policies``: every queue's bounds, dead-lettering and TTLs in a RabbitMQ policy.
PoliciesOption = Annotated[
    bool,
    typer.Option(
        "--policies",
        help="Put every shared queue's bounds, dead-lettering and TTLs (max-length, "
        "overflow, message-ttl, dead-letter-*, ...) into a RabbitMQ policy, as a queue's "
        'bounds = "policy" does, instead of queue arguments: policy logbus-<queue>, '
        "pattern ^<queue>$ (escaped), apply-to queues, priority 10. The queues are then "
        "declared without those arguments, so other clients may declare them with plain "
        "flags. Needs the management API.",
    ),
]

APPLY_EPILOG = """Examples:

\b
  logbus topology apply                  # the built-in default topology
  logbus topology apply --config config/logbus.toml
  logbus topology apply --url amqp://user:pass@mq1:5672/logs
  logbus topology apply --json | jq -r '.applied[].state'
  logbus topology apply --policies --config config/tutorial.toml   # bounds as policies

Policies (--policies, or bounds = "policy" on a queue) are put first, through the
management API, so that a queue created next is bounded from its first record.
RabbitMQ applies one policy per queue, the highest priority's: logbus's (10)
outranks a catch-all at 0; `logbus topology diff` names a policy that outranks it.
A queue that exists with the arguments declared must be deleted before its bounds
can move to a policy (the error says which argument and the command).

Exit status: 0 declared, 69 broker (or, for policies, its management API)
unreachable, 78 an entity exists with other properties (the error names the
property, both values and the way out).
"""

SHOW_EPILOG = """Examples:

\b
  logbus topology show                   # the built-in default
  logbus topology show --config config/logbus.toml
  logbus topology show --json | jq -r '.queues[].name'
  logbus topology show --policies        # with the bounds as RabbitMQ policies
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
  logbus topology diff --policies        # also the policies apply --policies puts

Exit status: 0 in sync, 1 drift, 69 broker unreachable, 78 bad config.
"""


def apply(
    config: ConfigOption = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
    policies: PoliciesOption = False,
    management_url: ManagementOption = None,
) -> None:
    """Declare the config's exchanges, queues and bindings on the broker.

    Idempotent: what exists with the same properties stays as it is. Prints one
    line per entity: created, existed, or bound (bindings). An entity that exists
    with other properties is refused, naming the property and both values.
    Policies (--policies, or bounds = "policy") go first, through the management API.
    """
    from logbus import admin, management
    from logbus.settings import redact_url
    from logbus.transports import connect

    settings = make_settings(url, config)
    topology = _topology(settings, policies)
    put = _apply_policies(settings, topology, management_url)
    with quiet_connect():
        transport = connect(settings.url, settings=settings)
    with transport:
        applied = admin.apply(transport, topology)
    where = f"{redact_url(settings.url)} (vhost {management.vhost_of(settings.url)})"
    if wants_json(as_json):
        found = [p.to_dict() for p in put] + [a.to_dict() for a in applied]
        typer.echo(json.dumps({"url": redact_url(settings.url), "applied": found}))
        return
    lines: list[tuple[str, str, str]] = [(p.state, "policy", p.name) for p in put]
    lines += [(a.state, a.entity, a.name) for a in applied]
    for state, entity, name in lines:
        typer.echo(f"{state:<8} {entity:<9} {name}")
    created = sum(state == "created" for state, _, _ in lines)
    typer.secho(f"applied {_counts(topology)} on {where}: {created} created", bold=True)


def _topology(settings: Settings, policies: bool) -> Topology:
    """The config's topology; with ``policies``, every queue's bounds in a policy."""
    topology = settings.topology()
    if policies:
        from logbus.topology import with_policies

        return with_policies(topology)
    return topology


def _apply_policies(
    settings: Settings, topology: Topology, management_url: str | None
) -> tuple[PolicyApplied, ...]:
    """Put the topology's policies through the management API (none wanted: nothing)."""
    from logbus.topology import policies

    wanted = policies(topology)
    if not wanted:
        return ()
    from logbus import management
    from logbus.errors import EX_UNAVAILABLE
    from logbus.policies import NEEDS_API, apply_policies

    api = management.management_api(settings.url, management_url)
    if api is None:
        raise fail(NEEDS_API, EX_UNAVAILABLE)
    return apply_policies(api, management.vhost_of(settings.url), wanted)


def show(
    config: ConfigOption = None, as_json: JsonOption = False, policies: PoliciesOption = False
) -> None:
    """Print the config's topology: exchanges, queues with their arguments, bindings,
    emit targets and the policies it puts. Reads the file only; no broker needed."""
    from logbus.topology import policies as policies_of

    settings = make_settings(None, config)
    topology = _topology(settings, policies)
    wanted = policies_of(topology)
    if wants_json(as_json):
        extra = {"policies": [{"name": p.name} | p.body() for p in wanted]} if wanted else {}
        typer.echo(json.dumps(topology.to_dict() | extra))
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
        optional = "" if t.mandatory else "  (not mandatory)"
        where = t.exchange or "(default exchange)"
        typer.echo(f"  {t.label}: {where}  key {t.key}{optional}")
    if wanted:
        typer.echo("\npolicies (logbus topology apply puts them; the queues are declared without)")
        for p in wanted:
            typer.echo(f"  {p}")


def diff(
    config: ConfigOption = None,
    url: UrlOption = None,
    management_url: ManagementOption = None,
    as_json: JsonOption = False,
    policies: PoliciesOption = False,
) -> None:
    """Compare the config with what the broker has; exit 1 on drift.

    Asks the management API (exchanges, queues and their arguments, bindings) and,
    when it does not answer, passive declares over AMQP, which tell only whether
    each exchange and queue exists. Drift is a missing entity or binding, or a
    property with another value (named, with both values). What the broker has
    beyond the config is not drift; entities named like the config's are listed.
    The config's policies (--policies, bounds = "policy") are compared too, through
    the management API only.
    """
    from logbus import admin, management
    from logbus.settings import redact_url

    settings = make_settings(url, config)
    topology = _topology(settings, policies)
    api = management.management_api(settings.url, management_url)
    with quiet_connect():
        seen = management.snapshot(settings, topology, management=api)
    drift = admin.diff(topology, seen)
    wrong, unchecked = _policy_drift(topology, api, seen)
    if wants_json(as_json):
        extra = {
            "config": _source(settings.config),
            "url": redact_url(settings.url),
            "management": None if api is None else str(api),
        }
        out = extra | drift.to_dict()
        out["in_sync"] = drift.in_sync and not wrong
        out["unchecked"] = [*out["unchecked"], *unchecked]
        typer.echo(json.dumps(out | {"policies": list(wrong)}))
    else:
        for line in unchecked:
            typer.echo(f"not checked: {line}")
        for line in wrong:
            typer.secho(f"  {line}", fg=typer.colors.RED)
        _render_drift(settings, topology, drift, api)
    if not drift.in_sync or wrong:
        raise typer.Exit(1)


def _policy_drift(
    topology: Topology, api: ManagementApi | None, seen: Snapshot
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """How the broker's policies differ from the topology's, and what could not be checked."""
    from logbus.topology import policies

    wanted = policies(topology)
    if not wanted:
        return (), ()
    if api is None or seen.via != "management":
        return (), ("policies: only the management API lists them",)
    from logbus.policies import policy_drift, read_policies

    return policy_drift(wanted, read_policies(api, seen.vhost), seen.queues), ()


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
