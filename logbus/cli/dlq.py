"""``logbus dlq list|show|replay|purge``: the records workers gave up on, and what to do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from logbus.cli._progress import progress
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
    from logbus.settings import Settings
    from logbus.transports.base import Transport
    from logbus.worker.dlq import DeadLetter, DeadQueue

__all__ = ["register"]

USAGE = 2

LIST_EPILOG = """Examples:

\b
  logbus dlq list                        # the dead-letter queues of the config's queues
  logbus dlq list --queue logbus.tasks --json | jq '.reasons'

Every work queue Q a worker consumes has Q.dead. The reasons are counted over
the first --sample records, which are looked at and left where they are.

Exit status: 0 listed, 69 broker unreachable, 78 bad config.
"""

SHOW_EPILOG = """Examples:

\b
  logbus dlq show --queue logbus.tasks
  logbus dlq show --queue logbus.tasks --limit 5 --json | jq -r '.reason'

Each record is taken without an ack and all are put back afterwards, in their
order: nothing is removed.

Exit status: 0 shown, 69 broker unreachable, 78 no such dead-letter queue.
"""

REPLAY_EPILOG = """Examples:

\b
  logbus dlq replay --queue logbus.tasks            # every record there now
  logbus dlq replay --queue logbus.tasks --limit 10 # the ten oldest

Each record is published to the work queue (confirmed, attempts and history
reset) before it is removed from the dead-letter queue: an interruption may
duplicate a record (sinks drop duplicates by id), never lose one. Replay
once the cause is fixed, or the records come back.

Exit status: 0 replayed, 69 broker unreachable, 75 the broker did not take a
record (those left stay where they were), 78 no such queue.
"""

PURGE_EPILOG = """Examples:

\b
  logbus dlq purge --queue logbus.tasks --yes

Without --yes nothing is dropped. The records are gone for good: look first
(logbus dlq show), or replay them.

Exit status: 0 purged, 2 no --yes, 69 broker unreachable, 78 no such dead-letter queue.
"""

QueueOption = Annotated[
    str | None,
    typer.Option(
        "--queue",
        "-q",
        metavar="NAME",
        help="The work queue whose dead letters (NAME.dead) to use. Default: the one "
        "queue the config declares (logbus.tasks in the default topology).",
        show_default=False,
    ),
]


def dlq_list(
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            "-q",
            metavar="NAME",
            help="A work queue (repeat for more). Default: every shared queue of the config.",
            show_default=False,
        ),
    ] = None,
    sample: Annotated[
        int,
        typer.Option(min=0, help="Records looked at to count the reasons (0: none)."),
    ] = 1000,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the dead-letter queues with their records and reasons."""
    from logbus.worker import dlq

    settings = make_settings(url, config)
    names = queue or _shared_queues(settings)
    with _connected(settings) as transport:
        found = [dlq.inspect(transport, name, sample=sample) for name in names]
    if wants_json(as_json):
        for one in found:
            typer.echo(json.dumps(one.to_dict()))
        return
    _render_list(found)


