"""``logbus emit --spool DIR``: records the broker could not take are kept on disk, and the
next ``emit --spool DIR`` sends them first.

A script on a host whose broker is away (down, restarting, unreachable, blocking
publishers) should not lose its records, nor fail its own job for it. With a spool:

- the spool's records go out first, in the order they were written, each batch
  deleted only after its confirms;
- then the new records, streamed with confirms counted in order
  (:meth:`~logbus.emitter.Emitter.emit_stream`), so that exactly those not
  confirmed are written to the spool when the broker goes away (at least once:
  a record confirmed but not yet counted may be sent twice; it keeps its ``id``);
- if the broker cannot be reached at all, every record goes to the spool.

The exit status is then 0, and stderr says how many records were spooled and
where. Only the broker being away is spooled; a refused user, a bad line, a bad
configuration still fail as without a spool. Imported only when ``--spool`` is
given: a plain ``logbus emit`` stays as light as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import typer

from logbus.emitter import Emitter
from logbus.errors import TransportError
from logbus.record import LogRecord
from logbus.spool import Spool, replay

__all__ = ["SpoolingSend", "open_spool"]

_REPLAY_BATCH = 1000


def open_spool(directory: Path) -> Spool:
    """The spool at ``directory``, waiting for another emit that holds it (they take turns);
    every append forced to disk (a script's records are few, and must survive)."""
    return Spool(directory, fsync="always", wait=True)


def broker_away(exc: BaseException) -> bool:
    """Whether ``exc`` means the broker is away for now (spool), not a lasting refusal."""
    return isinstance(exc, TransportError) and exc.recoverable


class SpoolingSend:
    """One emit's sending with a spool: replay, then the new records; what the broker did
    not confirm goes to the spool. :attr:`spooled` counts what this emit wrote there."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self.spooled = 0
        self.replayed = 0
        self.why = ""

    def keep(self, records: Iterable[LogRecord]) -> None:
        """Write ``records`` to the spool, in order, in chunks."""
        source = iter(records)
        while chunk := list(islice(source, _REPLAY_BATCH)):
            self.spooled += self.spool.append(r.to_bytes() for r in chunk)

    def run(self, open_emitter: Callable[[], Emitter], records: Iterable[LogRecord]) -> str:
        """Connect, replay, send; what was not confirmed is spooled. Returns why the
        broker was away ("" when everything went)."""
        source = iter(records)
        try:
            emitter = open_emitter()
            self.send(emitter, source)
        except TransportError as exc:
            if not broker_away(exc):
                raise
            self.keep(source)
            return str(exc)
        return self.why

    def send(self, emitter: Emitter, records: Iterator[LogRecord]) -> None:
        """Replay the spool, then send ``records``; what is not confirmed is spooled.
        Raises what is not the broker being away."""
        try:
            self.replayed += replay(self.spool, emitter.emit_many, _REPLAY_BATCH)
        except TransportError as exc:
            if not broker_away(exc):
                raise
            self.why = str(exc)
            self.keep(records)  # behind what the spool holds: order kept
            return
        unconfirmed: list[LogRecord] = []

        def take(room: int) -> tuple[list[LogRecord], bool]:
            want = min(room, _REPLAY_BATCH)
            chunk = list(islice(records, want))
            unconfirmed.extend(chunk)
            return chunk, len(chunk) == want

        def progress(count: int) -> None:
            del unconfirmed[:count]

        try:
            emitter.emit_stream(take, progress)
        except TransportError as exc:
            if not broker_away(exc):
                raise
            self.why = str(exc)
            self.keep([*unconfirmed, *records])

    def report(self, where: Path, why: str, echo: Callable[[str], None] | None = None) -> None:
        """The stderr line of an emit that spooled: how many, where, and why."""
        if not self.spooled:
            return
        count = f"{self.spooled} record{'' if self.spooled == 1 else 's'}"
        line = (
            f"logbus: {count} spooled in {where} ({why}); the next "
            f"'logbus emit --spool {where}' sends them first ({len(self.spool)} waiting)"
        )
        (echo or (lambda text: typer.echo(text, err=True)))(line)
