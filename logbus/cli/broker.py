"""``logbus broker serve``: run logbus's own broker for the processes of this machine.

Imports stay inside the functions: the command line registers this module at
start-up, and ``logbus --help`` must not pay for the broker.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from logbus.cli.common import ConfigOption, make_settings
from logbus.errors import ConfigError

if TYPE_CHECKING:
    from logbus.broker import Broker
    from logbus.topology import Topology
    from logbus.transports import Transport

__all__ = ["SERVE_EPILOG", "register", "serve"]

SERVE_EPILOG = """Examples:

\b
  logbus broker serve --listen /run/logbus/broker.sock
  logbus demo --url local:///run/logbus/broker.sock        # from another shell
  logbus emit --url local:///run/logbus/broker.sock kern.critical "disk failed"
  LOGBUS_URL=local:///run/logbus/broker.sock logbus subscribe 'kern.*'

\b
  logbus broker serve --listen /run/logbus/broker.sock --config /etc/logbus/logbus.toml
  logbus broker serve --listen /run/logbus/broker.sock --data-dir /var/lib/logbus
  logbus broker serve --listen ./broker.sock --data-dir ./data --fsync always

\b
The key clients authenticate with is the socket's neighbour PATH.key (mode
0600, 32 random bytes, made on first start): whoever can read it can use the
broker. Without --data-dir, records live in the broker's memory for as long
as it runs; with it, durable queues' persistent records survive a restart and
wait in the journal, not in memory (only a small index entry each stays).
Above --memory-limit (default 40% of the machine's memory) publishers are
blocked, as by RabbitMQ's memory alarm: their publishes go unconfirmed until
consumers have drained the queues below it.

\b
Exit status:
  0   stopped by SIGTERM or Ctrl-C (SIGINT); the socket file is removed
  78  configuration: a broker already answers on PATH, the key file is
      readable by others, the data directory is in use or damaged,
      --fsync without --data-dir, a --memory-limit that is not a size
"""


class Fsync(enum.StrEnum):
    """When the journal forces writes to disk."""

    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


def serve(
    listen: Annotated[
        Path,
        typer.Option(
            "--listen",
            metavar="PATH",
            help="Unix socket to listen on (created mode 0600; a stale one is replaced).",
            dir_okay=False,
            show_default=False,
        ),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            metavar="DIR",
            help="Journal durable entities and persistent records here (created 0700); "
            "without it the broker keeps everything in memory only.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    fsync: Annotated[
        Fsync | None,
        typer.Option(
            "--fsync",
            help="With --data-dir: when to force the journal to disk (default: interval).",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            "--memory-limit",
            metavar="SIZE",
            help="Block publishers while the broker holds more than SIZE of records "
            "(512M, 2G; default: 40% of this machine's memory), as RabbitMQ's memory alarm.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve an in-process broker (RabbitMQ's semantics) on a Unix socket until stopped.

    Clients on this machine reach it with --url local://PATH; each connection
    is one AMQP-style connection, and a client that dies has its unacked
    records redelivered to others. The topology (--config, $LOGBUS_CONFIG, else
    the built-in default) is declared before the first client connects, as
    `logbus topology apply` would, so that records emitted at once have their
    queues.
    """
    from logbus.broker.server import make_broker
    from logbus.broker.server import serve as run
    from logbus.broker.watermark import default_limit
    from logbus.ingest.config import parse_size

    limit = (
        default_limit() if memory_limit is None else parse_size(memory_limit, what="--memory-limit")
    )
    if limit <= 0:
        raise ConfigError(f"--memory-limit must be above zero, not {memory_limit!r}")

    # The file is read before anything listens: a bad one stops here with one line (78).
    topology = make_settings(config=config).topology()
    broker = make_broker(
        data_dir=None if data_dir is None else str(data_dir),
        fsync=None if fsync is None else fsync.value,
    )
    try:
        _declare(broker, topology)
    except BaseException:
        broker.close()
        raise
    stored = "in memory" if data_dir is None else f"journal in {data_dir}"
    stored += f", memory limit {limit / 2**20:,.0f} MiB"

    def ready(path: str, key_file: str) -> None:
        typer.echo(
            f"logbus broker: listening on {path} (key file {key_file}, {stored}); "
            f"clients use --url local://{path}; stop with Ctrl-C or SIGTERM",
            err=True,
        )

    try:
        run(str(listen), broker=broker, on_ready=ready, memory_limit=limit)
    finally:
        broker.close()  # flushes the journal


def _declare(broker: Broker, topology: Topology) -> None:
    """Declare ``topology`` on ``broker`` through a session of its own, as a client would."""
    from logbus.topology import declare
    from logbus.transports.inprocess.memory import SessionTransport

    with SessionTransport("local://", broker) as session:
        # A session has every operation declaring needs; consuming it has not, and needs not.
        declare(cast("Transport", session), topology)


def register(app: typer.Typer) -> None:
    """Add the ``broker`` command group to ``app``."""
    group = typer.Typer(
        name="broker",
        help="Run logbus's own broker (RabbitMQ's semantics, no RabbitMQ) for this machine.",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    group.command("serve", epilog=SERVE_EPILOG)(serve)
    app.add_typer(group, name="broker")