def show(
    queue: QueueOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Records to show at most.")] = 100,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show dead-lettered records with their reason and attempt history, leaving them there."""
    from logbus.worker import dlq

    settings = make_settings(url, config)
    name = _one_queue(settings, queue)
    with _connected(settings) as transport:
        # The depth first: while records are held for peeking they do not count as ready.
        depth = dlq.inspect(transport, name, sample=0).messages
        letters = dlq.peek(transport, name, limit=limit)
    if wants_json(as_json):
        for letter in letters:
            typer.echo(json.dumps(letter.to_dict()))
        return
    _render_show(name, letters, depth)


def replay(
    queue: QueueOption = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Records to move at most, oldest first. Default: all there now.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move dead-lettered records back to their work queue, their attempts reset."""
    from logbus.worker import dlq
    from logbus.worker.retry import dead_queue

    settings = make_settings(url, config)
    name = _one_queue(settings, queue)
    with _connected(settings) as transport, progress(f"replaying {dead_queue(name)}") as update:
        done = dlq.replay(transport, name, limit=limit, progress=update)
    if wants_json(as_json):
        typer.echo(json.dumps(done.to_dict()))
        return
    typer.echo(
        f"replayed {_records(done.replayed)} from {dead_queue(name)} to {name}; "
        f"{_records(done.left)} left there"
    )


def purge(
    queue: QueueOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Really drop them (nothing happens without).")
    ] = False,
    url: UrlOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Drop every record of a dead-letter queue, for good."""
    from logbus.worker import dlq
    from logbus.worker.retry import dead_queue

    settings = make_settings(url, config)
    name = _one_queue(settings, queue)
    if not yes:
        raise fail(
            f"purge drops every record on {dead_queue(name)} for good; add --yes to do it "
            f"(or look first: logbus dlq show --queue {name})",
            USAGE,
        )
    with _connected(settings) as transport:
        dropped = dlq.purge(transport, name)
    if wants_json(as_json):
        typer.echo(json.dumps({"queue": name, "purged": dropped}))
        return
    typer.echo(f"purged {_records(dropped)} from {dead_queue(name)}")


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` command group to ``app``."""
    group = typer.Typer(
        name="dlq",
        help="The records workers gave up on (<queue>.dead): list, show, replay, purge.",
        no_args_is_help=True,
        rich_markup_mode=None,
    )
    group.command("list", epilog=LIST_EPILOG)(dlq_list)
    group.command("show", epilog=SHOW_EPILOG)(show)
    group.command("replay", epilog=REPLAY_EPILOG)(replay)
    group.command("purge", epilog=PURGE_EPILOG)(purge)
    app.add_typer(group, name="dlq")


# -- helpers ----------------------------------------------------------------------------


@contextmanager
def _connected(settings: Settings) -> Iterator[Transport]:
    from logbus.transports import connect

    with quiet_connect():
        transport = connect(settings.url, settings=settings)
    try:
        yield transport
    finally:
        transport.close()


def _shared_queues(settings: Settings) -> list[str]:
    # A stream (the history) has no dead letters: its records are never settled away.
    return [
        q.name
        for q in settings.topology().queues
        if not q.exclusive and q.all_arguments().get("x-queue-type") != "stream"
    ]


def _one_queue(settings: Settings, queue: str | None) -> str:
    if queue is not None:
        if not queue or len(queue.encode()) > 255:
            raise fail("--queue must be a name of 1 to 255 bytes", USAGE)
        return queue
    shared = _shared_queues(settings)
    if len(shared) == 1:
        return shared[0]
    listed = f" ({', '.join(shared)})" if shared else ""
    raise fail(
        f"the config declares {len(shared)} shared queues{listed}; name one with --queue", USAGE
    )


_ESCAPES = {c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0))}


def _records(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"


def _render_list(found: list[DeadQueue]) -> None:
    from logbus.cli._tables import add_row, print_table, table

    rows = table("dead-letter queue", "records", "reasons", numbers={"records"})
    for one in found:
        if not one.exists:
            add_row(rows, one.dead_letter_queue, "-", "(none: no worker ran on it)")
            continue
        reasons = ", ".join(f"{n} {kind}" for kind, n in one.reasons.items()) or "-"
        if one.sampled < one.messages and one.reasons:
            reasons += f" (of the first {one.sampled})"
        add_row(rows, one.dead_letter_queue, str(one.messages), reasons)
    print_table(rows)


def _render_show(queue: str, letters: list[DeadLetter], depth: int) -> None:
    from logbus.worker.retry import dead_queue

    shown = f", the first {len(letters)} shown" if len(letters) < depth else ""
    typer.echo(f"{dead_queue(queue)}: {_records(depth)}{shown} (left in place)")
    for letter in letters:
        typer.echo("")
        record = letter.record
        # The message as decoded: text as sent, a byte that is not UTF-8 written \xe9,
        # control characters escaped so that a record stays on its line.
        message = record.message.translate(_ESCAPES)
        what = f"{record.routing_key} {record.host}/{record.app}: {message}"
        typer.echo(f"#{letter.position} {letter.message_id or '(no id)'}  {what}")
        typer.echo(f"   reason: {letter.reason or '(none given)'}")
        origin = f"{letter.exchange or '(default exchange)'} / {letter.routing_key}"
        typer.echo(f"   attempts: {letter.attempts}; first published to {origin}")
        for entry in letter.history:
            typer.echo(
                f"   attempt {entry.get('attempt', '?')} at {entry.get('at', '?')}: "
                f"{entry.get('error', '')}"
            )
