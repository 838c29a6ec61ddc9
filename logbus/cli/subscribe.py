"""``logbus subscribe``: bind a queue by keys, severities, exact keys or headers; print records.

Imports stay inside the functions: the command line registers this module at
start-up, and ``logbus subscribe --help`` must not pay for pydantic or pika.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from time import monotonic
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Literal

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
from logbus.errors import EX_TEMPFAIL

if TYPE_CHECKING:
    from logbus.record import LogRecord
    from logbus.subscriber import Subscriber

__all__ = ["EPILOG", "register", "subscribe"]

EPILOG = """Examples:

\b
  logbus subscribe 'kern.*' '*.critical'         # topic patterns: * one word, # any
  logbus subscribe --severity critical -s alert   # the same as '*.critical' '*.alert'
  logbus subscribe --exact kern.critical          # exact keys, on the direct exchange
  logbus subscribe --all --json | jq .message     # everything (fanout), as JSON lines
  logbus subscribe --header host=web1 --header app=nginx --match any
  logbus subscribe 'auth.#' --queue audit --durable   # keeps records while you are away
  logbus subscribe '*.critical' --count 1 --timeout 30   # wait for one, at most 30s
  logbus subscribe --since 10m 'kern.*'           # the last ten minutes, then follow
  logbus subscribe --from-start --until 1h '#'    # everything kept, up to an hour ago
  logbus subscribe --offset 1200 '*.critical'     # from stream offset 1200 on

\b
Exit status:
  0   --count records arrived; or, without --count, stopped by --timeout,
      --until, Ctrl-C (SIGINT) or SIGTERM
  2   usage (nothing to subscribe to, a bad option)
  69  the broker cannot be reached
  75  --timeout passed before --count records arrived, or the broker ended
      the subscription (e.g. its queue was deleted), or it could not be
      restored after a reconnect
  78  configuration (topology file, settings, a queue that exists otherwise,
      also when found so after a reconnect; history asked of a topology
      without a history stream)
  130/143  Ctrl-C/SIGTERM before --count records arrived
