"""``logbus emit``: publish records, confirmed, from the arguments, a file or stdin.

Imports stay inside the functions: the command line registers this module at
start-up, and ``logbus emit --help`` must not pay for pydantic or pika.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from logbus.cli.common import ConfigOption, UrlOption, fail, make_settings, quiet_connect
from logbus.errors import EX_CONFIG, EX_DATAERR, EX_TEMPFAIL, NotConfirmed

if TYPE_CHECKING:
    from logbus.emitter import Emitter, LineBatch, PartlyRouted
    from logbus.record import LogRecord
    from logbus.topology import EmitTarget, Topology
    from logbus.transports.base import Transport

__all__ = ["CHUNK", "EPILOG", "emit", "partly_routed", "register", "unconfirmed"]

#: Lines read, checked and handed to the transport at a time; the transport keeps
#: publishes in flight across chunks, so confirms stay pipelined.
CHUNK = 5000

EPILOG = """Examples:

\b
  logbus emit kern.critical "disk /dev/sda1 failed"
  logbus emit auth.warning "failed login" --host web1 --field user=root --field tries:=3
  journalctl -o cat -f | logbus emit daemon.info       # one record per line of stdin
  logbus emit local0.info --file /var/log/app.log      # one per line, with a progress bar
  app --json-logs | logbus emit --json user.info       # JSON lines, their own keys win
  logbus emit user.info --queue task_queue "resize photo 42"   # the tutorial's new_task
  logbus emit kern.info --exchange audit "keys rotated"        # that exchange, key kern.info
  logbus emit --spool /var/spool/logbus-emit cron.info "backup done"  # kept if the broker is away
  logbus emit kern.critical "disk failed" --target direct_logs --target topic_logs
                                   # only those emit targets (a retry after exit 75)

\b
Exit status:
  0   every record was confirmed by the broker, or (--spool) the broker was away and
      those it did not confirm were kept in the spool (stderr counts them)
  2   usage (bad option, no message)
  65  bad routing key or bad line (stderr names the line; nothing of its chunk was sent),
      or a record larger than the broker's max_message_size
  69  the broker cannot be reached (stderr names the host)
  75  some records were not confirmed (stderr counts them): send them again later.
      With several emit targets, stderr names the targets that took the record and
      those that did not: send again with --target for each missing one (no duplicate
      where it arrived). A target with mandatory = false that no queue takes is fine.
  77  the broker refused the user, the password or the vhost
  78  configuration (topology file without [[emit]], settings, a malformed URL;
      --exchange names no exchange, --target names no emit target)
