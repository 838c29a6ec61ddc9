"""``logbus ingest``: the syslog gateway (UDP, TCP, TLS, RELP, unix) into RabbitMQ, confirmed.

Thin: options (and a service file), then :func:`logbus.ingest.gateway.run`.
Imports stay inside the function, so that registering the command costs the
other commands nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from logbus.cli.common import ConfigOption, UrlOption, make_settings

__all__ = ["EPILOG", "ingest", "register"]

EPILOG = """Examples:

\b
  logbus ingest --udp 514 --tcp 514                 # classic syslog, on 127.0.0.1
  logbus ingest --tcp 0.0.0.0:514 --spool /var/spool/logbus   # keep lines while RabbitMQ is away
  logbus ingest --tls 0.0.0.0:6514 --cert srv.pem --key srv.key [--client-ca ca.pem]
  logbus ingest --relp 0.0.0.0:2514                 # rsyslog omrelp: answered once confirmed
  logbus ingest --unix /run/logbus/log              # a /dev/log for local programs
  logbus ingest --service-file config/services/ingest.toml

\b
Each message becomes a record routed by its PRI: <facility>.<severity> (local0.err).
Host, app, pid, msgid and structured data come from the header; the sender's address
is kept in fields.peer; a line with no header is still a record (raw text kept).
Every listener binds to 127.0.0.1 unless its address names a host (0.0.0.0, ::).

\b
Nothing read is dropped while RabbitMQ lags: TCP, TLS and RELP stop reading until
confirms catch up (--max-in-flight); UDP counts what it had to drop. With --spool,
records wait on disk while the broker is down and are replayed in order after.

\b
Metrics (--metrics-port): /metrics per listener (received, parsed, unparsed,
published, confirmed, spooled, dropped, in flight) and /healthz.

\b
Exit status:
  0   stopped by SIGTERM/SIGINT with everything confirmed or spooled
  69  the broker cannot be reached at start (and no --spool)
  75  stopped with records neither confirmed nor spooled (--drain-timeout passed)
  77  the broker refused the user, the password or the vhost
  78  configuration: no listener, an address in use, TLS files, a bad service file
"""


def ingest(
    udp: Annotated[
        list[str] | None,
        typer.Option(metavar="[HOST:]PORT", help="Syslog over UDP (RFC 5426); repeatable."),
    ] = None,
    tcp: Annotated[
        list[str] | None,
        typer.Option(
            metavar="[HOST:]PORT",
            help="Syslog over TCP: octet counting or line ends, detected per connection "
            "(RFC 6587).",
        ),
    ] = None,
    tls: Annotated[
        list[str] | None,
        typer.Option(metavar="[HOST:]PORT", help="Syslog over TLS (RFC 5425); needs --cert/--key."),
    ] = None,
    relp: Annotated[
        list[str] | None,
        typer.Option(
            metavar="[HOST:]PORT",
            help="RELP (rsyslog omrelp): each frame answered once RabbitMQ confirmed it.",
        ),
    ] = None,
    unix: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH", help="A unix datagram socket, like /dev/log."),
    ] = None,
    cert: Annotated[Path | None, typer.Option(help="TLS server certificate (PEM).")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    client_ca: Annotated[
        Path | None,
        typer.Option(help="Require TLS clients to present a certificate signed by this CA."),
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE",
            help="Longest message kept whole (64k default); longer ones are cut and flagged.",
        ),
    ] = None,
    max_per_peer: Annotated[
        int | None, typer.Option(min=1, help="Connections one address may hold (64).")
    ] = None,
    idle_timeout: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Close a connection silent this long (5m)."),
    ] = None,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Records read and not yet confirmed, over all listeners (40000); at the "
            "bound streams stop reading and datagrams are dropped (counted).",
        ),
    ] = None,
    spool: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Keep records here while RabbitMQ is unreachable, blocked or refusing; "
            "replayed in order, deleted once confirmed, kept across restarts.",
        ),
    ] = None,
    spool_max_size: Annotated[
        str | None, typer.Option(metavar="SIZE", help="The spool's bound on disk (1G).")
    ] = None,
    spool_fsync: Annotated[
        str | None,
        typer.Option(
            metavar="POLICY",
            help="always (each batch on disk before it counts as kept), second, never.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(metavar="PORT", min=0, max=65535, help="Serve /metrics and /healthz."),
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="Where to serve them (127.0.0.1).")
    ] = None,
    drain_timeout: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="On SIGTERM, wait this long for confirms (30s)."),
    ] = None,
    confirm_timeout: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="A batch with no confirm for this long is held and sent again, or spooled "
            "(default: $LOGBUS_CONFIRM_TIMEOUT, 30s; 5s with --spool).",
        ),
    ] = None,
    service_file: Annotated[
        Path | None,
        typer.Option(
            metavar="TOML",
            help="Read options from an [ingest] table (config/services/ingest.toml); "
            "options given here win.",
        ),
    ] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> int:
    """Receive syslog (UDP, TCP, TLS, RELP, unix socket) and publish it to RabbitMQ, confirmed."""
    given: dict[str, Any] = {
        k: v for k, v in locals().items() if v is not None and k not in ("service_file", "config")
    }
    options: dict[str, Any] = {}
    if service_file is not None:
        from logbus.ingest.config import read_service_file

        options = read_service_file(service_file)
    options.update(given)
    plan = _plan(options, config)

    from logbus.ingest.gateway import Running, run

    def ready(running: Running) -> None:
        for address in running.addresses:
            print(f"logbus ingest: listening on {address}", file=sys.stderr, flush=True)

    return run(plan, ready=ready)


def _plan(options: dict[str, Any], config: Path | None) -> Any:
    """The gateway's plan from the merged options (strings checked here, once)."""
    from logbus.durations import parse_duration
    from logbus.errors import ConfigError
    from logbus.ingest.config import parse_size
    from logbus.ingest.gateway import KINDS, IngestPlan, Listen
    from logbus.spool import FSYNC_POLICIES

    settings = make_settings(options.get("url"), config)
    listeners = tuple(
        Listen.parse(kind, address) for kind in KINDS for address in options.get(kind) or ()
    )
    fsync = options.get("spool_fsync", "always")
    if fsync not in FSYNC_POLICIES:
        raise ConfigError(f"--spool-fsync must be one of {', '.join(FSYNC_POLICIES)}")
    files = ("cert", "key", "client_ca", "spool")
    paths: dict[str, Any] = {k: Path(options[k]) for k in files if k in options}
    numbers: dict[str, Any] = {
        k: options[k] for k in ("max_per_peer", "max_in_flight", "metrics_port") if k in options
    }
    if "max_size" in options:
        numbers["max_size"] = parse_size(options["max_size"], what="--max-size")
    if "spool_max_size" in options:
        numbers["spool_max_bytes"] = parse_size(options["spool_max_size"], what="--spool-max-size")
    for name in ("idle_timeout", "drain_timeout", "confirm_timeout"):
        if name in options:
            numbers[name] = parse_duration(options[name], what=f"--{name.replace('_', '-')}")
    return IngestPlan(
        listeners=listeners,
        settings=settings,
        topology=settings.topology(),
        spool_fsync=fsync,
        metrics_host=options.get("metrics_host", "127.0.0.1"),
        **paths,
        **numbers,
    )


def register(app: typer.Typer) -> None:
    """Add ``logbus ingest`` to the app."""
    app.command("ingest", epilog=EPILOG)(ingest)