"""

#: The longest the loop waits for a record before it looks whether a signal came, in seconds.
POLL = 0.25

_COLOURS: dict[str, dict[str, Any]] = {
    "emergency": {"fg": "red", "bold": True, "reverse": True},
    "alert": {"fg": "red", "bold": True, "reverse": True},
    "critical": {"fg": "red", "bold": True},
    "error": {"fg": "red"},
    "warning": {"fg": "yellow"},
    "notice": {"fg": "cyan"},
    "info": {"fg": "green"},
    "debug": {"fg": "bright_black"},
}


def subscribe(
    ctx: typer.Context,
    keys: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="BINDING_KEY",
            help="Topic binding keys on the topic exchange: words separated by dots, "
            "'*' is exactly one word, '#' zero or more ('kern.*', '*.critical', 'auth.#').",
            show_default=False,
        ),
    ] = None,
    severity: Annotated[
        list[str] | None,
        typer.Option(
            "--severity",
            "-s",
            help="Records of this severity, any facility: binds '*.SEVERITY'. Repeatable.",
            show_default=False,
        ),
    ] = None,
    exact: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY",
            help="Records with exactly this key, on the direct exchange. Repeatable.",
            show_default=False,
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every record, through the fanout exchange.")
    ] = False,
    header: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=VALUE",
            help="Records whose header KEY is VALUE, on the headers exchange; records carry "
            "facility, severity, host and app. Repeatable.",
            show_default=False,
        ),
    ] = None,
    match: Annotated[
        Literal["all", "any"],
        typer.Option(help="With several --header: all of them must match, or any one."),
    ] = "all",
    queue: Annotated[
        str | None,
        typer.Option(
            help="Name the subscription's queue instead of a temporary one; it stays (with "
            "its bindings) after you stop, and subscribers sharing it take turns.",
            show_default=False,
        ),
    ] = None,
    durable: Annotated[
        bool,
        typer.Option(help="With --queue: the queue survives a broker restart too."),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option(min=1, help="Exit 0 after this many records.", show_default=False),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Stop this many seconds after subscribing: exit 0, or 75 if --count "
            "records had not arrived by then.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            help="History first: the records of the history stream stamped since TIME (a "
            "duration ago such as 10m, 2h, 1d, or an RFC 3339 time), then new ones as they come.",
            show_default=False,
        ),
    ] = None,
    from_start: Annotated[
        bool,
        typer.Option("--from-start", help="History first: every record the stream still keeps."),
    ] = False,
    offset: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            min=0,
            help="History first: from stream offset N on.",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            metavar="TIME",
            help="With history: stop (exit 0) at the first record stamped after TIME (a "
            "duration ago or an RFC 3339 time), or once TIME has passed and the stream is quiet.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Print the records routed to a subscription, as they arrive.

    The subscription is a temporary queue (exclusive, deleted when you stop)
    bound with every selector given: binding keys and --severity on the topic
    exchange, --exact on the direct exchange, --header on the headers exchange,
    --all on the fanout exchange; a record matching several is printed once.
    After a dropped connection or a broker restart the queue is declared and
    bound again and printing goes on; a temporary queue misses what was emitted
    while disconnected, --queue NAME --durable keeps it.

    On a terminal each record is one coloured line: time, host, app, key
    (coloured by severity), message and fields. Piped, or with --json, each is
    its JSON wire form on a line of its own, flushed at once, with the routing
    key it came with as "key". Every message is a record: plain text, other JSON
    and bytes that are not UTF-8 (kept exactly, base64, in fields.body_base64).
    A key that is not <facility>.<severity> is shown beside the record's own.
    Once bound, a line on stderr says so ("logbus: subscribed ...").

    History (--since, --from-start, --offset) reads the topology's history
    stream (logbus.history, which keeps every record) instead of a queue of
    its own: the selectors are applied to what it replays, then it follows
    new records live, printed alike. --until ends the replay there.
    """
    if not (keys or severity or exact or everything or header):
        ctx.fail(
            "nothing to subscribe to: give BINDING_KEY..., --severity, --exact, --header or --all"
        )
    headers = _parse_headers(ctx, header or ())
    if durable and queue is None:
        ctx.fail("--durable needs --queue NAME: a temporary queue goes when you stop")
    if queue is not None and not 0 < len(queue.encode()) <= 255:
        ctx.fail("--queue must be a name of 1 to 255 bytes")
    if timeout is not None and not timeout > 0:
        ctx.fail(f"--timeout must be a positive number of seconds, not {timeout:g}")
    history = _history_options(ctx, since, from_start, offset, until, queue)

    from logbus.errors import PreconditionFailed, SeverityError
    from logbus.record import Severity
    from logbus.topology import mismatch

    try:
        severities = [Severity.parse(s) for s in severity or ()]
    except SeverityError as exc:
        ctx.fail(f"--severity: {exc}")
    settings = make_settings(url, config)
    topology = settings.topology()
    show = _json_line if wants_json(as_json) else _human_line
    got = 0
    ended = False  # the broker cancelled the subscription
    with _signals_raise() as stop:
        sub: Subscriber | None = None
        shown = True
        try:
            from logbus.subscriber import Subscriber

            with quiet_connect():
                sub = Subscriber(
                    settings.url,
                    keys=keys or (),
                    severities=severities,
                    exact=exact or (),
                    headers=headers,
                    match=match,
                    all=everything,
                    queue=queue,
                    durable=durable,
                    prefetch=min(count, settings.prefetch) if count else None,
                    settings=settings,
                    topology=topology,
                    **history,
                )
            typer.echo(f"logbus: subscribed: {_describe(sub)}; Ctrl-C to stop", err=True)
            stop.interrupting = False  # from here on a signal is looked at between waits
            deadline = None if timeout is None else monotonic() + timeout
            while (count is None or got < count) and stop.signum is None:
                wait = POLL if deadline is None else min(POLL, deadline - monotonic())
                if wait <= 0:
                    break  # --timeout
                record = sub.get(wait)
                if record is None:
                    if _replayed(sub):  # --until
                        break
                    if sub.ended:
                        ended = stop.signum is None
                        break
                    continue
                shown = False
                show(record)
                shown = True
                got += 1
        except PreconditionFailed as exc:
            # Declaring, or declaring again after a reconnect: the broker has the entity
            # with other properties. Say which and how to fix it, then exit 78.
            raise mismatch(exc, settings.url) from exc
        except _Stopped as exc:
            stop.signum = exc.signum
        except BrokenPipeError:
            # The reader went away (`| head -1`): stop as if by SIGPIPE, quietly.
            stop.signum = signal.SIGPIPE
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        finally:
            stop.disarm()
            if sub is not None:
                _close(sub, requeue=not shown)
    if ended:
        raise fail(
            f"the broker ended the subscription after {got} records (was its queue "
            "deleted?); subscribe again",
            EX_TEMPFAIL,
        )
    if count is None or got >= count or (sub is not None and _replayed(sub)):
        return
    if stop.signum is not None:
        name = signal.Signals(stop.signum).name
        typer.echo(f"logbus: stopped by {name} after {got} of {count} records", err=True)
        raise typer.Exit(128 + stop.signum)
    raise fail(f"timed out after {timeout:g}s with {got} of {count} records", EX_TEMPFAIL)


def register(app: typer.Typer) -> None:
    """Add ``logbus subscribe`` to the app."""
    app.command("subscribe", epilog=EPILOG)(subscribe)


def _close(sub: Subscriber, *, requeue: bool) -> None:
    """Close the subscription; a record that was not shown goes back to the queue.

    Failing to close (the connection just dropped) does not undo what was shown,
    so it is a warning: at worst the broker delivers the last record again.
    """
    from logbus.errors import TransportError

    try:
        sub.close(requeue=requeue)
    except TransportError as exc:
        typer.echo(f"logbus: warning: closing the subscription: {exc}", err=True)