"""

_STDIN = "-"


def emit(
    ctx: typer.Context,
    key: Annotated[
        str | None,
        typer.Argument(
            metavar="FACILITY.SEVERITY",
            help="Routing key, e.g. kern.critical (aliases such as crit, err, warn are fine). "
            "Optional with --json when every line names its own facility and severity.",
            show_default=False,
        ),
    ] = None,
    message: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="MESSAGE",
            help="The message, its words joined by spaces. '-' (or nothing, when stdin is "
            "not a terminal) reads one record per line from stdin.",
            show_default=False,
        ),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Read one record per line from this file ('-' is stdin).",
            exists=True,
            dir_okay=False,
            readable=True,
            allow_dash=True,
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(help="The record's host. Default: this machine's name.", show_default=False),
    ] = None,
    app: Annotated[
        str | None, typer.Option(help="The record's app. Default: logbus.", show_default=False)
    ] = None,
    pid: Annotated[
        int | None,
        typer.Option(help="The record's pid. Default: this process's.", show_default=False),
    ] = None,
    field: Annotated[
        list[str] | None,
        typer.Option(
            "--field",
            metavar="KEY=VALUE",
            help="Add to the record's fields; repeat for more. KEY=VALUE keeps VALUE a "
            "string; KEY:=JSON stores JSON (tries:=3, ok:=true, tags:='[\"a\"]').",
            show_default=False,
        ),
    ] = None,
    json_lines: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Lines are JSON objects carrying their own message, and optionally facility, "
            "severity, host, app, pid, id, ts and fields (other keys go into fields). A line "
            "without facility/severity uses the positional FACILITY.SEVERITY.",
        ),
    ] = False,
    exchange: Annotated[
        str | None,
        typer.Option(
            help="Publish to this exchange, with the record's FACILITY.SEVERITY key, instead "
            "of the topology's emit targets. It must exist.",
            show_default=False,
        ),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option(
            help="Publish straight to this work queue (through the default exchange), "
            "declaring it durable if it does not exist.",
            show_default=False,
        ),
    ] = None,
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            metavar="NAME",
            help="Publish to this emit target of the topology only (its name, else its "
            "exchange, else the queue of a default-exchange target; see logbus topology "
            "show); repeat, or separate with commas, for several. After a partly routed "
            "emit (exit 75), the missing targets named on stderr.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait for the broker's confirms (without progress) before "
            "giving up. Default: $LOGBUS_CONFIRM_TIMEOUT, else 30.",
            show_default=False,
        ),
    ] = None,
    spool: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="When the broker is away, keep the records it did not confirm in this "
            "directory and exit 0 (stderr says how many); every emit with it sends "
            "those first, in order. See 'Spool' in the README.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Publish log records, each confirmed by the broker.

    One record from the MESSAGE words, or one per line from stdin or --file
    (blank lines are skipped). Records go to the topology's emit targets (the
    topic exchange logbus.topic, with key FACILITY.SEVERITY, which feeds every
    subscriber and the work queue), to --exchange, or to --queue. What they can
    reach is declared first, so no record is lost for want of a queue. Records
    are persistent and publisher confirms are always on: the exit status says
    whether the broker took every one.

    Lines are read in chunks of 5,000, and a chunk is sent only when every line
    in it makes a record: a batch of up to 5,000 lines is all or nothing; in a
    longer one a bad line stops the run before its chunk, and the error says
    which line and how many records were sent before it. Confirms are
    pipelined across chunks. On a terminal, stderr shows progress for files
    and long stdin batches.
    """
    texts = list(message or ())
    if key == _STDIN and not texts and file is None:  # `logbus emit --json -`
        key, texts = None, [_STDIN]
    source = _pick_source(ctx, texts, file, json_lines)
    if key is None and not json_lines:
        ctx.fail("give the routing key FACILITY.SEVERITY, e.g. kern.critical")
    if exchange is not None and queue is not None:
        ctx.fail("--exchange and --queue are two different targets: give one")
    names = [n.strip() for t in target or () for n in t.split(",") if n.strip()]
    if names and (exchange is not None or queue is not None):
        ctx.fail("--target picks emit targets of the topology: not with --exchange or --queue")
    if exchange == "":
        ctx.fail("--exchange '' is the default exchange: use --queue NAME for a queue")
    if queue is not None and not 0 < len(queue.encode()) <= 255:
        ctx.fail("--queue must be a name of 1 to 255 bytes")
    if timeout is not None and not timeout > 0:
        ctx.fail(f"--timeout must be a positive number of seconds, not {timeout:g}")
    defaults: dict[str, Any] = {
        name: value
        for name, value in (("host", host), ("app", app), ("pid", pid))
        if value is not None
    }
    fields = _parse_fields(ctx, field or ())
    if fields:
        defaults["fields"] = fields

    from logbus.emitter import Emitter, LineBatch
    from logbus.record import LogRecord
    from logbus.transports import connect

    settings = make_settings(url, config, confirm_timeout=timeout)
    topology = settings.topology()  # a bad topology file fails before anything is read
    if exchange is None and queue is None and not topology.emit:
        from logbus.topology import no_emit_targets

        raise fail(no_emit_targets(settings.config), EX_CONFIG)
    targets, needed = _targets(topology, exchange, queue, names)
    batch: LineBatch | None = None
    with contextlib.ExitStack() as cleanup:
        records: Iterable[LogRecord]
        if source is None:
            assert key is not None
            records = [LogRecord.from_key(key, " ".join(texts), **defaults)]
        else:
            stream = _open(source)
            if stream is not sys.stdin.buffer:
                cleanup.callback(stream.close)
            batch = LineBatch(
                stream,
                key,
                json_lines=json_lines,
                source="<stdin>" if source == _STDIN else str(source),
                chunk=CHUNK,
                defaults=defaults,
            )
            records = batch
        progress = _Progress.choose(source)
        cleanup.callback(progress.finish)
        started = time.monotonic()

        def open_emitter() -> Emitter:
            with quiet_connect():
                transport = connect(settings.url, settings=settings)
            cleanup.callback(transport.close)
            _check_target(transport, topology, exchange, queue)
            return Emitter(settings=settings, topology=needed, transport=transport, targets=targets)

        if spool is None:
            _send(open_emitter(), records, batch, progress)
        else:  # imported only here: a plain emit stays light
            from logbus.cli._emit_spool import SpoolingSend, open_spool

            spooling = SpoolingSend(open_spool(spool))
            cleanup.callback(spooling.spool.close)
            spooling.report(spool, spooling.run(open_emitter, records))
    if batch is not None and batch.error is not None:
        if not batch.records:
            raise fail(f"{batch.error}; nothing was sent", EX_DATAERR)
        raise fail(
            f"{batch.error}; the {_records(batch.records)} before line {batch.unsent_from} "
            f"were sent and confirmed, none from there on (resume from line {batch.unsent_from})",
            EX_DATAERR,
        )
    if progress.shown:
        count = batch.records if batch is not None else 1
        seconds = time.monotonic() - started
        typer.echo(f"logbus: {_records(count)} emitted and confirmed in {seconds:.1f}s", err=True)


def register(app: typer.Typer) -> None:
    """Add ``logbus emit`` to the app."""
    app.command("emit", epilog=EPILOG, no_args_is_help=False)(emit)


# -- what to read ---------------------------------------------------------------------


def _pick_source(
    ctx: typer.Context, texts: list[str], file: Path | None, json_lines: bool
) -> Path | str | None:
    """Where the records come from: None for the MESSAGE words, ``"-"`` or a path."""
    if file is not None:
        if texts:
            ctx.fail("give MESSAGE or --file, not both")
        return _STDIN if str(file) == _STDIN else file
    if texts == [_STDIN]:
        return _STDIN
    if texts:
        if json_lines:
            ctx.fail("--json reads JSON lines from stdin or --file, not from MESSAGE")
        return None
    if sys.stdin is None or sys.stdin.isatty():
        ctx.fail("no message: give MESSAGE, '-' to read stdin, or --file PATH")
    return _STDIN


def _open(source: Path | str) -> BinaryIO:
    if source == _STDIN:
        return sys.stdin.buffer
    try:
        return Path(source).open("rb")
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror or exc}", EX_DATAERR) from None


def _parse_fields(ctx: typer.Context, items: Iterable[str]) -> dict[str, Any]:
    import json

    fields: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.rstrip(":"):
            ctx.fail(f"--field {item!r} is not KEY=VALUE or KEY:=JSON")
        if name.endswith(":"):
            name = name[:-1]
            try:
                fields[name] = json.loads(value)
            except ValueError as exc:
                ctx.fail(f"--field {item!r}: the value after ':=' is not JSON ({exc})")
        else:
            fields[name] = value
    return fields


# -- where to send ---------------------------------------------------------------------


def _targets(
    topology: Topology, exchange: str | None, queue: str | None, names: list[str]
) -> tuple[tuple[EmitTarget, ...], Topology]:
    """The emit targets, and the part of the topology they reach (what to declare)."""
    from logbus.emitter import pick_targets, reachable
    from logbus.topology import EmitTarget

    if queue is not None:
        literal = queue.replace("{", "{{").replace("}", "}}")
        return (EmitTarget(exchange="", key=literal),), reachable(topology, queues=[queue])
    if exchange is not None:
        return (EmitTarget(exchange=exchange),), reachable(topology, exchanges=[exchange])
    targets = pick_targets(topology.emit, names) if names else topology.emit
    if any(not t.exchange and "{" in t.key for t in targets):
        return targets, topology  # a queue named per record: any queue may be reached
    exchanges = [t.exchange for t in targets if t.exchange]
    queues = [t.key for t in targets if not t.exchange]
    return targets, reachable(topology, exchanges, queues)