def _history_options(
    ctx: typer.Context,
    since: str | None,
    from_start: bool,
    offset: int | None,
    until: str | None,
    queue: str | None,
) -> dict[str, Any]:
    """The Subscriber's history keywords, the times read here: a bad one is a usage error."""
    from logbus.durations import parse_time
    from logbus.errors import InputError

    starts = [f for f, v in (("--since", since), ("--offset", offset)) if v is not None]
    starts += ["--from-start"] if from_start else []
    if len(starts) > 1:
        ctx.fail(f"give one of --since, --from-start and --offset, not {' and '.join(starts)}")
    if until is not None and not starts:
        ctx.fail("--until needs a place to start: --since, --from-start or --offset")
    if starts and queue is not None:
        ctx.fail("history reads the history stream: it takes no --queue")
    try:
        return {
            "since": None if since is None else parse_time(since, option="--since"),
            "from_start": from_start,
            "offset": offset,
            "until": None if until is None else parse_time(until, option="--until"),
        }
    except InputError as exc:
        ctx.fail(str(exc))


def _replayed(sub: Subscriber) -> bool:
    """Whether --until ended the replay (exit 0 whatever --count said)."""
    return sub.history is not None and sub.history.done


def _parse_headers(ctx: typer.Context, items: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ctx.fail(f"--header {item!r} is not KEY=VALUE")
        if name.startswith("x-"):
            ctx.fail(f"--header {item!r}: x- headers are binding arguments, not matched")
        headers[name] = value
    return headers


def _describe(sub: Subscriber) -> str:
    """``queue Q bound to logbus.topic 'kern.*', logbus.headers {host=web1}``."""
    parts = []
    for exchange, key, arguments in sub.bindings:
        if arguments:
            shown = ", ".join(f"{k}={v}" for k, v in arguments.items())
            parts.append(f"{exchange} {{{shown}}}")
        elif key:
            parts.append(f"{exchange} {key!r}")
        else:
            parts.append(f"{exchange} (all)")
    if sub.history is not None:
        return f"history {sub.queue}, records of {', '.join(parts)}"
    return f"queue {sub.queue} bound to {', '.join(parts)}"


# -- output -----------------------------------------------------------------------------


def _json_line(record: LogRecord) -> None:
    out = sys.stdout.buffer
    out.write(record.to_bytes() + b"\n")
    out.flush()


def _human_line(record: LogRecord) -> None:
    when = record.ts.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    who = record.app if record.pid is None else f"{record.app}[{record.pid}]"
    key = typer.style(record.routing_key, **_COLOURS.get(str(record.severity), {}))
    if record.key is not None and record.key != record.routing_key:
        # The key it was published with ("error", "Kern.Critical") says more than ours.
        key += " " + typer.style(f"({_plain(record.key) or 'empty key'})", dim=True)
    host, who = _plain(record.host or "-"), _plain(who or "-")
    line = f"{typer.style(when, dim=True)} {host} {who} {key} {_plain(record.message)}"
    if record.fields:
        pairs = " ".join(f"{_plain(k)}={_value(v)}" for k, v in record.fields.items())
        line += "  " + typer.style(pairs, dim=True)
    typer.echo(line)


def _value(value: object) -> str:
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"'=" for c in value):
        return _plain(value)
    return _plain(json.dumps(value, ensure_ascii=False))


# Control characters, escaped: a record stays one line, and cannot drive the terminal.
_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}


def _plain(text: str) -> str:
    return text.translate(_ESCAPES)


# -- signals ----------------------------------------------------------------------------


class _Stopped(Exception):
    """SIGINT or SIGTERM arrived while subscribing."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StopSignals:
    """Which signal stopped the subscription; once disarmed, signals act as usual again.

    While connecting, a signal interrupts (:class:`_Stopped`). Once subscribed, it
    only sets :attr:`signum`, which the loop looks at between waits of at most
    :data:`POLL` seconds: an exception raised at whatever line the main thread is
    on could leave a lock of the transport held (between its acquire and the
    ``with``), and the close after it would then wait forever. A second signal
    acts at once, as usual.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}
        self.interrupting = True

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.interrupting:
            raise _Stopped(signum)
        if self.signum is None:
            self.signum = signum
        self.disarm()

    def disarm(self) -> None:
        # A signal while closing would interrupt the close: let a second one act at once.
        for number, old in self.previous.items():
            signal.signal(number, old)
        self.previous = {}


@contextlib.contextmanager
def _signals_raise() -> Iterator[_StopSignals]:
    """SIGINT and SIGTERM end the subscription loop as :class:`_Stopped`, not a traceback."""
    stop = _StopSignals()
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGINT, signal.SIGTERM):
            stop.previous[number] = signal.signal(number, stop.handler)
    try:
        yield stop
    finally:
        stop.disarm()