def _check_target(
    transport: Transport, topology: Topology, exchange: str | None, queue: str | None
) -> None:
    """An --exchange must exist; a --queue is used as it is, else declared durable."""
    from logbus.errors import NotFound

    if exchange is not None and exchange not in {e.name for e in topology.exchanges}:
        try:
            transport.declare_exchange(exchange, "topic", passive=True)
        except NotFound:
            raise fail(
                f"exchange {exchange!r} does not exist on the broker and the topology does "
                "not declare it; check the name, or add it to the topology (--config)",
                EX_CONFIG,
            ) from None
    if queue is not None and queue not in {q.name for q in topology.queues}:
        try:
            transport.declare_queue(queue, passive=True)
        except NotFound:
            transport.declare_queue(queue, durable=True)


def _send(
    emitter: Emitter,
    records: Iterable[LogRecord],
    batch: LineBatch | None,
    progress: _Progress,
) -> None:
    sent = 0

    def counted() -> Iterator[LogRecord]:
        nonlocal sent
        for record in records:
            sent += 1
            progress.step(sent)
            yield record

    from logbus.emitter import PartlyRouted

    try:
        emitter.emit_many(counted())
    except PartlyRouted as exc:
        also = f"; also {batch.error}" if batch is not None and batch.error else ""
        raise fail(partly_routed(exc) + also, EX_TEMPFAIL) from None
    except NotConfirmed as exc:
        also = f"; also {batch.error}" if batch is not None and batch.error else ""
        raise fail(unconfirmed(exc, sent, len(emitter.targets)) + also, EX_TEMPFAIL) from None


def partly_routed(exc: PartlyRouted) -> str:
    """What an emit says when some emit targets took the records and others did not:
    both lists, why, and the ``--target`` options that send to the missing ones only
    (records after the batch concerned were not sent at all)."""
    import shlex

    retry = " ".join(f"--target {shlex.quote(t.label)}" for t in exc.missed)
    return f"{exc}; to send to the missing targets only, emit again with {retry}"


def unconfirmed(exc: NotConfirmed, sent: int, targets: int) -> str:
    """What an emit says when the broker did not confirm: how many of what, and why."""
    if targets == 1:
        what = f"{exc.unconfirmed} of {_records(sent)}"
    else:
        what = (
            f"{exc.unconfirmed} of {sent * targets} messages ({_records(sent)} x "
            f"{targets} emit targets)"
        )
    return f"{what} not confirmed: {exc}"


def _records(count: int) -> str:
    return f"{count} record{'' if count == 1 else 's'}"


# -- showing progress ------------------------------------------------------------------


class _Progress:
    """Records handed to the broker so far, on stderr when it is a terminal.

    A bar for a file (its non-blank lines counted first); a counter for stdin,
    shown once a batch is longer than one chunk.
    """

    STEP = 500

    def __init__(self, total: int | None, *, visible: bool, after: int = 0) -> None:
        self.visible = visible
        self.shown = False
        self._total = total
        self._after = after
        self._bar: Any = None
        self._done = 0

    @classmethod
    def choose(cls, source: Path | str | None) -> _Progress:
        if source is None or not sys.stderr.isatty():
            return cls(None, visible=False)
        if source != _STDIN and Path(source).is_file():
            with Path(source).open("rb") as lines:
                total = sum(1 for line in lines if line.strip())
            return cls(total, visible=True)
        return cls(None, visible=True, after=CHUNK)

    def step(self, count: int) -> None:
        if not self.visible or count % self.STEP or count <= self._after:
            return
        self.shown = True
        if self._total is None:
            typer.echo(f"\rlogbus: emitting  {count:,} records", err=True, nl=False)
            return
        if self._bar is None:
            self._bar = typer.progressbar(
                length=self._total, label="logbus: emitting", file=sys.stderr, show_pos=True
            )
            self._bar.__enter__()
        self._bar.update(count - self._done)
        self._done = count

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        elif self.shown:
            typer.echo("", err=True)
